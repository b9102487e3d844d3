// The reference scenarios of docs/model.md, each with exactly the output the contract states.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "quell/quell.hpp"
#include "support/log.hpp"

using quell::executor;
using quell::on_cancel;
using quell::pending;
using quell::race;
using quell::task;
using lines = std::vector<std::string>;

namespace {

struct X : std::runtime_error {
  X() : std::runtime_error("X") {}
};

task<int> returns(int v) { co_return v; }

}  // namespace

TEST(Scenario, S1_RootReturns42) {
  quell::test::log log;
  const int r = executor{returns(42)}.run();
  log.print("the root task returned " + std::to_string(r));
  EXPECT_EQ(log.lines, (lines{"the root task returned 42"}));
}

TEST(Scenario, S2_DestroyingTheExecutorCancelsTheRootAndRunsItsHook) {
  quell::test::log log;
  auto body = [&]() -> task<> {
    co_await pending();
    log.print("all done!");
  };
  {
    executor ex{on_cancel(body(), log.say("the task did not finish"))};
    EXPECT_FALSE(ex.poll_once());
    EXPECT_FALSE(ex.poll_once());
  }
  EXPECT_EQ(log.lines, (lines{"the task did not finish"}));
}

TEST(Scenario, S3_RaceCancelsTheLoserBeforeReturning) {
  quell::test::log log;
  executor ex{race(on_cancel(pending<int>(), log.say("future `a` was cancelled")), returns(42))};
  const int r = ex.run();
  log.print("result: " + std::to_string(r));
  EXPECT_EQ(log.lines, (lines{"future `a` was cancelled", "result: 42"}));
}

TEST(Scenario, S4_CancelDuringCancellationIsIdempotent) {
  quell::test::log log;
  bool done = false;
  bool first = true;
  auto h = quell::poll_fn([&] {
    if (first) {
      log.print("begin cancelling `b`");
      first = false;
    }
    if (done) log.print("cancellation of `b` complete");
    return done;
  });
  auto a = returns(42);
  auto b = on_cancel(pending<int>(), std::move(h));
  auto root_body = [&](auto race_ab) -> task<> {
    co_await on_cancel(std::move(race_ab), log.say("cancelling `race` future"));
  };
  {
    executor ex{on_cancel(root_body(race(std::move(a), std::move(b))), log.say("cancelling root future"))};
    EXPECT_FALSE(ex.poll_once());
    EXPECT_FALSE(ex.poll_once());
    EXPECT_FALSE(ex.poll_once());
    done = true;
  }
  EXPECT_EQ(log.lines, (lines{"begin cancelling `b`", "cancelling root future", "cancelling `race` future",
                              "cancellation of `b` complete"}));
}

TEST(Scenario, S5_NestedHooksRunOutsideIn) {
  quell::test::log log;
  {
    executor ex{on_cancel(on_cancel(pending(), log.hook("inner hook")), log.hook("outer hook"))};
    EXPECT_FALSE(ex.poll_once());
  }
  EXPECT_EQ(log.lines, (lines{"outer hook", "inner hook"}));
}

TEST(Scenario, S5b_AHooksOwnOnCancelNeverRunsUnderGracefulCancellation) {
  quell::test::log log;
  auto hook = [&]() -> task<> {
    log.print("hook runs");
    co_await on_cancel(quell::yield(), log.hook("hook's own hook"));
    log.print("hook done");
  };
  {
    executor ex{on_cancel(pending(), hook())};
    EXPECT_FALSE(ex.poll_once());
  }
  EXPECT_EQ(log.lines, (lines{"hook runs", "hook done"}));
}

TEST(Scenario, S6_ExceptionUnwindsInsideOut) {
  quell::test::log log;
  auto thrower = []() -> task<> {
    throw X();
    co_return;
  };
  auto middle = [&]() -> task<> { co_await on_cancel(thrower(), log.hook("inner hook")); };
  executor ex{on_cancel(middle(), log.hook("outer hook"))};
  EXPECT_THROW(ex.run(), X);
  EXPECT_EQ(log.lines, (lines{"inner hook", "outer hook"}));
}

TEST(Scenario, S6b_AHookMaySuspendBeforeTheExceptionContinuesOutward) {
  quell::test::log log;
  auto thrower = []() -> task<> {
    co_await quell::yield();
    throw X();
  };
  auto slow_hook = [&]() -> task<> {
    log.print("inner hook begins");
    co_await quell::yield();
    co_await quell::yield();
    log.print("inner hook ends");
  };
  auto middle = [&]() -> task<> { co_await on_cancel(thrower(), slow_hook()); };
  executor ex{on_cancel(middle(), log.hook("outer hook"))};
  EXPECT_THROW(ex.run(), X);
  EXPECT_EQ(log.lines, (lines{"inner hook begins", "inner hook ends", "outer hook"}));
}

TEST(Scenario, S7_ExceptionInARaceBranchCancelsTheOthersFirst) {
  quell::test::log log;
  auto thrower = []() -> task<> {
    throw X();
    co_return;
  };
  executor ex{race(thrower(), on_cancel(pending(), log.hook("b hook")))};
  try {
    ex.run();
    FAIL() << "race should have thrown";
  } catch (const X&) {
    log.print("X propagated");
  }
  EXPECT_EQ(log.lines, (lines{"b hook", "X propagated"}));
}

TEST(Scenario, S8_AnExecutorDestroyedBeforeItsFirstTurnRunsNothing) {
  quell::test::log log;
  auto body = [&]() -> task<> {
    log.print("body ran");
    co_await pending();
  };
  { executor ex{on_cancel(body(), log.say("hook ran"))}; }
  EXPECT_TRUE(log.lines.empty());
}

TEST(Scenario, S9_CancelAfterCompletionIsANoOp) {
  quell::test::log log;
  {
    executor ex{on_cancel(returns(7), log.hook("hook ran"))};
    EXPECT_EQ(ex.run(), 7);
    ex.cancel();
    ex.force_cancel();
  }
  EXPECT_TRUE(log.lines.empty());
}

TEST(Scenario, S10_ASlowLosersHookFinishesBeforeTheRaceDeliversItsValue) {
  quell::test::log log;
  auto slow_hook = [&]() -> task<> {
    for (int i = 1; i <= 5; ++i) {
      log.print("loser hook, turn " + std::to_string(i));
      co_await quell::yield();
    }
    log.print("loser hook done");
  };
  auto root = [&]() -> task<> {
    const int r = co_await race(returns(1), on_cancel(pending<int>(), slow_hook()));
    log.print("race returned " + std::to_string(r));
  };
  executor ex{root()};
  int turns = 1;
  while (!ex.poll_once()) ++turns;
  EXPECT_EQ(turns, 6);
  EXPECT_EQ(log.lines, (lines{"loser hook, turn 1", "loser hook, turn 2", "loser hook, turn 3", "loser hook, turn 4",
                              "loser hook, turn 5", "loser hook done", "race returned 1"}));
}
