// The rules of docs/model.md (three ways to end, completion wins, requests), each on the smallest
// program.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "quell/quell.hpp"
#include "support/log.hpp"
#include "support/test_leaf.hpp"

using quell::cancel_level;
using quell::executor;
using quell::on_cancel;
using quell::pending;
using quell::task;
using quell::test::cancel_mode;
using quell::test::leaf_control;
using quell::test::leaf_state;
using lines = std::vector<std::string>;

TEST(Cancellation, CancelledIsNotAnExceptionCatchAllNeverSeesIt) {
  quell::test::log log;
  auto body = [&]() -> task<> {
    try {
      co_await pending();
    } catch (...) {
      log.print("catch (...) ran");
    }
    log.print("code after the co_await ran");
  };
  {
    executor ex{body()};
    ex.poll_once();
    ex.cancel();
    EXPECT_TRUE(ex.done());
    EXPECT_THROW(ex.run(), quell::cancelled_error);
  }
  EXPECT_TRUE(log.lines.empty());
}

TEST(Cancellation, TheRequestTravelsDownTheAwaitChainToTheLeaf) {
  leaf_control<int> c(cancel_mode::sync);
  auto level3 = [&]() -> task<int> { co_return co_await c.leaf(); };
  auto level2 = [&]() -> task<int> { co_return co_await level3(); };
  auto level1 = [&]() -> task<int> { co_return co_await level2(); };
  executor ex{level1()};
  ex.poll_once();
  EXPECT_EQ(c.state, leaf_state::waiting);
  ex.cancel();
  EXPECT_EQ(c.cancel_calls, 1);
  EXPECT_EQ(c.state, leaf_state::cancelled);
  EXPECT_TRUE(ex.done());
}

TEST(Cancellation, LocalsOfACancelledCoroutineAreDestroyedInReverseOrder) {
  quell::test::log log;
  struct noisy {
    quell::test::log* l;
    std::string name;
    ~noisy() { l->print("~" + name); }
  };
  auto body = [&]() -> task<> {
    noisy a{&log, "a"};
    noisy b{&log, "b"};
    co_await pending();
    log.print("not reached");
  };
  {
    executor ex{body()};
    ex.poll_once();
  }
  EXPECT_EQ(log.lines, (lines{"~b", "~a"}));
}

TEST(Cancellation, ALeafSkipsStartingWhenACancelIsAlreadyPending) {
  leaf_control<int> c(cancel_mode::sync, /*skip_early=*/true);
  auto body = [&]() -> task<int> {
    co_await quell::yield();  // the cancel arrives while suspended here
    co_return co_await c.leaf();
  };
  executor ex{body()};
  ex.poll_once();
  ex.cancel();
  EXPECT_TRUE(ex.done());
  EXPECT_EQ(c.starts, 0);
  EXPECT_EQ(c.early_calls, 0);  // yield itself was cancelled: the body never got to the leaf
}

TEST(Cancellation, StickyRequestIsOfferedToTheNextLeafBeforeItStarts) {
  leaf_control<int> c(cancel_mode::sync, /*skip_early=*/true);
  quell::test::unaware_leaf u;
  auto body = [&]() -> task<int> {
    const int a = co_await u;  // not cancellable once started: finishes, then the request fires
    co_return a + co_await c.leaf();
  };
  executor ex{body()};
  ex.poll_once();
  ex.cancel();
  EXPECT_FALSE(ex.done());
  u.complete(1);
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(c.early_calls, 1);
  EXPECT_EQ(c.starts, 0);
  EXPECT_EQ(c.state, leaf_state::skipped);
}

TEST(Cancellation, ALeafThatRefusesToSkipIsStartedAndThenCancelledAtOnce) {
  leaf_control<int> c(cancel_mode::sync, /*skip_early=*/false);
  quell::test::unaware_leaf u;
  auto body = [&]() -> task<int> {
    const int a = co_await u;
    co_return a + co_await c.leaf();
  };
  executor ex{body()};
  ex.poll_once();
  ex.cancel();
  u.complete(1);
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(c.early_calls, 1);
  EXPECT_EQ(c.starts, 1);
  EXPECT_EQ(c.cancel_calls, 1);
  EXPECT_EQ(c.state, leaf_state::cancelled);
  EXPECT_THROW(ex.run(), quell::cancelled_error);
}

TEST(Cancellation, AnAsyncCancelResumesTheWaiterOnlyWhenTheLeafConfirms) {
  leaf_control<int> c(cancel_mode::async);
  auto body = [&]() -> task<int> { co_return co_await c.leaf(); };
  executor ex{body()};
  ex.poll_once();
  ex.cancel();
  EXPECT_EQ(c.state, leaf_state::cancelling);
  EXPECT_FALSE(ex.poll_once());
  EXPECT_FALSE(ex.poll_once());
  c.confirm_cancel();
  EXPECT_TRUE(ex.poll_once());
  EXPECT_THROW(ex.run(), quell::cancelled_error);
}

TEST(Cancellation, CompletionWinsALeafCompletingDuringAnAsyncCancelDeliversItsValue) {
  quell::test::log log;
  leaf_control<int> c(cancel_mode::async);
  auto body = [&]() -> task<int> {
    const int v = co_await c.leaf();
    log.print("got " + std::to_string(v));
    co_await quell::yield();  // the request is still in force: cancelled here
    log.print("after the next suspension point");
    co_return v;
  };
  executor ex{body()};
  ex.poll_once();
  ex.cancel();
  c.complete(7);
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(log.lines, (lines{"got 7"}));
  EXPECT_THROW(ex.run(), quell::cancelled_error);
}

TEST(Cancellation, CompletionWinsALeafCompletingInsideTheCancelCallDeliversItsValue) {
  quell::test::log log;
  leaf_control<int> c(cancel_mode::inside);
  auto body = [&]() -> task<> {
    const int v = co_await c.leaf();
    log.print("got " + std::to_string(v));
  };
  executor ex{body()};
  ex.poll_once();
  ex.cancel();
  EXPECT_TRUE(ex.done());
  EXPECT_EQ(log.lines, (lines{"got 0"}));
  EXPECT_NO_THROW(ex.run());  // it completed: the body ran to its end without another suspension
}

TEST(Cancellation, TheStickyRequestCancelsTheNextSuspensionPointEvenAReadyOne) {
  quell::test::log log;
  leaf_control<int> c(cancel_mode::async);
  auto body = [&]() -> task<> {
    co_await c.leaf();
    log.print("leaf completed anyway");
    co_await quell::ready(1);
    log.print("not reached");
  };
  executor ex{body()};
  ex.poll_once();
  ex.cancel();
  c.complete(1);
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(log.lines, (lines{"leaf completed anyway"}));
}

TEST(Cancellation, ASecondGracefulRequestIsANoOp) {
  leaf_control<int> c(cancel_mode::async);
  auto body = [&]() -> task<int> { co_return co_await c.leaf(); };
  executor ex{body()};
  ex.poll_once();
  ex.cancel();
  ex.cancel();
  ex.cancel(quell::cancel_reason(quell::cancel_kind::requested, "again"));
  EXPECT_EQ(c.cancel_calls, 1);
  c.confirm_cancel();
  EXPECT_TRUE(ex.poll_once());
}

TEST(Cancellation, AForcedRequestAfterAGracefulOneReachesAOneShotLeafOnlyOnce) {
  leaf_control<int> c(cancel_mode::async);
  auto body = [&]() -> task<int> { co_return co_await c.leaf(); };
  executor ex{body()};
  ex.poll_once();
  ex.cancel();
  ex.force_cancel();
  EXPECT_EQ(c.cancel_calls, 1);
  c.confirm_cancel();
  EXPECT_TRUE(ex.poll_once());
}

TEST(Cancellation, AForcedRequestCancelsARunningHookWhoseOwnHookThenRuns) {
  quell::test::log log;
  auto hook = [&]() -> task<> {
    log.print("hook starts");
    co_await on_cancel(pending(), log.hook("hook's own hook"));
    log.print("not reached");
  };
  executor ex{on_cancel(pending(), hook())};
  ex.poll_once();
  ex.cancel();
  EXPECT_FALSE(ex.poll_once());
  EXPECT_FALSE(ex.poll_once());
  EXPECT_EQ(log.lines, (lines{"hook starts"}));
  ex.force_cancel();
  EXPECT_TRUE(ex.done());
  EXPECT_EQ(log.lines, (lines{"hook starts", "hook's own hook"}));
}

TEST(Cancellation, AForcedRequestThatFollowsAGracefulOneKeepsTheFirstReason) {
  quell::test::log log;
  auto reason = [] { return quell::this_task::cancel_reason()->describe(); };
  auto hook = [&]() -> task<> {
    log.print("hook: " + reason());
    co_await on_cancel(pending(), [&] { log.print("hook's own hook: " + reason()); });
  };
  auto body = [&]() -> task<> { co_await on_cancel(pending(), hook()); };
  executor ex{body()};
  ex.poll_once();
  ex.cancel(quell::cancel_reason(quell::cancel_kind::requested, "first"));
  ex.force_cancel(quell::cancel_reason(quell::cancel_kind::shutdown));
  EXPECT_TRUE(ex.done());
  EXPECT_EQ(log.lines, (lines{"hook: requested: first", "hook's own hook: requested: first"}));
}

TEST(Cancellation, AForcedRequestThatReachesAnOperationAfterAGracefulOneFromElsewhereKeepsTheFirstReason) {
  // The race cancels its loser gracefully (race decided); later the executor's forced request
  // (shutdown) reaches the same on_cancel through the race. The hook's own hook, started by the
  // forced one, still reads the first reason.
  quell::test::log log;
  auto reason = [] { return quell::this_task::cancel_reason()->describe(); };
  auto hook = [&]() -> task<> {
    log.print("hook: " + reason());
    auto own = [&] { log.print("hook's own hook: " + reason()); };
    co_await on_cancel(pending(), own);
  };
  executor ex{quell::race(quell::ready(1), on_cancel(pending<int>(), hook()))};
  ex.poll_once();
  ex.force_cancel(quell::cancel_reason(quell::cancel_kind::shutdown));
  EXPECT_TRUE(ex.done());
  const std::string decided = quell::cancel_reason(quell::cancel_kind::race_decided).describe();
  EXPECT_EQ(log.lines, (lines{"hook: " + decided, "hook's own hook: " + decided}));
}

TEST(Cancellation, ANeverStartedTaskRunsNothingWhenCancelled) {
  quell::test::log log;
  auto body = [&]() -> task<> {
    log.print("body");
    co_return;
  };
  executor ex{on_cancel(body(), log.say("hook"))};
  ex.cancel();
  EXPECT_TRUE(ex.poll_once());
  EXPECT_TRUE(log.lines.empty());
  EXPECT_THROW(ex.run(), quell::cancelled_error);
}

TEST(Cancellation, ACompletedChildIgnoresCancellationOfItsParent) {
  quell::test::log log;
  auto child = [&]() -> task<int> { co_return 5; };
  auto body = [&]() -> task<int> {
    const int v = co_await on_cancel(child(), log.say("child hook"));
    co_await pending();
    co_return v;
  };
  {
    executor ex{body()};
    ex.poll_once();
  }
  EXPECT_TRUE(log.lines.empty());
}

TEST(Cancellation, AnUnawareAwaitableFinishesBeforeTheCancellationTakesEffect) {
  quell::test::log log;
  quell::test::unaware_leaf u;
  auto body = [&]() -> task<> {
    const int v = co_await u;
    log.print("unaware awaitable gave " + std::to_string(v));
    co_await pending();
    log.print("not reached");
  };
  executor ex{body()};
  ex.poll_once();
  ex.cancel();
  EXPECT_FALSE(ex.done());
  EXPECT_FALSE(ex.poll_once());
  u.complete(3);
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(log.lines, (lines{"unaware awaitable gave 3"}));
}

namespace {
struct primary_error : std::runtime_error {
  primary_error() : std::runtime_error("primary") {}
};
struct hook_error : std::runtime_error {
  hook_error() : std::runtime_error("hook failed") {}
};
}  // namespace

TEST(Cancellation, AHookExceptionIsAttachedToThePrimaryErrorNotReplacingIt) {
  auto op = []() -> task<> {
    throw primary_error();
    co_return;
  };
  auto hook = []() -> task<> {
    throw hook_error();
    co_return;
  };
  executor ex{on_cancel(op(), hook())};
  try {
    ex.run();
    FAIL() << "expected primary_error";
  } catch (const primary_error&) {
    const auto extra = quell::attached_errors();
    ASSERT_EQ(extra.size(), 1u);
    EXPECT_EQ(quell::describe(extra[0]), "hook failed");
  }
}

TEST(Cancellation, AHookExceptionWithoutAPrimaryErrorIsWhatTheOperationThrows) {
  auto hook = []() -> task<> {
    throw hook_error();
    co_return;
  };
  executor ex{on_cancel(pending(), hook())};
  ex.poll_once();
  ex.cancel();
  EXPECT_TRUE(ex.done());
  EXPECT_THROW(ex.run(), hook_error);
}

namespace {
// A leaf whose operation was cancelled by someone else (as by an external token): it resumes its
// waiter and answers await_must_resume() == false without ever having been asked to cancel.
struct cancelled_elsewhere : quell::detail::turn_node {
  std::coroutine_handle<> waiter;
  cancelled_elsewhere() {
    run = [](quell::detail::turn_node* n) noexcept {
      quell::detail::resume(static_cast<cancelled_elsewhere*>(n)->waiter);
    };
  }
  ~cancelled_elsewhere() { unlink(); }
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) noexcept {
    waiter = h;
    quell::detail::this_thread().current->run_next_turn(this);
  }
  bool await_cancel(std::coroutine_handle<>) noexcept {
    unlink();
    return true;
  }
  bool await_must_resume() const noexcept { return false; }
  void await_resume() const noexcept {}
};
}  // namespace

TEST(Cancellation, ALeafEndingCancelledWithoutARequestEndsEveryAwaiterAboveIt) {
  quell::test::log log;
  auto child = [&]() -> task<int> {
    co_await cancelled_elsewhere{};
    log.print("child continues");
    co_return 1;
  };
  auto parent = [&]() -> task<> {
    co_await child();
    log.print("parent continues");
  };
  executor ex{parent()};
  EXPECT_FALSE(ex.poll_once());
  EXPECT_TRUE(ex.poll_once());
  EXPECT_TRUE(log.lines.empty());
  EXPECT_THROW(ex.run(), quell::cancelled_error);
}
