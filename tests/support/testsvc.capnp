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
  encrypted @7 :Bool;  # CallContext::encrypted() as the handler saw it
}

struct Nested {
  child @0 :Nested;
  value @1 :UInt64;
}

# Shared-buffer tests (tests/buffers/buffer_service.hpp). BufferRef has the exact field
# layout of SharedBuffer in idl/sealrpc.capnp (this schema is compiled without the
# SealRPC import path), so readers of either type see the same bits.
enum BufKind {
  immutable @0;
  ownerRevocable @1;
}

struct BufferRef {
  size @0 :UInt64;
  fdIndex @1 :UInt8;
  kind @2 :BufKind;
  leaseMs @3 :UInt32;
  hash @4 :Data;
}

struct BlobParams {
  blob @0 :BufferRef;
  size @1 :UInt64;      # make: size of the buffer to create
  seed @2 :UInt8;       # make: pattern seed
  kind @3 :BufKind;     # make: kind to create
  leaseMs @4 :UInt32;   # make: lease (0 = server default)
  readTwiceMs @5 :UInt32;  # sum: read again after this many ms and compare
}

struct BlobResults {
  blob @0 :BufferRef;
  digest @1 :UInt64;
  copied @2 :Bool;
  stable @3 :Bool;
  size @4 :UInt64;
}

# Params-validation plan tests (tests/rpc/validate_plan_test.cpp): every kind of pointer
# field a compiled plan checks, a recursive type, and a union (left to the dynamic walk).
struct PlanProbe {
  text @0 :Text;
  data @1 :Data;
  child @2 :PlanProbe;
  items @3 :List(PlanProbe);
  numbers @4 :List(UInt32);
  flags @5 :List(Bool);
  names @6 :List(Text);
  blobs @7 :List(Data);
  any @8 :AnyPointer;
  value @9 :UInt64;
  nested @10 :Nested;
  kinds @11 :List(BufKind);
}

struct WithUnion {
  union {
    name @0 :Text;
    number @1 :UInt32;
  }
}
