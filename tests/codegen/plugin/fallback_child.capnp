# Must pass: Parent.inherited has no rule of its own, so the serving interface's applies.
@0xc01aa201935411ce;

using Seal = import "/sealrpc/sealrpc.capnp";
using P = import "fallback_parent.capnp";

interface Child extends(P.Parent) $Seal.access((gids = [42])) {
  own @0 () -> ();
}
