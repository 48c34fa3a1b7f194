# SealRPC schema annotations and shared types.
#
# Import it from your own schema as:
#
#   using Seal = import "/sealrpc/sealrpc.capnp";
#
# (sealrpc_generate() puts it on capnp's import path.) Every method a SealRPC service
# serves needs an access rule, given on the method, its interface or its file; the
# nearest one wins (method > interface > file). A method with no rule anywhere is a
# code generation error, so forgetting a check cannot compile. See docs/codegen.md.

@0xc9a420a1909f017e;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("sealrpc::idl");

struct AccessRule {
  # Who may call. Maps 1:1 to sealrpc::AccessRuleSpec (include/sealrpc/policy.hpp).
  # Default deny: a rule allows only the principals it names.

  uids @0 :List(UInt32);
  # Numeric user ids allowed to call.

  gids @1 :List(UInt32);
  # Numeric group ids: a caller in any of them (primary or supplementary) may call.

  users @2 :List(Text);
  # User names, resolved to uids when the server loads the rule.

  groups @3 :List(Text);
  # Group names, resolved to gids when the server loads the rule.

  sameUser @4 :Bool;
  # The server's own effective uid.

  root @5 :Bool;
  # uid 0. Root is never allowed implicitly.

  open @6 :Bool;
  # Any connected peer. The only way to open a method to everyone; say it explicitly.

  label @7 :Text;
  # Exact SO_PEERSEC security label, if non-empty.
}

annotation access @0x8bd6e8d373343e78 (file, interface, method) :AccessRule;
# The access rule for every method of a file, of an interface, or for one method.
# capnpc-sealrpc matches this annotation by the id above: never change it.

enum BufferKind {
  # How a shared memory buffer may change after it is sent (memfd feature).
  immutable @0;       # sealed: size and contents never change
  ownerRevocable @1;  # the sender may revoke it when the lease ends
}

struct SharedBuffer {
  # A memfd passed alongside a message (SCM_RIGHTS); the message carries this descriptor.

  size @0 :UInt64;
  # Length in bytes the receiver may map.

  fdIndex @1 :UInt8;
  # Index of the fd among the message's passed descriptors.

  kind @2 :BufferKind;

  leaseMs @3 :UInt32;
  # For ownerRevocable buffers: how long the receiver may keep the mapping.

  hash @4 :Data;
  # Digest of the contents, for immutable buffers.
}
