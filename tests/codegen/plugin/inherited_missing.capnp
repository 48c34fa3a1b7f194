# Must fail: neither Parent nor Orphan gives Parent.inherited a rule.
@0x9b02439344a311fc;

using Seal = import "/sealrpc/sealrpc.capnp";
using P = import "fallback_parent.capnp";

interface Orphan extends(P.Parent) {
  own @0 () -> () $Seal.access((sameUser = true));
}
