# Must fail: Forgotten.read has no access rule on the method, its interface or the file.
@0xb81b68aa69d08fbf;

using Seal = import "/sealrpc/sealrpc.capnp";

interface Guarded $Seal.access((sameUser = true)) {
  get @0 () -> ();
}

interface Forgotten {
  write @0 (data :Data) -> () $Seal.access((root = true));
  read @1 () -> (data :Data);
}
