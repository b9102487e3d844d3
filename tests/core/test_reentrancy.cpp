// Cancellation requested from inside the machinery it reaches (a hook, a leaf, a branch starting),
// misuse of awaitables, and nesting depth: the cases an external review found.
#include <gtest/gtest.h>

#include <coroutine>
#include <cstdio>
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

TEST(Reentrancy, AForcedRequestFromInsideAHookThatTheGracefulOneStartedIsDeliveredAfterIt) {
  quell::test::log log;
  executor<void>* ex_ptr = nullptr;
  auto stubborn = [&]() -> task<> {
    log.print("hook starts, escalates");
    ex_ptr->force_cancel();
    co_await on_cancel(pending(), log.hook("hook's own hook (forced)"));
  };
  auto root = [&]() -> task<> { co_await on_cancel(pending(), stubborn()); };
  executor ex{root()};
  ex_ptr = &ex;
  ex.poll_once();
  ex.cancel();
  EXPECT_TRUE(ex.done());
  EXPECT_EQ(log.lines, (lines{"hook starts, escalates", "hook's own hook (forced)"}));
}

namespace {
executor<int>* g_int_ex = nullptr;

// A leaf that cancels its own executor from inside await_suspend and completes at once.
struct cancels_then_completes {
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<>) noexcept {
    g_int_ex->cancel();
    return false;
  }
  bool await_cancel(std::coroutine_handle<>) noexcept { return true; }
  bool await_must_resume() const noexcept { return true; }
  int await_resume() const noexcept { return 7; }
};
}  // namespace

TEST(Reentrancy, ACancelArrivingWhileABranchStartsIsDeliveredOnceAndTheRaceWaitsForEveryLoser) {
  quell::test::log log;
  auto slow_hook = [&]() -> task<> {
    log.print("loser hook begins");
    co_await quell::yield();
    log.print("loser hook ends");
  };
  executor ex{race(cancels_then_completes{}, pending<int>(), on_cancel(pending<int>(), slow_hook()))};
  g_int_ex = &ex;
  EXPECT_EQ(ex.run(), 7);  // completed at once: completion wins
  EXPECT_EQ(log.lines, (lines{"loser hook begins", "loser hook ends"}));
}

TEST(Reentrancy, ACancelRequestedWhileTheRootRaceIsStartingReachesBranchesStartedAfterIt) {
  quell::test::log log;
  auto first = [&]() -> task<int> {
    g_int_ex->cancel();
    co_await pending();
    co_return 1;
  };
  executor ex{race(first(), on_cancel(pending<int>(), log.hook("second branch hook")))};
  g_int_ex = &ex;
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_EQ(log.lines, (lines{"second branch hook"}));
}

namespace {
task<int> child_value() { co_return 5; }
task<int> at_depth(int n, task<int> (*bottom)()) {
  if (n == 0) co_return co_await bottom();
  co_return co_await at_depth(n - 1, bottom);
}
}  // namespace

TEST(Reentrancy, CancellingFromAnyNestingDepthTerminates) {
  // Run the cancel from tasks nested around the resume-depth limit.
  for (int n = QUELL_MAX_RESUME_DEPTH - 4; n <= QUELL_MAX_RESUME_DEPTH + 4; ++n) {
    static executor<int>* ex_ptr;
    auto bottom = +[]() -> task<int> {
      ex_ptr->cancel();
      co_return co_await child_value();
    };
    executor ex{at_depth(n, bottom)};
    ex_ptr = &ex;
    EXPECT_THROW(ex.run(), quell::cancelled_error) << "depth " << n;
  }
}

TEST(Reentrancy, BlockOnFromAnyNestingDepthTerminates) {
  for (int n = QUELL_MAX_RESUME_DEPTH - 4; n <= QUELL_MAX_RESUME_DEPTH + 4; ++n) {
    auto bottom = +[]() -> task<int> { co_return quell::block_on(child_value()) + 1; };
    EXPECT_EQ(quell::block_on(at_depth(n, bottom)), 6) << "depth " << n;
  }
}

TEST(Reentrancy, PollingAnExecutorFromInsideItsOwnTaskIsALogicError) {
  executor<int>* ex_ptr = nullptr;
  auto body = [&]() -> task<int> {
    try {
      ex_ptr->poll_once();
    } catch (const std::logic_error&) {
      co_return 1;
    }
    co_return 0;
  };
  executor ex{body()};
  ex_ptr = &ex;
  EXPECT_EQ(ex.run(), 1);
}

TEST(OnCancelHooks, ALambdaReturningATaskIsCalledOnlyWhenNeededAndItsTaskAwaited) {
  quell::test::log log;
  int made = 0;
  auto make_hook = [&]() -> task<> {
    ++made;
    log.print("async cleanup begins");
    co_await quell::yield();
    log.print("async cleanup ends");
  };
  {
    executor ex{on_cancel(pending(), make_hook)};
    ex.poll_once();
    EXPECT_EQ(made, 0);
  }
  EXPECT_EQ(made, 1);
  EXPECT_EQ(log.lines, (lines{"async cleanup begins", "async cleanup ends"}));
  EXPECT_EQ(quell::block_on(on_cancel(quell::ready(3), make_hook)), 3);
  EXPECT_EQ(made, 1);
}

TEST(MisuseDeathTest, AwaitingACombinatorTwiceTerminatesWithAMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto one = []() -> task<int> { co_return 1; };
  auto body = [&]() -> task<int> {
    auto r = race(one(), pending<int>());
    const int a = co_await r;
    const int b = co_await r;
    co_return a + b;
  };
  EXPECT_DEATH(quell::block_on(body()), "awaited twice");
}

TEST(Executor, ARootEndingCancelledWithoutARequestSaysSo) {
  struct cancelled_below {
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<>) const noexcept { return false; }
    bool await_cancel(std::coroutine_handle<>) const noexcept { return true; }
    bool await_must_resume() const noexcept { return false; }
    void await_resume() const noexcept {}
  };
  executor ex{cancelled_below{}};
  try {
    ex.run();
    FAIL();
  } catch (const quell::cancelled_error& e) {
    EXPECT_NE(std::string(e.what()).find("nothing asked the root to cancel"), std::string::npos) << e.what();
  }
}
