# A parent interface from a schema with no SealRPC rules (e.g. generated elsewhere).
@0xb3455f1abf287a89;

interface Parent {
  inherited @0 () -> ();
}
