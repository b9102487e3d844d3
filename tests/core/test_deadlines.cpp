// Deadlines (timeout, move_on_after, with_deadline, move_on_at) and this_task::*, on the virtual
// clock. Trio's rules on the smallest programs: level-triggered cancellation, the outer deadline
// wins, a cancel never leaks out of its scope, effective-deadline arithmetic, first reason wins.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "quell/quell.hpp"
#include "support/log.hpp"

using namespace std::chrono_literals;
using quell::executor;
using quell::move_on_after;
using quell::on_cancel;
using quell::sleep_for;
using quell::task;
using quell::timeout;
using quell::virtual_clock;
using lines = std::vector<std::string>;
using quell::test::at;

namespace {
long long ms_from(const virtual_clock& c, quell::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t - c.now()).count();
}
}  // namespace

TEST(Deadlines, TimeoutThrowsTimedOutOnlyAfterTheOperationFinishedCancelling) {
  virtual_clock clock;
  quell::test::log log;
  auto slow_hook = [&]() -> task<> {
    co_await sleep_for(5ms);
    log.print("hook done at " + at(clock));
  };
  auto body = [&]() -> task<> {
    try {
      co_await timeout(10ms, on_cancel(sleep_for(1h), slow_hook));
    } catch (const quell::timed_out&) {
      log.print("timed out at " + at(clock));
    }
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"hook done at 15ms", "timed out at 15ms"}));
}

TEST(Deadlines, MoveOnAfterYieldsNulloptOnExpiryAndTheValueOtherwise) {
  virtual_clock clock;
  auto value_after = [](quell::duration d, int v) -> task<int> {
    co_await sleep_for(d);
    co_return v;
  };
  auto body = [&]() -> task<std::vector<std::optional<int>>> {
    std::vector<std::optional<int>> out;
    out.push_back(co_await move_on_after(10ms, value_after(5ms, 1)));
    out.push_back(co_await move_on_after(10ms, value_after(50ms, 2)));
    out.push_back(co_await quell::move_on_at(clock.now() + 10ms, value_after(1ms, 3)));
    std::optional<std::monostate> v = co_await move_on_after(1ms, sleep_for(1h));
    out.push_back(v ? 4 : -4);
    co_return out;
  };
  auto out = executor(body(), clock).run();
  EXPECT_EQ(out, (std::vector<std::optional<int>>{1, std::nullopt, 3, -4}));
  EXPECT_EQ(at(clock), "17ms");
}

TEST(Deadlines, AnOperationThatCompletedAnywayDeliversItsValueNotTimedOut) {
  virtual_clock clock;
  auto work = []() -> task<int> {
    co_await sleep_for(20ms);
    co_return 7;
  };
  // The shield holds the deadline's cancel back, so the operation completes after it expired.
  auto body = [&]() -> task<int> { co_return co_await timeout(10ms, quell::shield(work())); };
  EXPECT_EQ(executor(body(), clock).run(), 7);
  EXPECT_EQ(at(clock), "20ms");
}

// A sleep due at the same instant as its deadline: both timers fire in the same turn, the
// deadline's first; the sleep has completed by then, so its result is delivered (completion wins).
TEST(Deadlines, AnOperationDueAtTheSameInstantAsItsDeadlineDeliversItsResult) {
  virtual_clock clock;
  quell::test::log log;
  auto work = [&]() -> task<int> {
    co_await sleep_for(10ms);
    log.print("slept");
    co_return 7;
  };
  auto body = [&]() -> task<int> {
    co_await timeout(10ms, sleep_for(10ms));
    co_return co_await timeout(10ms, work());
  };
  EXPECT_EQ(executor(body(), clock).run(), 7);
  EXPECT_EQ(log.lines, lines{"slept"});
  EXPECT_EQ(at(clock), "20ms");
}

TEST(Deadlines, AnAlreadyExpiredDeadlineNeverStartsTheOperation) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    auto r = co_await quell::move_on_at(clock.now() - 1ms, log.say("ran"));
    log.print(r ? "completed" : "moved on");
    try {
      co_await quell::with_deadline(clock.now(), log.say("ran"));
    } catch (const quell::timed_out&) {
      log.print("timed out");
    }
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"moved on", "timed out"}));
}

namespace {
// An inner 10 ms deadline around a long sleep, logging what runs after it: under an outer
// deadline that expires with it, nothing of this may run.
task<> inner_deadline_10ms(quell::test::log& log) {
  try {
    co_await timeout(10ms, sleep_for(1h));
  } catch (const quell::timed_out&) {
    log.print("inner timed out");
  }
  log.print("after inner");
}
}  // namespace

TEST(Deadlines, NestedDeadlinesThatExpireTogetherTheOuterWins) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<bool> { co_return (co_await move_on_after(10ms, inner_deadline_10ms(log))).has_value(); };
  EXPECT_FALSE(executor(body(), clock).run());
  EXPECT_EQ(log.lines, lines{});
}

// Both have passed by the time the executor looks (it was busy, or asleep past them): the inner
// deadline, due earlier, fires first, yet the outer one has passed too, so the outer one reports
// the expiry and nothing after the inner deadline runs.
TEST(Deadlines, WhenBothHavePassedBeforeEitherFiredTheOuterWinsAlthoughTheInnerIsEarlier) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    auto r = co_await move_on_after(20ms, inner_deadline_10ms(log));
    log.print(r ? "outer completed" : "outer moved on");
  };
  executor ex{body(), clock};
  ex.poll_once();  // both timers armed
  clock.advance(30ms);
  while (!ex.poll_once()) {
  }
  EXPECT_EQ(log.lines, lines{"outer moved on"});
}

// The same with an on_cancel between the two: the inner deadline's timer is armed first (its
// operation waits first), yet the outer one, due at the same instant, still fires first and wins.
TEST(Deadlines, NestedDeadlinesThatExpireTogetherTheOuterWinsAcrossAnOnCancelBetweenThem) {
  virtual_clock clock;
  quell::test::log log;
  auto hook = [&] { log.print("hook"); };
  auto body = [&]() -> task<bool> {
    auto guarded = on_cancel(inner_deadline_10ms(log), hook);
    co_return (co_await move_on_after(10ms, std::move(guarded))).has_value();
  };
  EXPECT_FALSE(executor(body(), clock).run());
  EXPECT_EQ(log.lines, lines{"hook"});
}

namespace {
quell::executor<int>* g_deadline_ex = nullptr;
}  // namespace

// A cancel that arrives while the timeout's operation is starting is delivered once the start has
// returned, after the deadline's timer was armed: it reaches the operation (its hook runs), the
// timeout ends cancelled, and the timer is gone (had the request been lost, the timer would fire
// an hour later and the timeout would throw timed_out).
TEST(Deadlines, ACancelArrivingWhileTheOperationStartsEndsTheTimeoutCancelledBeforeItsTimerFires) {
  virtual_clock clock;
  quell::test::log log;
  auto hook = [&] { log.print("hook"); };
  auto starts_by_cancelling = [&]() -> task<int> {
    g_deadline_ex->cancel();
    auto waits = on_cancel(quell::pending<int>(), hook);
    co_return co_await std::move(waits);
  };
  auto body = [&]() -> task<int> { co_return co_await timeout(1h, starts_by_cancelling()); };
  executor ex(body(), clock);
  g_deadline_ex = &ex;
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_EQ(log.lines, lines{"hook"});
  EXPECT_EQ(at(clock), "0ms");
}

// Found by the random-tree oracle (seed 1360): the inner deadline used to end cancelled as if the
// outer request had reached it, so the inner hook never ran for an operation that ended cancelled.
TEST(Deadlines, AnOuterCancelHeldBackByARunningHookDoesNotMakeAnInnerDeadlineEndCancelled) {
  virtual_clock clock;
  quell::test::log log;
  auto outer_hook = [&]() -> task<> {
    co_await sleep_for(10ms);
    log.print("outer hook done at " + at(clock));
  };
  auto inner_hook = [&]() -> task<> {
    log.print("inner hook at " + at(clock));
    co_return;
  };
  auto work = [&]() -> task<> {
    try {
      co_await timeout(15ms, sleep_for(1h));
    } catch (const quell::timed_out&) {
      log.print("inner timed out at " + at(clock));  // no cancel has reached this code yet
    }
    co_await sleep_for(1h);
  };
  auto body = [&]() -> task<> {
    auto inner = on_cancel(work(), inner_hook);
    co_await move_on_after(10ms, on_cancel(std::move(inner), outer_hook));
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"inner timed out at 15ms", "outer hook done at 20ms", "inner hook at 20ms"}));
}

TEST(Deadlines, AnOuterDeadlineExpiringWhileTheInnerOneIsCancellingWins) {
  virtual_clock clock;
  quell::test::log log;
  auto slow_hook = [&]() -> task<> {
    co_await sleep_for(5ms);
    log.print("inner hook done at " + at(clock));
  };
  auto inner = [&]() -> task<> {
    try {
      co_await timeout(10ms, on_cancel(sleep_for(1h), slow_hook));
    } catch (const quell::timed_out&) {
      log.print("inner timed out");
    }
    log.print("after inner");
  };
  auto body = [&]() -> task<bool> { co_return (co_await move_on_after(12ms, inner())).has_value(); };
  EXPECT_FALSE(executor(body(), clock).run());
  EXPECT_EQ(log.lines, (lines{"inner hook done at 15ms"}));
}

TEST(Deadlines, AnInnerDeadlineThatExpiresFirstIsCaughtInsideAndTheOuterStillApplies) {
  virtual_clock clock;
  quell::test::log log;
  auto inner = [&]() -> task<> {
    try {
      co_await timeout(5ms, sleep_for(1h));
    } catch (const quell::timed_out&) {
      log.print("inner timed out at " + at(clock));
    }
    co_await sleep_for(1h);
    log.print("never");
  };
  auto body = [&]() -> task<bool> { co_return (co_await move_on_after(10ms, inner())).has_value(); };
  EXPECT_FALSE(executor(body(), clock).run());
  EXPECT_EQ(log.lines, (lines{"inner timed out at 5ms"}));
  EXPECT_EQ(at(clock), "10ms");
}

TEST(Deadlines, ACancelledTimeoutEndsCancelledNeverTimedOut) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    try {
      co_await timeout(10ms, on_cancel(sleep_for(1h), log.hook("op cancelled")));
    } catch (...) {
      log.print("caught something");
    }
    log.print("after");
  };
  {
    executor ex{body(), clock};
    ex.poll_once();
    ex.cancel();
  }
  EXPECT_EQ(log.lines, (lines{"op cancelled"}));
}

TEST(Deadlines, ACancelThatExpiredInAnInnerScopeDoesNotLeakOutOfIt) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    auto r = co_await move_on_after(5ms, sleep_for(1h));
    log.print(std::string(r ? "completed" : "moved on") + (quell::this_task::cancel_requested() ? ", cancelled" : ""));
    co_await sleep_for(1ms);  // an ordinary wait afterwards is not cancelled
    log.print("slept again until " + at(clock));
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"moved on", "slept again until 6ms"}));
}

TEST(Deadlines, CancellationIsLevelTriggeredEveryLaterWaitInACancelledScopeIsCancelled) {
  virtual_clock clock;
  quell::test::log log;
  auto inner = [&]() -> task<> {
    co_await quell::shield(sleep_for(20ms));  // completes: the deadline's cancel is held back
    log.print(std::string("first wait done at ") + at(clock) +
              (quell::this_task::cancel_requested() ? ", cancel requested" : ""));
    co_await sleep_for(1ms);  // no new request: the one already in force cancels it at once
    log.print("second wait done");
  };
  auto body = [&]() -> task<bool> { co_return (co_await move_on_after(10ms, inner())).has_value(); };
  EXPECT_FALSE(executor(body(), clock).run());
  EXPECT_EQ(log.lines, (lines{"first wait done at 20ms, cancel requested"}));
  EXPECT_EQ(at(clock), "20ms");
}

TEST(Deadlines, CheckpointEndsACancelledTaskAndCostsNothingOtherwise) {
  virtual_clock clock;
  quell::test::log log;
  auto spin = [&]() -> task<> {
    for (int i = 0; i < 3; ++i) co_await quell::this_task::checkpoint();
    log.print("three checkpoints, no cancel");
    co_await quell::shield(sleep_for(20ms));
    co_await quell::this_task::checkpoint();
    log.print("never");
  };
  auto body = [&]() -> task<bool> { co_return (co_await move_on_after(10ms, spin())).has_value(); };
  EXPECT_FALSE(executor(body(), clock).run());
  EXPECT_EQ(log.lines, (lines{"three checkpoints, no cancel"}));
}

TEST(Deadlines, EffectiveDeadlineIsTheMinimumUpToTheNearestShield) {
  virtual_clock clock;
  const quell::time_point t0 = clock.now();
  std::vector<quell::time_point> seen;
  auto probe = [&]() -> task<> {
    seen.push_back(quell::this_task::deadline());
    co_return;
  };
  auto body = [&]() -> task<> {
    co_await probe();                                               // none
    co_await timeout(50ms, timeout(20ms, probe()));                 // nested: the earlier one
    co_await timeout(20ms, timeout(50ms, probe()));                 // in either order
    co_await timeout(20ms, quell::shield(timeout(70ms, probe())));  // a shield hides the outer one
    co_await timeout(20ms, quell::shield(probe(), 30ms));           // an unarmed bound: no deadline
    co_await quell::with_deadline(t0 + 40ms, [&]() -> task<> {      // a deadline reaches nested
      co_await sleep_for(15ms);                                     // tasks; what is left of the
      co_await probe();                                             // budget shrinks with time
    }());
  };
  executor(body(), clock).run();
  EXPECT_EQ(seen, (std::vector<quell::time_point>{quell::time_point::max(), t0 + 20ms, t0 + 20ms, t0 + 70ms,
                                                  quell::time_point::max(), t0 + 40ms}));
  EXPECT_EQ(ms_from(clock, seen.back()), 25);
}

TEST(Deadlines, EffectiveDeadlineOfACancelledTaskIsInThePastAndUnderAShieldTheBoundCounts) {
  virtual_clock clock;
  std::vector<quell::time_point> seen;
  auto inner = [&]() -> task<> {
    co_await quell::shield(
        [&]() -> task<> {
          co_await sleep_for(5ms);  // the deadline's cancel arrives meanwhile and arms the bound
          seen.push_back(quell::this_task::deadline());
        }(),
        30ms);
    seen.push_back(quell::this_task::deadline());  // this task is being cancelled: no budget
  };
  auto body = [&]() -> task<> {
    auto r = co_await move_on_after(1ms, inner());
    EXPECT_TRUE(r);  // inner's last step had no suspension point: it completed anyway
  };
  executor(body(), clock).run();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], quell::time_point{} + 31ms);  // the bound was armed by the cancel at 1ms
  EXPECT_EQ(seen[1], quell::time_point::min());
}

TEST(Deadlines, CancelReasonIsReadableFromHooksAndTheFirstReasonWins) {
  virtual_clock clock;
  quell::test::log log;
  auto hook = [&]() -> task<> {
    auto r = quell::this_task::cancel_reason();
    log.print(std::string("hook: ") + (r ? r->describe() : "no reason") +
              (quell::this_task::cancel_requested() ? ", hook cancelled" : ", hook not cancelled"));
    co_await sleep_for(10ms);
  };
  auto body = [&]() -> task<> { co_await timeout(5ms, on_cancel(sleep_for(1h), hook)); };
  {
    executor ex{body(), clock};
    ex.poll_once();
    clock.advance(5ms);
    ex.poll_once();  // the deadline fires: the hook starts
    ex.cancel(quell::cancel_reason(quell::cancel_kind::peer_disconnected));
    // The root and everything under it has reason "peer disconnected" now; the operation under
    // the deadline keeps the first reason it got.
  }
  EXPECT_EQ(log.lines, (lines{"hook: deadline, hook not cancelled"}));
}

TEST(Deadlines, CancelReasonCarriesTheRequestersMessageToHooks) {
  quell::test::log log;
  auto hook = [&]() {
    auto r = quell::this_task::cancel_reason();
    log.print(r ? r->describe() : "none");
  };
  auto body = [&]() -> task<> {
    log.print(quell::this_task::cancel_reason() ? "reason before cancel" : "no reason before cancel");
    co_await on_cancel(quell::pending(), hook);
  };
  {
    executor ex{body()};
    ex.poll_once();
    ex.cancel(quell::cancel_reason(quell::cancel_kind::requested, "client went away"));
  }
  EXPECT_EQ(log.lines, (lines{"no reason before cancel", "requested: client went away"}));
}

TEST(Deadlines, ACancelThatWasNeverDeliveredBecauseTheOperationCompletedDoesNotLeakOut) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    // The deadline passes while the shield holds its cancel back; the operation completes.
    auto r = co_await move_on_after(10ms, quell::shield(sleep_for(20ms)));
    log.print(std::string(r ? "completed" : "moved on") + " at " + at(clock) +
              (quell::this_task::cancel_requested() ? ", cancel leaked" : ""));
    co_await sleep_for(5ms);
    log.print("next wait ended normally at " + at(clock));
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"completed at 20ms", "next wait ended normally at 25ms"}));
}
