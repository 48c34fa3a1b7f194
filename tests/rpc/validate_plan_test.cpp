// The compiled params-validation plan must decide exactly like validate_params() (the
// dynamic walk it replaces on the hot path): same verdict on valid messages and on
// thousands of corrupted ones (a differential test with a fixed seed).
#include "rpc/validate_plan.hpp"
#include "sealrpc/service.hpp"

#include "support/testsvc.capnp.h"

#include <capnp/message.h>
#include <gtest/gtest.h>
#include <kj/exception.h>

#include <random>

using sealrpc::detail::ValidationPlan;

namespace {

void fill_probe(testsvc::PlanProbe::Builder p, int depth) {
  p.setText("hello");
  const kj::byte bytes[] = {1, 2, 3, 4, 5};
  p.setData(kj::arrayPtr(bytes, sizeof bytes));
  p.setValue(42);
  auto nums = p.initNumbers(3);
  for (unsigned i = 0; i < 3; ++i) nums.set(i, i * 7);
  auto flags = p.initFlags(9);
  flags.set(3, true);
  auto names = p.initNames(2);
  names.set(0, "a");
  names.set(1, "bc");
  auto blobs = p.initBlobs(1);
  blobs.set(0, kj::arrayPtr(bytes, 2));
  p.initNested().initChild().setValue(9);
  auto kinds = p.initKinds(2);
  kinds.set(1, testsvc::BufKind::OWNER_REVOCABLE);
  p.initAny().setAs<capnp::Text>("any");
  if (depth > 0) {
    fill_probe(p.initChild(), depth - 1);
    auto items = p.initItems(2);
    fill_probe(items[0], depth - 1);
  }
}

// Outcome of one validator: true = accepted.
template <typename F>
bool accepts(F&& f) {
  try {
    f();
    return true;
  } catch (const kj::Exception&) {
    return false;
  }
}

}  // namespace

TEST(ValidationPlan, CompilesPlainSchemasAndLeavesUnionsToTheDynamicWalk) {
  EXPECT_NE(ValidationPlan::compile(capnp::Schema::from<testsvc::PlanProbe>()), nullptr);
  EXPECT_NE(ValidationPlan::compile(capnp::Schema::from<testsvc::EchoParams>()), nullptr);
  EXPECT_EQ(ValidationPlan::compile(capnp::Schema::from<testsvc::WithUnion>()), nullptr);
}

TEST(ValidationPlan, DecidesLikeTheDynamicWalkOnValidAndCorruptedMessages) {
  const auto schema = capnp::Schema::from<testsvc::PlanProbe>();
  const auto plan = ValidationPlan::compile(schema);
  ASSERT_NE(plan, nullptr);
  capnp::MallocMessageBuilder b(4096);  // one segment
  fill_probe(b.initRoot<testsvc::PlanProbe>(), 3);
  auto segments = b.getSegmentsForOutput();
  ASSERT_EQ(segments.size(), 1u);
  const std::vector<capnp::word> original(segments[0].begin(), segments[0].end());

  std::mt19937_64 rng(20261130);
  int rejected = 0, accepted = 0;
  for (int round = 0; round < 4000; ++round) {
    std::vector<capnp::word> words = original;
    auto* bytes = reinterpret_cast<unsigned char*>(words.data());
    const std::size_t n = words.size() * sizeof(capnp::word);
    const int flips = round == 0 ? 0 : 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) {
      const std::size_t at = rng() % n;
      if (rng() % 2) bytes[at] ^= static_cast<unsigned char>(1u << (rng() % 8));
      else bytes[at] = static_cast<unsigned char>(rng());
    }
    capnp::ReaderOptions opts;
    opts.traversalLimitInWords = 1 << 20;
    opts.nestingLimit = 16;
    kj::ArrayPtr<const capnp::word> seg[] = {kj::arrayPtr(words.data(), words.size())};
    // Each validator gets its own reader: the traversal limit is per reader.
    capnp::SegmentArrayMessageReader r1(kj::arrayPtr(seg, 1), opts), r2(kj::arrayPtr(seg, 1), opts);
    const bool dynamic = accepts([&] {
      auto root = r1.getRoot<capnp::AnyPointer>();
      if (!root.isNull() && root.getPointerType() != capnp::PointerType::STRUCT) KJ_FAIL_REQUIRE("not a struct");
      sealrpc::validate_params(root, schema);
    });
    const bool compiled = accepts([&] {
      auto root = r2.getRoot<capnp::AnyPointer>();
      if (!root.isNull() && root.getPointerType() != capnp::PointerType::STRUCT) KJ_FAIL_REQUIRE("not a struct");
      plan->check(root);
    });
    ASSERT_EQ(compiled, dynamic) << "round " << round << ": plan " << (compiled ? "accepts" : "rejects")
                                 << " what the dynamic walk " << (dynamic ? "accepts" : "rejects");
    (dynamic ? accepted : rejected) += 1;
    if (round == 0) {
      ASSERT_TRUE(dynamic) << "the valid message must pass";
    }
  }
  // The corpus must exercise both verdicts, or the comparison proves little.
  EXPECT_GT(rejected, 200);
  EXPECT_GT(accepted, 200);
}
