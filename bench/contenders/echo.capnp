# Cap'n Proto contender interface (sealrpc_bench). Compiled at build time with
# capnp compile -oc++ into the build tree.
@0xe1d22fe9d3c4980a;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("sealrpc_bench::capnp_echo");

interface Echo {
  echo @0 (data :Data) -> (data :Data);
}
