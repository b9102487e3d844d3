// shared_semaphore: one permit pool for every core. FIFO across cores, permits released on
// another core, cancelled waiters that take nothing (also when the grant and the cancel cross on
// two cores), and the completion window on one executor. ThreadSanitizer runs this file.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include "quell/quell.hpp"
#include "quell/testing.hpp"

using quell::on;
using quell::runtime;
using quell::shared_permit;
using quell::shared_semaphore;
using quell::task;

TEST(SharedSemaphore, WaitersOnEveryCoreAreServedInTheOrderTheyQueued) {
  runtime rt{2};
  shared_semaphore sem{1};
  std::vector<int> order;  // appended by whoever holds the only unit
  auto root = [&]() -> task<> {
    shared_permit first = co_await sem.acquire();
    auto waiter = [&](int id) -> task<> {
      shared_permit p = co_await sem.acquire();
      order.push_back(id);
      co_await quell::yield();
    };
    auto queue_on_1 = [&] { return waiter(1); };
    auto queue_on_0 = [&]() -> task<> {
      while (sem.waiting() < 1) co_await quell::yield();  // core 1's waiter queued first
      co_await waiter(2);
    };
    auto release_when_both_wait = [&]() -> task<> {
      while (sem.waiting() < 2) co_await quell::yield();
      first.release();
    };
    co_await quell::join(on(1, queue_on_1), queue_on_0(), release_when_both_wait());
  };
  rt.run(root());
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  EXPECT_EQ(sem.available(), 1u);
}

TEST(SharedSemaphore, APermitMovedToAnotherCoreReleasesThereAndWakesTheWaiterOnItsOwnCore) {
  runtime rt{2};
  shared_semaphore sem{1};
  unsigned woke_on = 99;
  auto root = [&]() -> task<> {
    shared_permit p = co_await sem.acquire();
    auto release_on_1 = [&, q = std::move(p)]() mutable -> task<> {
      co_await quell::yield();
      q.release();
    };
    auto wait_here = [&]() -> task<> {
      shared_permit got = co_await sem.acquire();
      woke_on = quell::this_core();
    };
    auto remote = [&] { return release_on_1(); };
    co_await quell::join(wait_here(), on(1, remote));
  };
  rt.run(root());
  EXPECT_EQ(woke_on, 0u);
  EXPECT_EQ(sem.available(), 1u);
}

TEST(SharedSemaphore, ACancelledQueuedWaiterTakesNothingAndUnblocksTheOnesBehindIt) {
  runtime rt{2};
  shared_semaphore sem{2};
  auto root = [&]() -> task<std::size_t> {
    shared_permit one = co_await sem.acquire();
    // Needs 2 units: at the head, it holds back a request for 1 behind it.
    auto big = [&]() -> task<int> {
      shared_permit p = co_await sem.acquire(2);
      co_return 2;
    };
    auto small = [&]() -> task<int> {
      while (sem.waiting() < 1) co_await quell::yield();
      shared_permit p = co_await sem.acquire(1);
      co_return 1;
    };
    auto give_up = [&]() -> task<> {
      while (sem.waiting() < 2) co_await quell::yield();
    };
    auto big_on_1 = [&] { return big(); };
    auto [raced, got_small] = co_await quell::join(quell::race(on(1, big_on_1), give_up()), small());
    (void)raced;
    EXPECT_EQ(got_small, 1);
    co_return sem.available();
  };
  EXPECT_EQ(rt.run(root()), 1u);  // `one` is still held
  EXPECT_EQ(sem.available(), 2u);
  EXPECT_EQ(sem.waiting(), 0u);
}

TEST(SharedSemaphore, AskingForMoreUnitsThanItHasIsAClearError) {
  shared_semaphore sem{2};
  auto root = [&]() -> task<std::string> {
    try {
      shared_permit never = co_await sem.acquire(3);
    } catch (const std::invalid_argument& e) {
      co_return e.what();
    }
    co_return "";
  };
  EXPECT_EQ(quell::block_on(root()),
            "quell: shared_semaphore::acquire(3) asks for more than the 2 units the semaphore has");
}

// The race the pool exists for: a release on one core grants a waiter whose cancel is under way
// on the other. Each core loops: acquire (cancelled at once half of the time, by a yield that
// wins the race), hold briefly, release. At the end the counts are exact: every unit back, no
// waiter left, never more holders than units, and every successful acquire released once.
TEST(SharedSemaphore, ReleasesAndCancelsCrossingOnTwoCoresLoseAndDuplicateNothing) {
  constexpr int iterations = 50'000;  // per core: 100k in all
  constexpr std::size_t units = 1;  // the two cores contend for every unit
  runtime rt{2};
  shared_semaphore sem{units};
  std::atomic<int> holders{0};
  std::atomic<int> max_holders{0};
  std::atomic<long> acquired{0};
  std::atomic<long> cancelled{0};
  std::atomic<int> started{0};
  std::atomic<int> finished{0};
  auto worker = [&]() -> task<> {
    ++started;
    while (started.load() < 2) co_await quell::yield();  // contend from the first iteration
    for (int i = 0; i < iterations; ++i) {
      std::optional<shared_permit> p;
      if (i % 2 == 0) {
        auto r = co_await quell::race(sem.acquire(), quell::yield());
        if (r.index() == 0) p.emplace(std::move(std::get<0>(r)));
      } else {
        p.emplace(co_await sem.acquire());
      }
      if (!p) {
        ++cancelled;
        continue;
      }
      ++acquired;
      const int now = ++holders;
      int seen = max_holders.load();
      while (now > seen && !max_holders.compare_exchange_weak(seen, now)) {
      }
      if (i % 3 == 0) {
        // Hold until the other core queues behind us (while it still runs), so releases meet
        // waiters, and some of those waiters are being cancelled by their yield right then.
        for (int k = 0; k < 50 && sem.waiting() == 0 && finished.load() == 0; ++k) co_await quell::yield();
      }
      --holders;
      p->release();
    }
    ++finished;
  };
  auto root = [&]() -> task<> {
    auto remote = [&] { return worker(); };
    co_await quell::join(worker(), on(1, remote));
  };
  rt.run(root());
  EXPECT_EQ(sem.available(), units);
  EXPECT_EQ(sem.waiting(), 0u);
  EXPECT_LE(max_holders.load(), static_cast<int>(units));
  EXPECT_EQ(acquired.load() + cancelled.load(), 2L * iterations);
  EXPECT_GT(cancelled.load(), 0);
}

// On one executor, through the cancel sweep: a cancel at every suspension point and in every
// completion window (a grant whose wake-up is queued), graceful and forced. Nothing is held
// afterwards and every unit is back.
TEST(SharedSemaphore, CancelSweepOnOneExecutorLeavesEveryUnitBack) {
  shared_semaphore sem{1};
  quell::testing::ledger held;
  auto scenario = [&]() -> task<> {
    auto user = [&](std::string name) -> task<> {
      shared_permit p = co_await sem.acquire();
      quell::testing::ledger::hold h(held, name);
      co_await quell::yield();
    };
    co_await quell::join(user("a"), user("b"), user("c"));
  };
  const auto report = quell::testing::cancel_sweep(
      [&](quell::virtual_clock&) {
        held.reset();
        return scenario();
      },
      [&](const quell::testing::sweep_point& p) {
        held.expect_balanced();
        if (sem.available() != 1 || sem.waiting() != 0) {
          throw std::logic_error("units not back after " + p.describe());
        }
      });
  EXPECT_GT(report.completions, 0u);
}
