# Second schema file for the codegen tests: imported by all_types.capnp, which extends
# its interfaces and uses its types. No file-level rule here: the rules are per interface
# and per method.
@0x84400b6287b4d10e;

using Cxx = import "/capnp/c++.capnp";
using Seal = import "/sealrpc/sealrpc.capnp";
$Cxx.namespace("sealrpc_test::imported");

enum Level {
  low @0;
  high @1;
}

struct Point {
  x @0 :Int32;
  y @1 :Int32;
}

interface Base $Seal.access((sameUser = true)) {
  ping @0 () -> ();
  get @1 (key :Text) -> (value :Data);
}

interface Audited {
  get @0 (id :UInt64) -> (point :Point) $Seal.access((root = true));
  history @1 (level :Level) -> (points :List(Point)) $Seal.access((gids = [4], groups = ["adm"]));
}
