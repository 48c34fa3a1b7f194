// sealrpc_bench entry point. Google Benchmark flags work as usual
// (--benchmark_filter, --benchmark_out, --benchmark_repetitions, ...); extra flags:
//   --sizes=32,1024,65536      payload sizes of BM_Contender/*
//   --conns=1,8,64             connection counts of BM_ContenderConcurrent/*
//   --concurrent_size=32       payload size of BM_ContenderConcurrent/*
//   --list_contenders          print the compiled-in contenders and exit
// Unless --benchmark_min_time is given, it defaults to 0.2 s per benchmark.
#include "contenders.hpp"

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

template <class T>
bool parse_list(std::string_view text, std::vector<T>& out) {
  std::vector<T> v;
  while (!text.empty()) {
    const auto comma = text.find(',');
    const std::string item(text.substr(0, comma));
    char* end = nullptr;
    const long long x = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || end == nullptr || *end != '\0' || x <= 0) return false;
    v.push_back(static_cast<T>(x));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  if (v.empty()) return false;
  out = std::move(v);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  namespace sb = sealrpc::bench;
  ::signal(SIGPIPE, SIG_IGN);
  sb::detail::install_signal_cleanup();

  auto& cfg = sb::detail::mutable_suite_config();
  std::vector<char*> args{argv[0]};
  bool have_min_time = false;
  bool list_contenders = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a(argv[i]);
    bool ok = true;
    if (a.starts_with("--sizes=")) {
      ok = parse_list(a.substr(8), cfg.sizes);
    } else if (a.starts_with("--conns=")) {
      ok = parse_list(a.substr(8), cfg.conns);
    } else if (a.starts_with("--concurrent_size=")) {
      std::vector<std::int64_t> one;
      ok = parse_list(a.substr(18), one) && one.size() == 1;
      if (ok) cfg.concurrent_size = one[0];
    } else if (a == "--list_contenders") {
      list_contenders = true;
    } else {
      if (a.starts_with("--benchmark_min_time")) have_min_time = true;
      args.push_back(argv[i]);
      continue;
    }
    if (!ok) {
      std::fprintf(stderr, "sealrpc_bench: bad value in '%s'\n", argv[i]);
      return 2;
    }
  }
  if (list_contenders) {
    for (const auto& c : sb::contenders()) std::printf("%-8s %s\n", c.name.c_str(), c.description.c_str());
    return 0;
  }
  static char default_min_time[] = "--benchmark_min_time=0.2";
  if (!have_min_time) args.insert(args.begin() + 1, default_min_time);
  int n = static_cast<int>(args.size());
  args.push_back(nullptr);

  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 2;
  sb::detail::register_suite(cfg);
  benchmark::RunSpecifiedBenchmarks();
  sb::stop_shared_servers();
  benchmark::Shutdown();
  return sb::any_failed() ? 1 : 0;
}
