@0xc387290ba24e4cf4;
# The demo service: a small secret store. Each method carries an access rule; a method
# without one would not compile (capnpc-sealrpc refuses it).
using Cxx = import "/capnp/c++.capnp";
using Seal = import "/sealrpc/sealrpc.capnp";
$Cxx.namespace("vault");

# File default: only the user the daemon runs as (the owner).
$Seal.access((sameUser = true));

interface Vault {
  put @0 (name :Text, secret :Data) -> ();
  # Owner only (file default).

  get @1 (name :Text) -> (secret :Data);
  # Owner only in the schema; operators grant readers in the policy file, e.g.
  #   method Vault.get same-user groups=vault-readers

  delete @2 (name :Text) -> (existed :Bool);
  # Owner only.

  list @3 () -> (names :List(Text)) $Seal.access((open = true));
  # Deliberately open to every peer the connection allow-list admits.

  wipeAll @4 () -> (count :UInt32) $Seal.access((root = true));
  # Root only.

  whoami @5 () -> (uid :UInt32, gid :UInt32, groups :List(UInt32), pid :Int32)
      $Seal.access((open = true));
  # Echoes the kernel-verified identity the server sees for this connection.
}
