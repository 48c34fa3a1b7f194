// vault_server: the demo daemon. Serves the Vault interface on a private endpoint
// (or --path), prints the socket path as its first line of stdout, writes audit
// records to syslog and optionally to a JSON-lines file. SIGHUP reloads the policy
// file; SIGINT/SIGTERM stop and remove the socket.
//
// Secrets live in sodium_malloc'ed memory (guarded, locked) and are wiped on delete.
#include "vault.capnp.sealrpc.h"

#include "sealrpc/endpoint.hpp"
#include "sealrpc/server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <sodium.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <string>

namespace {

// One secret in locked, guarded memory; sodium_free wipes it.
class Secret {
 public:
  explicit Secret(kj::ArrayPtr<const kj::byte> bytes) : size_(bytes.size()) {
    ptr_ = static_cast<kj::byte*>(sodium_malloc(size_ == 0 ? 1 : size_));
    if (!ptr_) throw std::bad_alloc();
    if (size_) std::memcpy(ptr_, bytes.begin(), size_);
  }
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;
  ~Secret() { sodium_free(ptr_); }
  kj::ArrayPtr<const kj::byte> bytes() const { return kj::arrayPtr(ptr_, size_); }

 private:
  kj::byte* ptr_;
  std::size_t size_;
};

class VaultImpl final : public vault::VaultService {
 public:
  using Awaitable = boost::asio::awaitable<sealrpc::Status>;
  using Ctx = sealrpc::CallContext;

  Awaitable put(Ctx&, vault::Vault::PutParams::Reader p, vault::Vault::PutResults::Builder) override {
    if (p.getName().size() == 0 || p.getName().size() > 256) co_return sealrpc::Status{sealrpc::StatusCode::invalid_argument, "name must be 1..256 bytes"};
    if (p.getSecret().size() > 64 * 1024) co_return sealrpc::Status{sealrpc::StatusCode::invalid_argument, "secret larger than 64 KiB"};
    if (store_.size() >= 10000 && !store_.contains(p.getName().cStr())) co_return sealrpc::Status{sealrpc::StatusCode::resource_exhausted, "vault is full"};
    store_.insert_or_assign(p.getName().cStr(), std::make_unique<Secret>(p.getSecret()));
    co_return sealrpc::Status::ok();
  }
  Awaitable get(Ctx&, vault::Vault::GetParams::Reader p, vault::Vault::GetResults::Builder r) override {
    auto it = store_.find(p.getName().cStr());
    if (it == store_.end()) co_return sealrpc::Status{sealrpc::StatusCode::not_found, "no such secret"};
    r.setSecret(it->second->bytes());
    co_return sealrpc::Status::ok();
  }
  Awaitable delete_(Ctx&, vault::Vault::DeleteParams::Reader p, vault::Vault::DeleteResults::Builder r) override {
    r.setExisted(store_.erase(p.getName().cStr()) > 0);
    co_return sealrpc::Status::ok();
  }
  Awaitable list(Ctx&, vault::Vault::ListParams::Reader, vault::Vault::ListResults::Builder r) override {
    auto names = r.initNames(static_cast<unsigned>(store_.size()));
    unsigned i = 0;
    for (const auto& [name, secret] : store_) names.set(i++, name);
    co_return sealrpc::Status::ok();
  }
  Awaitable wipe_all(Ctx&, vault::Vault::WipeAllParams::Reader, vault::Vault::WipeAllResults::Builder r) override {
    r.setCount(static_cast<std::uint32_t>(store_.size()));
    store_.clear();
    co_return sealrpc::Status::ok();
  }
  Awaitable whoami(Ctx& ctx, vault::Vault::WhoamiParams::Reader, vault::Vault::WhoamiResults::Builder r) override {
    r.setUid(ctx.uid());
    r.setGid(ctx.gid());
    auto g = r.initGroups(static_cast<unsigned>(ctx.groups().size()));
    for (unsigned i = 0; i < ctx.groups().size(); ++i) g.set(i, ctx.groups()[i]);
    r.setPid(ctx.pid());
    co_return sealrpc::Status::ok();
  }

 private:
  // Handlers of one connection run on its strand, but connections run concurrently
  // only with a multi-threaded io_context; this daemon runs one thread.
  std::map<std::string, std::unique_ptr<Secret>> store_;
};

int usage() {
  std::cerr << "usage: vault_server [--path P] [--audit-file F] [--policy F] [--grant-uid N]... [--acl-uid N]...\n"
               "  --grant-uid N  admit uid N: socket ACL entry + connection allow-list\n"
               "  --acl-uid N    socket ACL entry only (file permissions let N in; the allow-list decides)\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (sodium_init() < 0) return 1;
  std::string path, audit_file, policy;
  sealrpc::EndpointOptions ep;
  sealrpc::ServerOptions opts;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--path") path = next();
    else if (a == "--audit-file") audit_file = next();
    else if (a == "--policy") opts.policy_file = next();
    else if (a == "--grant-uid" || a == "--acl-uid") {
      const std::string v = next();
      if (v.empty()) return usage();
      const auto uid = static_cast<uid_t>(std::stoul(v));
      ep.acl_users.push_back(uid);
      if (a == "--grant-uid") opts.allow.uids.push_back(uid);
    } else return usage();
  }
  try {
    std::vector<std::shared_ptr<sealrpc::AuditSink>> sinks{std::make_shared<sealrpc::SyslogSink>("vault_server")};
    if (!audit_file.empty()) sinks.push_back(std::make_shared<sealrpc::JsonLinesSink>(audit_file));
    opts.audit = std::make_shared<sealrpc::AuditLog>(sinks);

    boost::asio::io_context io;
    sealrpc::Server server(io.get_executor(), path.empty() ? sealrpc::listen_private("vault", ep) : sealrpc::listen_at(path, ep),
                           opts);
    server.add_service(std::make_shared<VaultImpl>());
    server.start();
    std::cout << server.path() << std::endl;  // first line: where clients connect

    boost::asio::signal_set stop(io, SIGINT, SIGTERM);
    stop.async_wait([&](auto, int) {
      server.stop();
      io.stop();
    });
    boost::asio::signal_set hup(io, SIGHUP);
    std::function<void()> on_hup = [&] {
      hup.async_wait([&](boost::system::error_code ec, int) {
        if (ec) return;
        if (auto err = server.reload_policy()) std::cerr << "vault_server: policy reload failed, old policy kept: " << *err << "\n";
        else std::cerr << "vault_server: policy reloaded\n";
        on_hup();
      });
    };
    on_hup();
    io.run();
  } catch (const std::exception& e) {
    std::cerr << "vault_server: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
