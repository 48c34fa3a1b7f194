// Audit: records, formats and the flood rate limiter (SECURITY.md L1, L3).
#include "sealrpc/audit.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <thread>

using namespace sealrpc;

TEST(Audit, FloodIsFoldedIntoASuppressedSummary) {
  std::vector<AuditRecord> out;
  std::vector<std::string> methods;
  auto sink = std::make_shared<CallbackSink>([&](const AuditRecord& r) {
    out.push_back(r);
    methods.emplace_back(r.method);
  });
  // A long interval: the flood below must land in one window however slow the build.
  AuditLog log({sink}, AuditRateLimit{.interval = std::chrono::seconds(3600), .burst = 5});
  for (int i = 0; i < 100000; ++i)
    log.record({.event = "call", .allowed = false, .uid = 666, .method = "Vault.get", .reason = "no rule allows"});
  log.record({.event = "call", .allowed = false, .uid = 1000, .method = "Vault.get", .reason = "no rule allows"});
  EXPECT_EQ(out.size(), 6u);  // 5 from the flooder, the first of another uid is kept
  log.flush();
  ASSERT_EQ(out.size(), 7u);
  EXPECT_EQ(out[6].event, "suppressed");
  EXPECT_EQ(out[6].suppressed, 100000u - 5u);
  EXPECT_EQ(methods[6], "Vault.get");
  EXPECT_EQ(out[6].uid, 666u);
}

TEST(Audit, SummaryIsWrittenWhenTheIntervalRollsOver) {
  std::vector<AuditRecord> out;
  auto sink = std::make_shared<CallbackSink>([&](const AuditRecord& r) { out.push_back(r); });
  AuditLog log({sink}, AuditRateLimit{.interval = std::chrono::milliseconds(50), .burst = 1});
  for (int i = 0; i < 3; ++i) log.record({.event = "call", .allowed = false, .uid = 7, .method = "M.m", .reason = "r"});
  ASSERT_EQ(out.size(), 1u);
  std::this_thread::sleep_for(std::chrono::milliseconds(80));
  log.record({.event = "call", .allowed = false, .uid = 7, .method = "M.m", .reason = "r"});
  ASSERT_EQ(out.size(), 3u);  // the summary of the old window, then the new record
  EXPECT_EQ(out[1].event, "suppressed");
  EXPECT_EQ(out[1].suppressed, 2u);
  EXPECT_EQ(out[2].event, "call");
}

TEST(Audit, JsonLinesFileIsPrivateAndHoldsTheFields) {
  char dir[] = "/tmp/sealrpc-audit-XXXXXX";
  ASSERT_TRUE(::mkdtemp(dir));
  const std::string path = std::string(dir) + "/audit.jsonl";
  {
    AuditLog log({std::make_shared<JsonLinesSink>(path)});
    log.record({.event = "call", .allowed = true, .uid = 1, .gid = 2, .pid = 3, .connection_id = 4,
                .method = "Vault.get", .reason = "uid \"allowed\"\n"});
  }
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  EXPECT_NE(line.find("\"event\":\"call\""), std::string::npos) << line;
  EXPECT_NE(line.find("\"decision\":\"allow\""), std::string::npos);
  EXPECT_NE(line.find("\"uid\":1,\"gid\":2,\"pid\":3"), std::string::npos);
  EXPECT_NE(line.find("\"method\":\"Vault.get\""), std::string::npos);
  EXPECT_NE(line.find("uid \\\"allowed\\\"\\u000a"), std::string::npos) << line;  // escaped, one line
  ::unlink(path.c_str());
  ::rmdir(dir);
}

TEST(Audit, JsonLinesSinkRefusesASymlink) {
  char dir[] = "/tmp/sealrpc-audit-XXXXXX";
  ASSERT_TRUE(::mkdtemp(dir));
  const std::string link = std::string(dir) + "/audit.jsonl";
  ASSERT_EQ(::symlink("/etc/passwd", link.c_str()), 0);
  EXPECT_THROW(JsonLinesSink{link}, std::system_error);
  ::unlink(link.c_str());
  ::rmdir(dir);
}
