// Timers on the virtual clock (instant, deterministic), and one check on the real clock.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "quell/quell.hpp"
#include "support/log.hpp"

using namespace std::chrono_literals;
using quell::executor;
using quell::on_cancel;
using quell::race;
using quell::sleep_for;
using quell::task;
using quell::virtual_clock;
using lines = std::vector<std::string>;
using quell::test::at;

TEST(Time, OnAVirtualClockAnHourOfSleepingTakesNoTime) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    co_await sleep_for(1h);
    log.print("woke at " + at(clock));
  };
  const auto started = std::chrono::steady_clock::now();
  executor{body(), clock}.run();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 1s);
  EXPECT_EQ(log.lines, (lines{"woke at 3600000ms"}));
}

TEST(Time, TimeAdvancesOnlyWhenEveryTaskIsBlocked) {
  virtual_clock clock;
  quell::test::log log;
  auto busy = [&]() -> task<> {
    for (int i = 0; i < 3; ++i) co_await quell::yield();
    log.print("busy done at " + at(clock));
  };
  auto sleeper = [&]() -> task<> {
    co_await sleep_for(10ms);
    log.print("sleeper woke at " + at(clock));
  };
  executor{quell::join(busy(), sleeper()), clock}.run();
  EXPECT_EQ(log.lines, (lines{"busy done at 0ms", "sleeper woke at 10ms"}));
}

TEST(Time, PollOnceNeverAdvancesAVirtualClock) {
  virtual_clock clock;
  executor ex{sleep_for(5ms), clock};
  EXPECT_FALSE(ex.poll_once());
  EXPECT_FALSE(ex.poll_once());
  clock.advance(4ms);
  EXPECT_FALSE(ex.poll_once());
  clock.advance(1ms);
  EXPECT_TRUE(ex.poll_once());
}

TEST(Time, TimersWithTheSameDeadlineFireInArmingOrder) {
  virtual_clock clock;
  quell::test::log log;
  auto sleeper = [&](std::string name) -> task<> {
    co_await quell::sleep_until(clock.now() + 5ms);
    log.print(name);
  };
  executor{quell::join(sleeper("a"), sleeper("b"), sleeper("c")), clock}.run();
  EXPECT_EQ(log.lines, (lines{"a", "b", "c"}));
}

TEST(Time, ManyRandomTimersFireInDeadlineOrder) {
  virtual_clock clock;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> ms(0, 10'000);
  std::vector<int> fired;
  auto sleeper = [&](int d) -> task<> {
    co_await sleep_for(std::chrono::milliseconds(d));
    fired.push_back(d);
  };
  std::vector<task<>> all;
  for (int i = 0; i < 10'000; ++i) all.push_back(sleeper(ms(rng)));
  executor{quell::join(std::move(all)), clock}.run();
  ASSERT_EQ(fired.size(), 10'000u);
  EXPECT_TRUE(std::is_sorted(fired.begin(), fired.end()));
}

// Each race's loser leaves the heap from wherever it sits when the winner fires, so removals hit
// every position; the survivors must still fire in deadline order, each at its own deadline.
TEST(Time, TimersRemovedFromAnywhereInTheQueueLeaveTheOthersInDeadlineOrder) {
  virtual_clock clock;
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> ms(0, 10'000);
  std::vector<int> fired;
  int late = 0;
  auto racer = [&](int a, int b) -> task<> {
    co_await race(sleep_for(std::chrono::milliseconds(a)), sleep_for(std::chrono::milliseconds(b)));
    const int won = std::min(a, b);
    if (at(clock) != std::to_string(won) + "ms") ++late;
    fired.push_back(won);
  };
  std::vector<task<>> all;
  for (int i = 0; i < 5'000; ++i) all.push_back(racer(ms(rng), ms(rng)));
  executor{quell::join(std::move(all)), clock}.run();
  ASSERT_EQ(fired.size(), 5'000u);
  EXPECT_TRUE(std::is_sorted(fired.begin(), fired.end()));
  EXPECT_EQ(late, 0);
}

TEST(Time, ARaceOfSleepsEndsAtTheEarliestAndRemovesTheOtherTimer) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    co_await race(sleep_for(2s), sleep_for(1s), sleep_for(3s));
    log.print("race over at " + at(clock));
    co_await quell::yield();
  };
  executor ex{body(), clock};
  ex.run();
  EXPECT_EQ(log.lines, (lines{"race over at 1000ms"}));
}

TEST(Time, ACancelledSleepEndsAtOnceAndItsTimerIsGone) {
  virtual_clock clock;
  quell::test::log log;
  executor ex{on_cancel(sleep_for(1h), log.hook("sleep cancelled")), clock};
  EXPECT_FALSE(ex.poll_once());
  ex.cancel();
  EXPECT_TRUE(ex.done());
  EXPECT_EQ(log.lines, (lines{"sleep cancelled"}));
  EXPECT_THROW(ex.run(), quell::cancelled_error);
}

TEST(Time, ASleepWhoseTimerFiredBeforeItsCancelArrivedCompletesCompletionWins) {
  virtual_clock clock;
  quell::test::log log;
  std::function<void()> cancel_all;
  auto canceller = [&]() -> task<> {
    co_await sleep_for(5ms);  // armed first, so it resumes first in the turn both timers fire
    log.print("canceller cancels the executor");
    cancel_all();
  };
  auto sleeper = [&]() -> task<> {
    co_await sleep_for(5ms);  // fired in the same turn; its resumption is already queued
    log.print("sleeper completed anyway");
  };
  executor ex{quell::join(canceller(), sleeper()), clock};
  cancel_all = [&] { ex.cancel(); };
  EXPECT_NO_THROW(ex.run());  // both completed: the join delivers its tuple
  EXPECT_EQ(log.lines, (lines{"canceller cancels the executor", "sleeper completed anyway"}));
}

TEST(Time, ASleepInThePastCompletesAtOnce) {
  virtual_clock clock;
  clock.advance(1s);
  executor ex{quell::sleep_until(clock.now() - 1ms), clock};
  EXPECT_TRUE(ex.poll_once());
}

TEST(Time, ARootWaitingOnlyForATimerIsNotStuck) {
  virtual_clock clock;
  auto body = []() -> task<int> {
    co_await sleep_for(1ms);
    co_return 4;
  };
  EXPECT_EQ((executor{body(), clock}.run()), 4);
}

TEST(Time, OnTheRealClockASleepLastsAtLeastItsDuration) {
  const auto started = std::chrono::steady_clock::now();
  quell::block_on(sleep_for(20ms));
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_GE(took, 20ms);
  EXPECT_LT(took, 10s);  // generous: only catches a sleep that never ends on its own
}
