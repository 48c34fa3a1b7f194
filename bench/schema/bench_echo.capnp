@0xca0235dc2376709e;
# SealRPC's benchmark service (bench/sealrpc_small*.cpp, bench/sealrpc_layers.cpp): the same
# Echo as the contenders' bench/contenders/echo.capnp, served through sealrpc_generate so
# the measured path is the generated invoker, the runtime's dispatch and a real access rule.
using Cxx = import "/capnp/c++.capnp";
using Seal = import "/sealrpc/sealrpc.capnp";
$Cxx.namespace("sealbench");

interface Echo {
  echo @0 (data :Data) -> (data :Data) $Seal.access((sameUser = true));
  # sameUser: the rule a typical per-user daemon has; authorize() does a binary search
  # over the rule's uids (the server's own uid) for every call.

  produce @1 (size :UInt64, fill :UInt8) -> (buf :Seal.SharedBuffer) $Seal.access((sameUser = true));
  # Large transfers (bench/sealrpc_transfer.cpp): the server writes `size` bytes of
  # `fill` straight into a reused owner-revocable buffer it keeps per size, and attaches
  # it with share(): every reply of a size carries the same memfd.
}
