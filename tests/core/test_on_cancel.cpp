// on_cancel against every way its operation can end and be cancelled.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "quell/quell.hpp"
#include "support/log.hpp"
#include "support/test_leaf.hpp"

using quell::executor;
using quell::on_cancel;
using quell::pending;
using quell::task;
using quell::test::cancel_mode;
using quell::test::leaf_control;
using quell::test::leaf_state;
using lines = std::vector<std::string>;

TEST(OnCancel, AValueFromTheOperationSkipsTheHook) {
  quell::test::log log;
  leaf_control<int> c;
  executor ex{on_cancel(c.leaf(), log.hook("hook"))};
  ex.poll_once();
  c.complete(4);
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(ex.run(), 4);
  EXPECT_TRUE(log.lines.empty());
}

TEST(OnCancel, TheHookRunsBeforeTheOperationIsCancelled) {
  quell::test::log log;
  leaf_control<int> c(cancel_mode::sync);
  auto hook = [&]() -> task<> {
    log.print(c.state == leaf_state::waiting ? "hook runs, op still waiting" : "op already cancelled");
    co_return;
  };
  executor ex{on_cancel(c.leaf(), hook())};
  ex.poll_once();
  ex.cancel();
  EXPECT_TRUE(ex.done());
  EXPECT_EQ(c.state, leaf_state::cancelled);
  EXPECT_EQ(log.lines, (lines{"hook runs, op still waiting"}));
}

TEST(OnCancel, AnAsyncHookHoldsBackTheOperationsCancellationUntilItFinishes) {
  quell::test::log log;
  leaf_control<int> c(cancel_mode::sync);
  auto hook = [&]() -> task<> {
    co_await quell::yield();
    co_await quell::yield();
    log.print(c.state == leaf_state::waiting ? "hook done, op still waiting" : "wrong order");
  };
  executor ex{on_cancel(c.leaf(), hook())};
  ex.poll_once();
  ex.cancel();
  EXPECT_FALSE(ex.poll_once());
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(c.state, leaf_state::cancelled);
  EXPECT_EQ(log.lines, (lines{"hook done, op still waiting"}));
}

TEST(OnCancel, AnAsyncCancellingOperationIsAwaitedAfterTheHook) {
  quell::test::log log;
  leaf_control<int> c(cancel_mode::async);
  executor ex{on_cancel(c.leaf(), log.hook("hook"))};
  ex.poll_once();
  ex.cancel();
  EXPECT_EQ(c.state, leaf_state::cancelling);
  EXPECT_FALSE(ex.poll_once());
  c.confirm_cancel();
  EXPECT_TRUE(ex.poll_once());
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_EQ(log.lines, (lines{"hook"}));
}

TEST(OnCancel, AnOperationCompletingWhileTheHookRunsDeliversItsValue) {
  quell::test::log log;
  leaf_control<int> c(cancel_mode::sync);
  leaf_control<int> hook_leaf(cancel_mode::sync);
  auto hook = [&]() -> task<> {
    co_await hook_leaf.leaf();
    log.print("hook done");
  };
  executor ex{on_cancel(c.leaf(), hook())};
  ex.poll_once();
  ex.cancel();
  c.complete(11);  // the operation finishes while its hook is still running
  EXPECT_FALSE(ex.poll_once());
  hook_leaf.complete(0);
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(c.cancel_calls, 0);  // never asked: it was already done when the hook finished
  EXPECT_EQ(ex.run(), 11);
  EXPECT_EQ(log.lines, (lines{"hook done"}));
}

TEST(OnCancel, AnOperationCompletingAnywayDuringItsAsyncCancelDeliversItsValue) {
  leaf_control<int> c(cancel_mode::async);
  executor ex{on_cancel(c.leaf(), [] {})};
  ex.poll_once();
  ex.cancel();
  c.complete(12);
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(ex.run(), 12);
}

TEST(OnCancel, TheHookRunsExactlyOnceUnderRepeatedAndForcedRequests) {
  quell::test::log log;
  leaf_control<int> c(cancel_mode::async);
  executor ex{on_cancel(c.leaf(), log.hook("hook"))};
  ex.poll_once();
  ex.cancel();
  ex.cancel();
  ex.force_cancel();
  c.confirm_cancel();
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(log.lines, (lines{"hook"}));
}

TEST(OnCancel, AForcedRequestWhileTheOperationIsCancellingIsForwardedToIt) {
  // The operation is a task whose own leaf needs the escalation to end.
  quell::test::log log;
  auto op = [&]() -> task<> {
    co_await on_cancel(pending(), [&]() -> task<> {
      log.print("op's hook waits for a forced request");
      co_await pending();
    }());
  };
  executor ex{on_cancel(op(), log.hook("outer hook"))};
  ex.poll_once();
  ex.cancel();
  EXPECT_FALSE(ex.poll_once());
  ex.force_cancel();
  EXPECT_TRUE(ex.done());
  EXPECT_EQ(log.lines, (lines{"outer hook", "op's hook waits for a forced request"}));
}

TEST(OnCancel, AForcedFirstRequestStillStartsTheHookWhichIsCancelledAtItsFirstSuspension) {
  quell::test::log log;
  auto hook = [&]() -> task<> {
    log.print("hook starts");
    co_await on_cancel(pending(), log.hook("hook's own hook"));
    log.print("not reached");
  };
  executor ex{on_cancel(pending(), hook())};
  ex.poll_once();
  ex.force_cancel();
  EXPECT_TRUE(ex.done());
  EXPECT_EQ(log.lines, (lines{"hook starts", "hook's own hook"}));
}

TEST(OnCancel, AnExceptionRunsTheHookThenContinues) {
  quell::test::log log;
  leaf_control<int> c;
  executor ex{on_cancel(c.leaf(), log.hook("hook"))};
  ex.poll_once();
  c.fail(std::make_exception_ptr(std::runtime_error("io")));
  EXPECT_TRUE(ex.poll_once());
  EXPECT_THROW(ex.run(), std::runtime_error);
  EXPECT_EQ(log.lines, (lines{"hook"}));
}

TEST(OnCancel, AcceptsAnyAwaitableNotOnlyTasks) {
  quell::test::log log;
  quell::test::unaware_leaf u;
  executor ex{on_cancel(u, quell::yield())};
  ex.poll_once();
  u.complete(8);
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(ex.run(), 8);
}
