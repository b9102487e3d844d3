// shared_event: a set-once flag for waiters on every core. Set from another thread, waits after
// the set, cancelled waiters that leave the queue, a set crossing a cancel on two cores, and the
// completion window on one executor. ThreadSanitizer runs this file.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <optional>
#include <thread>
#include <vector>

#include "quell/quell.hpp"
#include "quell/testing.hpp"

using quell::on;
using quell::runtime;
using quell::shared_event;
using quell::task;

TEST(SharedEvent, WaitersOnEveryCoreWakeWhenAnotherThreadSetsIt) {
  runtime rt{2};
  shared_event go;
  std::atomic<int> woken_on[2] = {0, 0};
  std::atomic<int> waiting{0};
  auto waiter = [&]() -> task<int> {
    ++waiting;
    co_await go.wait();
    ++woken_on[quell::this_core()];
    co_return static_cast<int>(quell::this_core());
  };
  std::thread setter([&] {
    while (waiting.load() < 4) std::this_thread::yield();
    go.set();
    go.set();  // idempotent
  });
  auto root = [&]() -> task<int> {
    auto remote = [&] { return waiter(); };
    auto [a, b, c, d] = co_await quell::join(waiter(), waiter(), on(1, remote), on(1, remote));
    co_return a + b + c + d;
  };
  EXPECT_EQ(rt.run(root()), 2);
  setter.join();
  EXPECT_EQ(woken_on[0].load(), 2);
  EXPECT_EQ(woken_on[1].load(), 2);
  EXPECT_TRUE(go.is_set());
}

TEST(SharedEvent, AWaitAfterTheSetReturnsAtOnce) {
  shared_event done;
  done.set();
  int steps = 0;
  auto body = [&]() -> task<> {
    co_await done.wait();
    ++steps;
    co_await done.wait();
    ++steps;
  };
  quell::executor ex{body()};
  ex.run();
  EXPECT_EQ(steps, 2);
}

TEST(SharedEvent, ACancelledWaiterLeavesTheQueueAndTheOthersStillWake) {
  runtime rt{2};
  shared_event go;
  std::atomic<int> woken{0};
  auto root = [&]() -> task<> {
    auto waiter = [&]() -> task<> {
      co_await go.wait();
      ++woken;
    };
    auto remote = [&] { return waiter(); };
    // The race's timer wins: the wait on core 1 is cancelled (queued or not yet: either is fine).
    co_await quell::race(on(1, remote), quell::sleep_for(std::chrono::milliseconds(20)));
    EXPECT_EQ(woken.load(), 0);
    EXPECT_FALSE(go.is_set());
    // Had the cancelled waiter stayed queued, this set() would wake a frame that is gone.
    auto set_soon = [&]() -> task<> {
      co_await quell::sleep_for(std::chrono::milliseconds(5));
      go.set();
    };
    co_await quell::join(on(1, remote), on(1, remote), set_soon());
  };
  rt.run(root());
  EXPECT_EQ(woken.load(), 2);
}

// A set on core 0 crossing the cancel of a wait on core 1 (the race's setter wins at once and
// cancels the waiter while the wake-up is on its way): the wait ends either woken or cancelled,
// never hangs, and the set stays. The runtime's run returning is the proof nothing was left.
TEST(SharedEvent, ASetCrossingACancelOnTwoCoresNeverHangsOrLosesTheSet) {
  constexpr int iterations = 20'000;
  runtime rt{2};
  long woke = 0;
  auto root = [&]() -> task<> {
    for (int i = 0; i < iterations; ++i) {
      shared_event ev;
      std::atomic<bool> queued{false};
      std::atomic<bool> woken{false};
      auto waiter = [&]() -> task<> {
        queued.store(true);
        co_await ev.wait();
        woken.store(true);
      };
      auto remote = [&] { return waiter(); };
      auto setter = [&]() -> task<> {
        if (i % 2) {
          while (!queued.load()) co_await quell::yield();
        }
        ev.set();
      };
      co_await quell::race(on(1, remote), setter());
      EXPECT_TRUE(ev.is_set());
      if (woken.load()) ++woke;
    }
  };
  rt.run(root());
  // Both endings happen (how often each depends on the machine): the test is that neither
  // leaves a wake-up pointing at a finished wait (ASan and TSan run it) nor hangs the run.
  RecordProperty("woken", static_cast<int>(woke));
}

// A set() from a thread outside the runtime crossing the cancels of waiters on a core (each
// waiter races its wait against a yield): set() must take each waiter off the queue while it
// holds the lock, or a cancel could unlink it from under set() and end while its wake-up is
// still sent. ThreadSanitizer and AddressSanitizer run this.
TEST(SharedEvent, ASetFromAnotherThreadCrossingCancelsOnACoreLosesNothing) {
  constexpr int rounds = 5000;
  std::vector<std::unique_ptr<shared_event>> events;
  for (int i = 0; i < rounds; ++i) events.push_back(std::make_unique<shared_event>());
  std::atomic<int> armed{-1};
  std::thread setter([&] {
    for (int i = 0; i < rounds; ++i) {
      while (armed.load() < i) std::this_thread::yield();
      events[static_cast<std::size_t>(i)]->set();
    }
  });
  runtime rt{2};
  long woken = 0;
  auto root = [&]() -> task<> {
    for (int i = 0; i < rounds; ++i) {
      shared_event& ev = *events[static_cast<std::size_t>(i)];
      auto wait_then_count = [&]() -> task<> {
        co_await ev.wait();
        ++woken;
      };
      auto waiter = [&]() -> task<> { co_await quell::race(wait_then_count(), quell::yield()); };
      armed.store(i);
      co_await quell::join(waiter(), waiter(), waiter(), waiter());
    }
  };
  rt.run(root());
  setter.join();
  for (const auto& e : events) EXPECT_TRUE(e->is_set());
  RecordProperty("woken", static_cast<int>(woken));
}

// On one executor, through the cancel sweep: every suspension point and completion window (a
// wake-up sent and not yet run), graceful and forced. Every waiter ends, and the set is kept.
TEST(SharedEvent, CancelSweepOnOneExecutorLeavesNoWaiter) {
  std::optional<shared_event> ev;
  auto scenario = [&]() -> task<> {
    auto waiter = [&]() -> task<> { co_await ev->wait(); };
    auto setter = [&]() -> task<> {
      co_await quell::yield();
      ev->set();
    };
    co_await quell::join(waiter(), waiter(), setter());
  };
  const auto report = quell::testing::cancel_sweep(
      [&](quell::virtual_clock&) {
        ev.emplace();
        return scenario();
      },
      [&](const quell::testing::sweep_point& p) {
        // Destroying it with a waiter left would be fatal: every waiter has ended.
        ev.reset();
        (void)p;
      });
  EXPECT_GT(report.completions, 0u);
}
