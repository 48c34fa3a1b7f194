@0xb2c76e1b4dc86851;
# Message types of the hand-written runtime test service (tests/support/test_service.cpp).
# The service table is written by hand on purpose: it exercises the runtime's
# Service/MethodInfo contract independently of the code generator.
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("testsvc");

struct EchoParams {
  data @0 :Data;
  delayMs @1 :UInt32;
}

struct EchoResults {
  data @0 :Data;
  uid @1 :UInt32;
  gid @2 :UInt32;
  groups @3 :List(UInt32);
  pid @4 :Int32;
  cancelled @5 :Bool;
  peerExited @6 :Bool;
}

struct Nested {
  child @0 :Nested;
  value @1 :UInt64;
}
