# Must fail: getURL and getUrl both become get_url in C++.
@0x9e57797179ae4491;

using Seal = import "/sealrpc/sealrpc.capnp";
$Seal.access((sameUser = true));

interface Clash {
  getURL @0 () -> ();
  getUrl @1 () -> ();
}
