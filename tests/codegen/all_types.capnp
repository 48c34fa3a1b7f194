# Exercises capnpc-sealrpc: several interfaces per file, extends (multiple, transitive,
# diamond, across files), nested and imported types, every capnp type in params and
# results, empty params/results, explicit struct params, names that collide with C++
# keywords or generated names, and access rules at file, interface and method level.
@0xe9cd0d4a9da95dae;

using Cxx = import "/capnp/c++.capnp";
using Seal = import "/sealrpc/sealrpc.capnp";
using Imported = import "imported.capnp";
$Cxx.namespace("sealrpc_test::all");

# File-level rule: applies to every method with no rule of its own or its interface's.
$Seal.access((uids = [1000, 1001], groups = ["adm"]));

enum Color {
  red @0;
  green @1;
  blue @2;
}

struct Everything {
  b @0 :Bool;
  i8 @1 :Int8;
  i16 @2 :Int16;
  i32 @3 :Int32;
  i64 @4 :Int64;
  u8 @5 :UInt8;
  u16 @6 :UInt16;
  u32 @7 :UInt32;
  u64 @8 :UInt64;
  f32 @9 :Float32;
  f64 @10 :Float64;
  text @11 :Text;
  data @12 :Data;
  color @13 :Color;
  ints @14 :List(Int32);
  texts @15 :List(Text);
  points @16 :List(Imported.Point);
  matrix @17 :List(List(Float64));
  nested @18 :Nested;
  any @19 :AnyPointer;
  choice :union {
    none @20 :Void;
    number @21 :Int64;
    name @22 :Text;
  }
  pair :group {
    first @23 :UInt8;
    second @24 :UInt8;
  }

  struct Nested {
    depth @0 :UInt32;
    child @1 :Nested;
  }
}

struct Choice {
  union {
    none @0 :Void;
    number @1 :Int64;
    text @2 :Text;
  }
}

struct Outer {
  struct Deeper {
    struct Deepest {
      v @0 :Int8;
    }
  }

  interface Inner $Seal.access((users = ["daemon"], label = "system_u:system_r:sealrpc_t:s0")) {
    # An interface nested in a struct.
    get @0 (key :Text) -> (value :Text, level :Imported.Level);
  }
}

interface Scalars $Seal.access((sameUser = true, root = true)) {
  # Every primitive, Text, Data and an enum: the client gets a field-by-field overload.
  primitives @0 (b :Bool, i8 :Int8, i16 :Int16, i32 :Int32, i64 :Int64, u8 :UInt8, u16 :UInt16,
                 u32 :UInt32, u64 :UInt64, f32 :Float32, f64 :Float64, text :Text, data :Data,
                 color :Color, nothing :Void)
      -> (b :Bool, i8 :Int8, i16 :Int16, i32 :Int32, i64 :Int64, u8 :UInt8, u16 :UInt16,
          u32 :UInt32, u64 :UInt64, f32 :Float32, f64 :Float64, text :Text, data :Data, color :Color);
  empty @1 () -> ();
  noResults @2 (x :Int32) -> ();
  noParams @3 () -> (x :Int32);
}

interface Composite {
  # No interface rule: the file's rule applies unless a method has its own.
  explicit @0 Everything -> Everything;
  lists @1 (ints :List(Int32), texts :List(Text), points :List(Imported.Point),
            matrix :List(List(Float64)), nested :List(Everything.Nested))
      -> (ints :List(Int32), texts :List(Text), points :List(Imported.Point),
          matrix :List(List(Float64)), nested :List(Everything.Nested))
      $Seal.access((sameUser = true));
  withUnion @2 Choice -> Choice $Seal.access((gids = [10, 20]));
  withGroup @3 (everything :Everything) -> (pair :Everything);
  anyPointer @4 (value :AnyPointer) -> (value :AnyPointer);
  deep @5 Outer.Deeper.Deepest -> Outer.Deeper.Deepest;
  imported @6 Imported.Point -> (point :Imported.Point, level :Imported.Level);
}

interface Keywords {
  # Names that collide with C++ keywords, libc macros and names the generator uses.
  delete @0 (class :Int32, new :Text, token :Text, ctx :UInt8, client :Bool, this :Bool)
      -> (return :Bool) $Seal.access((open = true));
  ctx @1 (params :Int32, results :Int32, req :Int32) -> ();
  token @2 () -> ();
  sealrpcMethods @3 () -> ();
  params @4 () -> ();
  errno @5 (errno :Int32) -> ();
  getHTTPUrl @6 () -> ();
  renamed @7 (fieldX :Int32 $Cxx.name("fieldY")) -> () $Cxx.name("otherName");
  acronymClash @8 (getURL :Int32, getUrl :Int32) -> ();
  client @9 () -> ();
}

interface Multi extends(Imported.Base, Imported.Audited) $Seal.access((uids = [0])) {
  # Two parents both have `get`: they become base_get and audited_get.
  own @0 () -> ();
}

interface Grandchild extends(Multi) {
  extra @0 () -> ();
}

interface Diamond extends(Multi, Imported.Base) {
  # Imported.Base is reached twice and served once.
}

interface Nothing {}
