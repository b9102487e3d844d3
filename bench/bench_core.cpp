// W1 await_chain and W2 race_pending_loser, beside a minimal hand-written C++20 task measured in
// the same run. Prints ns/op and quell's ratio to the reference; targets are information only.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <string>

#include "minimal_task.hpp"
#include "quell/quell.hpp"

namespace {

constexpr int batch = 1000;  // awaits per benchmark iteration, so executor setup is amortised

// ---- W1: await a child that returns an int at once ----
quell::task<int> q_child(int i) { co_return i; }
quell::task<long> q_loop() {
  long sum = 0;
  for (int i = 0; i < batch; ++i) sum += co_await q_child(i);
  co_return sum;
}
minimal::task<int> m_child(int i) { co_return i; }
minimal::task<long> m_loop() {
  long sum = 0;
  for (int i = 0; i < batch; ++i) sum += co_await m_child(i);
  co_return sum;
}

void W1_await_chain_quell(benchmark::State& s) {
  for (auto _ : s) benchmark::DoNotOptimize(quell::block_on(q_loop()));
  s.SetItemsProcessed(s.iterations() * batch);
}
void W1_await_chain_minimal(benchmark::State& s) {
  for (auto _ : s) benchmark::DoNotOptimize(m_loop().sync_wait());
  s.SetItemsProcessed(s.iterations() * batch);
}

// ---- W2: race a ready value against a never-completing branch with a cancellation hook ----
quell::task<> q_hook(int& hooks) {
  ++hooks;
  co_return;
}
quell::task<long> q_race_loop(int& hooks) {
  long sum = 0;
  for (int i = 0; i < batch; ++i) {
    sum += co_await quell::race(quell::ready(i), quell::on_cancel(quell::pending<int>(), q_hook(hooks)));
  }
  co_return sum;
}
void W2_race_pending_loser_quell(benchmark::State& s) {
  int hooks = 0;
  for (auto _ : s) benchmark::DoNotOptimize(quell::block_on(q_race_loop(hooks)));
  if (hooks != s.iterations() * batch) s.SkipWithError("a loser's hook did not run");
  s.SetItemsProcessed(s.iterations() * batch);
}

// ---- Synchronization primitives ----
quell::task<long> q_sem_loop(quell::semaphore& sem) {
  long n = 0;
  for (int i = 0; i < batch; ++i) {
    quell::permit p = co_await sem.acquire();
    n += static_cast<long>(p.units());
  }
  co_return n;
}
void S1_semaphore_uncontended(benchmark::State& s) {
  quell::semaphore sem{1};
  for (auto _ : s) benchmark::DoNotOptimize(quell::block_on(q_sem_loop(sem)));
  s.SetItemsProcessed(s.iterations() * batch);
}

quell::task<> q_ping(quell::channel<int>& out, quell::channel<int>& in) {
  for (int i = 0; i < batch / 2; ++i) {
    co_await out.send(i);
    benchmark::DoNotOptimize(co_await in.receive());
  }
}
quell::task<> q_pong(quell::channel<int>& in, quell::channel<int>& out) {
  for (int i = 0; i < batch / 2; ++i) {
    auto v = co_await in.receive();
    co_await out.send(*v);
  }
}
void S2_channel_ping_pong(benchmark::State& s) {
  quell::channel<int> a{1}, b{1};
  for (auto _ : s) quell::block_on(quell::join(q_ping(a, b), q_pong(a, b)));
  s.SetItemsProcessed(s.iterations() * batch);  // messages
}

BENCHMARK(W1_await_chain_minimal);
BENCHMARK(W1_await_chain_quell);
BENCHMARK(W2_race_pending_loser_quell);
BENCHMARK(S1_semaphore_uncontended);
BENCHMARK(S2_channel_ping_pong);

// Remembers each benchmark's time per inner operation, so main can print ratios.
class recorder : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, double> ns_per_op;
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.run_type != Run::RT_Iteration || r.error_occurred) continue;
      ns_per_op[r.benchmark_name()] = r.GetAdjustedRealTime() / batch;  // default unit: ns
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  recorder rep;
  benchmark::RunSpecifiedBenchmarks(&rep);
  auto get = [&](const char* n) {
    auto it = rep.ns_per_op.find(n);
    return it == rep.ns_per_op.end() ? -1.0 : it->second;
  };
  const double w1q = get("W1_await_chain_quell");
  const double w1m = get("W1_await_chain_minimal");
  const double w2q = get("W2_race_pending_loser_quell");
#if defined(__clang__)
  const char* compiler = "clang";
#else
  const char* compiler = "g++";
#endif
  std::printf("\n%-26s %10s %12s %8s  %s\n",
              "workload ("
              "ns/op)",
              "quell", "minimal task", "ratio", "target");
  if (w1q > 0 && w1m > 0) {
    std::printf("%-26s %10.2f %12.2f %7.2fx  <= 1.0x (%s)  %s\n", "W1 await_chain", w1q, w1m, w1q / w1m, compiler,
                w1q / w1m <= 1.0 ? "PASS" : "MISS");
  }
  if (w2q > 0 && w1m > 0) {
    std::printf("%-26s %10.2f %12s %7.2fx  <= 60 ns  %s\n", "W2 race_pending_loser", w2q, "(1 await)", w2q / w1m,
                w2q <= 60.0 ? "PASS" : "MISS");
  }
#if defined(__clang__)
  std::printf(
      "note: clang removes the minimal task's frame allocation altogether (coroutine heap elision); quell's\n"
      "      tasks hand their handle to the cancellation machinery, which rules that elision out.\n");
#endif
  const double s1 = get("S1_semaphore_uncontended");
  const double s2 = get("S2_channel_ping_pong");
  if (s1 > 0)
    std::printf("%-26s %10.2f %12s %7.2fx  (acquire + release)\n", "semaphore uncontended", s1, "(1 await)", s1 / w1m);
  if (s2 > 0) std::printf("%-26s %10.2f %12s %7.2fx  (per message)\n", "channel ping-pong", s2, "(1 await)", s2 / w1m);
  return 0;
}
