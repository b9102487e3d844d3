// Assumptions quell's machinery rests on, pinned so a compiler change cannot break them silently.
#include <gtest/gtest.h>

#include <coroutine>
#include <vector>

#include "quell/quell.hpp"

namespace {
struct probe : quell::detail::resume_target {
  int hits = 0;
  probe() : resume_target([](void* p) { static_cast<probe*>(static_cast<resume_target*>(p))->hits++; }) {}
};
}  // namespace

TEST(RuntimeInternals, AResumeTargetIsResumableThroughAStdCoroutineHandle) {
  probe p;
  std::coroutine_handle<> h = p.handle();
  h.resume();
  h.resume();
  EXPECT_EQ(p.hits, 2);
}

TEST(RuntimeInternals, ResumeNestingIsBoundedByTrampoliningThroughTheExecutor) {
  int max_depth = 0;
  struct rec {
    static quell::task<int> go(int n, int& max_depth) {
      const int d = quell::detail::this_thread().depth;
      if (d > max_depth) max_depth = d;
      if (n == 0) co_return 0;
      co_return 1 + co_await go(n - 1, max_depth);
    }
  };
  EXPECT_EQ(quell::block_on(rec::go(10'000, max_depth)), 10'000);
  EXPECT_LE(max_depth, QUELL_MAX_RESUME_DEPTH + 1);
}

TEST(RuntimeInternals, TheDepthCounterIsBalancedAfterAnExecutorFinishes) {
  EXPECT_EQ(quell::block_on(quell::race(quell::ready(1), quell::pending<int>())), 1);
  EXPECT_EQ(quell::detail::this_thread().depth, 0);
  EXPECT_EQ(quell::detail::this_thread().current, nullptr);
}

// Bytes per spawned task (W3 in bench/compare/WORKLOADS.md): a task costs its frame plus this record; at 80 bytes it is
// one 96-byte malloc chunk. Growing it past 88 costs 16 bytes per spawned task.
TEST(RuntimeInternals, ASpawnedTasksRecordStaysWithinOneSmallMallocChunk) {
  EXPECT_LE(sizeof(quell::detail::task_child<void>), 88u);
  EXPECT_LE(sizeof(quell::detail::task_child<int>), 88u);
}

// The run queue is a ring that doubles when full; post() is inline with the doubling out of line.
// Growing while the queue is being drained (head past zero, entries wrapped around the end) must
// keep first-in, first-out order.
TEST(RuntimeInternals, TheRunQueueKeepsFifoOrderWhenItGrowsWhileBeingDrained) {
  quell::virtual_clock clock;
  quell::detail::scheduler s(clock);
  std::vector<int> order;
  struct entry : quell::detail::resume_target {
    quell::detail::scheduler* s = nullptr;
    std::vector<int>* order = nullptr;
    std::vector<entry>* more = nullptr;  // posted when this entry runs
    int id = 0;
    entry() : resume_target(&run) {}
    static void run(void* p) {
      auto* e = static_cast<entry*>(static_cast<quell::detail::resume_target*>(p));
      e->order->push_back(e->id);
      if (e->more)
        for (entry& m : *e->more) e->s->post(m.handle());
    }
  };
  std::vector<entry> later(200);
  for (int i = 0; i < 200; ++i) {
    later[i].s = &s;
    later[i].order = &order;
    later[i].id = i + 1;
  }
  std::vector<entry> first(3);
  for (int i = 0; i < 3; ++i) {
    first[i].s = &s;
    first[i].order = &order;
    first[i].id = 1000 + i;
  }
  first[0].more = &later;
  for (entry& e : first) s.post(e.handle());
  s.drain_ready();
  std::vector<int> expected{1000, 1001, 1002};
  for (int i = 1; i <= 200; ++i) expected.push_back(i);
  EXPECT_EQ(order, expected);
}

namespace {
// Completes inside await_suspend, noting how many timers were armed while it ran.
struct counts_timers_and_completes {
  std::size_t* armed;
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<>) noexcept {
    *armed = quell::detail::this_thread().current->timers().size();
    return false;
  }
  int await_resume() const noexcept { return 7; }
};
}  // namespace

// The deadline's timer is armed only once its operation is waiting: an operation that finishes
// during its start (a buffered read, a free permit) costs the timeout no timer at all.
TEST(RuntimeInternals, ATimeoutAroundAnOperationThatFinishesAtOnceNeverArmsItsTimer) {
  std::size_t armed_during_start = 99;
  std::size_t armed_after = 99;
  std::size_t armed_while_waiting = 0;
  auto body = [&]() -> quell::task<int> {
    const int v = co_await quell::timeout(std::chrono::hours(1), counts_timers_and_completes{&armed_during_start});
    armed_after = quell::detail::this_thread().current->timers().size();
    // And one that waits does arm it: the sleep's timer and the deadline's.
    auto watch = [&]() -> quell::task<> {
      co_await quell::yield();
      armed_while_waiting = quell::detail::this_thread().current->timers().size();
    };
    auto waits = quell::timeout(std::chrono::hours(1), quell::sleep_for(std::chrono::seconds(1)));
    co_await quell::join(std::move(waits), watch());
    co_return v;
  };
  quell::virtual_clock clock;
  quell::executor ex(body(), clock);
  EXPECT_EQ(ex.run(), 7);
  EXPECT_EQ(armed_during_start, 0u);
  EXPECT_EQ(armed_after, 0u);
  EXPECT_EQ(armed_while_waiting, 2u);
}
