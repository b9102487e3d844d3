// task<T>: values of every kind, exceptions, laziness, bounded stack, misuse.
#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "quell/quell.hpp"
#include "support/log.hpp"

using quell::block_on;
using quell::executor;
using quell::task;

namespace {

task<int> value(int v) { co_return v; }
task<> nothing() { co_return; }
task<std::unique_ptr<int>> boxed(int v) { co_return std::make_unique<int>(v); }
task<int&> ref_to(int& x) { co_return x; }
task<int> throws_logic() {
  throw std::logic_error("boom");
  co_return 0;
}

}  // namespace

TEST(Task, ReturnsValuesOfEveryKind) {
  EXPECT_EQ(block_on(value(5)), 5);
  block_on(nothing());
  EXPECT_EQ(*block_on(boxed(9)), 9);
  int x = 1;
  int& r = block_on(ref_to(x));
  EXPECT_EQ(&r, &x);
}

TEST(Task, MoveOnlyResultsMoveThroughAwaits) {
  auto outer = []() -> task<std::unique_ptr<int>> {
    auto p = co_await boxed(3);
    *p += 1;
    co_return p;
  };
  EXPECT_EQ(*block_on(outer()), 4);
}

TEST(Task, ExceptionsPropagateThroughAwaits) {
  auto outer = []() -> task<int> { co_return co_await throws_logic() + 1; };
  EXPECT_THROW(block_on(outer()), std::logic_error);
}

TEST(Task, ExceptionsCanBeCaughtInTheAwaitingTask) {
  auto outer = []() -> task<std::string> {
    try {
      co_await throws_logic();
    } catch (const std::logic_error& e) {
      co_return std::string("caught ") + e.what();
    }
    co_return "not reached";
  };
  EXPECT_EQ(block_on(outer()), "caught boom");
}

TEST(Task, IsLazyNothingRunsUntilAwaited) {
  quell::test::log log;
  {
    auto t = log.say("ran");
    EXPECT_TRUE(log.lines.empty());
  }
  EXPECT_TRUE(log.lines.empty());  // destroyed without being started: ran nothing
}

TEST(Task, MovingATaskTransfersOwnership) {
  auto a = value(1);
  task<int> b = std::move(a);
  EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): that is the point
  EXPECT_TRUE(b.valid());
  EXPECT_EQ(block_on(std::move(b)), 1);
}

// g++ 12 does not compile symmetric transfer as a tail call at -O0/-O1 or under ASan; quell
// bounds its resume nesting instead (detail/scheduler.hpp). These two pin that workaround.
TEST(Task, AMillionSequentialAwaitsOfChildrenThatFinishAtOnceUseBoundedStack) {
  auto loop = []() -> task<long> {
    long sum = 0;
    for (int i = 0; i < 1'000'000; ++i) sum += co_await value(1);
    co_return sum;
  };
  EXPECT_EQ(block_on(loop()), 1'000'000);
}

namespace {
task<long> nest(int depth) {
  if (depth == 0) co_return 0;
  co_return 1 + co_await nest(depth - 1);
}
}  // namespace

TEST(Task, AChainOfAMillionNestedAwaitsUsesBoundedStack) { EXPECT_EQ(block_on(nest(1'000'000)), 1'000'000); }

TEST(Task, ADeeplyNestedChainSuspendedOnALeafResumesWithBoundedStack) {
  quell::test::log log;
  auto bottom = []() -> task<long> {
    co_await quell::yield();
    co_return 0;
  };
  struct rec {
    static task<long> go(int depth, task<long> (*leaf)()) {
      if (depth == 0) co_return co_await leaf();
      co_return 1 + co_await go(depth - 1, leaf);
    }
  };
  EXPECT_EQ(block_on(rec::go(200'000, +bottom)), 200'000);
}

namespace {
task<long> nest_on(int depth, quell::test::log& log) {
  if (depth == 0) {
    co_await quell::on_cancel(quell::pending(), log.hook("bottom hook"));
    co_return 0;
  }
  co_return 1 + co_await nest_on(depth - 1, log);
}
}  // namespace

TEST(Task, CancellingAChainOfAMillionNestedAwaitsUsesBoundedStack) {
  quell::test::log log;
  {
    executor ex{nest_on(1'000'000, log)};
    EXPECT_FALSE(ex.poll_once());
    ex.cancel();
    EXPECT_TRUE(ex.done());
  }
  EXPECT_EQ(log.lines, (std::vector<std::string>{"bottom hook"}));
}

TEST(TaskMisuse, AwaitingAnEmptyTaskThrowsLogicError) {
  auto outer = []() -> task<int> {
    auto t = value(1);
    const int a = co_await std::move(t);
    const int b = co_await std::move(t);  // NOLINT(bugprone-use-after-move): awaited twice
    co_return a + b;
  };
  EXPECT_THROW(block_on(outer()), std::logic_error);
}

TEST(TaskMisuse, RunAfterTheResultWasTakenThrowsLogicError) {
  executor ex{value(3)};
  EXPECT_EQ(ex.run(), 3);
  EXPECT_THROW(ex.run(), std::logic_error);
}

TEST(TaskMisuse, BlockOnAnEmptyTaskThrowsLogicError) {
  auto t = value(1);
  auto moved = std::move(t);
  EXPECT_THROW(block_on(std::move(t)), std::logic_error);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(block_on(std::move(moved)), 1);
}

namespace {
task<> waits_forever() { co_await quell::pending(); }
}  // namespace

TEST(TaskDeathTest, DestroyingAStartedUnfinishedTaskTerminatesNamingWhereItWasCreated) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        auto t = waits_forever();
        auto aw = std::move(t).operator co_await();
        aw.await_suspend(std::noop_coroutine());  // started by hand, outside any owner
      },                                          // the awaiter, owning the running frame, is destroyed here
      "a running task was destroyed before it finished: coroutine `waits_forever` at .*test_task.cpp");
}
