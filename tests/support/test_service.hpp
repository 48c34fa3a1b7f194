// A hand-written Service for runtime tests. Interface id kTestInterface, methods:
//   0 echo      same-user | gid 4242 | uid 4243   returns data + caller identity
//   1 sleep     same as echo          waits delayMs on an Asio timer (cancellable)
//   2 fail      same as echo          throws std::runtime_error("secret-detail")
//   3 rootOnly  root
//   4 groupOnly gid 4242
//   5 nobody    (empty rule: nobody)
#pragma once

#include "sealrpc/message.hpp"
#include "sealrpc/service.hpp"

#include "support/testsvc.capnp.h"

#include <atomic>
#include <string>
#include <vector>

namespace testsvc {

inline constexpr std::uint64_t kTestInterface = 0xd00dfeedcafe0001ull;

class TestService final : public sealrpc::Service {
 public:
  TestService();
  std::span<const sealrpc::MethodInfo> sealrpc_methods() const override { return methods_; }

  std::atomic<int> calls_started{0};  // sleep calls
  std::atomic<int> echo_calls{0};
  std::atomic<int> cancellations_seen{0};

 private:
  std::vector<sealrpc::MethodInfo> methods_;
};

// An echo/sleep request carrying `data` (sleep waits delay_ms), and the data of a reply.
inline sealrpc::Request<EchoParams> make_req(const std::string& data, std::uint32_t delay_ms = 0) {
  sealrpc::Request<EchoParams> req;
  req.params().setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
  req.params().setDelayMs(delay_ms);
  return req;
}
inline std::string data_of(sealrpc::Response<EchoResults>& r) {
  auto d = r.get().getData();
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

}  // namespace testsvc
