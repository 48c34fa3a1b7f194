# Must fail: generic interfaces and generic methods are refused.
@0xa2e1ca3b866c63f8;

using Seal = import "/sealrpc/sealrpc.capnp";
$Seal.access((open = true));

interface Store(T) {
  put @0 (value :T) -> ();
}

interface Plain {
  convert @0 [T] (value :T) -> (value :T);
}
