// vault_client: command-line client for the demo vault.
//   vault_client SOCKET put NAME VALUE | get NAME | delete NAME | list | wipe-all | whoami
// Prints the result, or "error: <STATUS>: <message>" and exits 1.
#include "vault.capnp.sealrpc.h"

#include "sealrpc/client.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/as_tuple.hpp>

#include <iostream>
#include <string>
#include <vector>

namespace asio = boost::asio;

namespace {

int fail(const boost::system::error_code& ec, const std::string& msg) {
  std::cout << "error: " << ec.message();
  if (!msg.empty() && msg != ec.message()) std::cout << ": " << msg;
  std::cout << "\n";
  return 1;
}

asio::awaitable<int> run(std::string path, std::vector<std::string> args) {
  auto ex = co_await asio::this_coro::executor;
  auto [cec, conn] = co_await sealrpc::Client::async_connect(ex, path, {}, asio::as_tuple(asio::use_awaitable));
  if (cec) co_return fail(cec, "");
  vault::VaultClient vault(conn);
  const std::string& cmd = args.at(0);
  auto bytes = [](const std::string& s) { return kj::arrayPtr(reinterpret_cast<const kj::byte*>(s.data()), s.size()); };
  int rc = 0;
  if (cmd == "put" && args.size() == 3) {
    auto [ec, r] = co_await vault.async_put(args[1].c_str(), bytes(args[2]), asio::as_tuple(asio::use_awaitable));
    rc = ec ? fail(ec, r.status().message) : (std::cout << "stored " << args[1] << "\n", 0);
  } else if (cmd == "get" && args.size() == 2) {
    auto [ec, r] = co_await vault.async_get(args[1].c_str(), asio::as_tuple(asio::use_awaitable));
    if (ec) rc = fail(ec, r.status().message);
    else {
      auto s = r.get().getSecret();
      std::cout << std::string(reinterpret_cast<const char*>(s.begin()), s.size()) << "\n";
    }
  } else if (cmd == "delete" && args.size() == 2) {
    auto [ec, r] = co_await vault.async_delete(args[1].c_str(), asio::as_tuple(asio::use_awaitable));
    rc = ec ? fail(ec, r.status().message) : (std::cout << (r.get().getExisted() ? "deleted\n" : "not found\n"), 0);
  } else if (cmd == "list" && args.size() == 1) {
    auto [ec, r] = co_await vault.async_list(asio::as_tuple(asio::use_awaitable));
    if (ec) rc = fail(ec, r.status().message);
    else for (auto n : r.get().getNames()) std::cout << n.cStr() << "\n";
  } else if (cmd == "wipe-all" && args.size() == 1) {
    auto [ec, r] = co_await vault.async_wipe_all(asio::as_tuple(asio::use_awaitable));
    rc = ec ? fail(ec, r.status().message) : (std::cout << "wiped " << r.get().getCount() << "\n", 0);
  } else if (cmd == "whoami" && args.size() == 1) {
    auto [ec, r] = co_await vault.async_whoami(asio::as_tuple(asio::use_awaitable));
    if (ec) rc = fail(ec, r.status().message);
    else {
      auto w = r.get();
      std::cout << "uid=" << w.getUid() << " gid=" << w.getGid() << " groups=";
      for (auto g : w.getGroups()) std::cout << g << ",";
      std::cout << " pid=" << w.getPid() << "\n";
    }
  } else {
    std::cerr << "usage: vault_client SOCKET put NAME VALUE | get NAME | delete NAME | list | wipe-all | whoami\n";
    rc = 2;
  }
  conn.close();
  co_return rc;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: vault_client SOCKET put NAME VALUE | get NAME | delete NAME | list | wipe-all | whoami\n";
    return 2;
  }
  asio::io_context io;
  int rc = 1;
  asio::co_spawn(io, run(argv[1], std::vector<std::string>(argv + 2, argv + argc)), [&](std::exception_ptr e, int r) {
    rc = e ? 1 : r;
  });
  io.run();
  return rc;
}
