// join: all results in order; the first exception cancels and awaits the siblings.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "quell/quell.hpp"
#include "support/log.hpp"
#include "support/test_leaf.hpp"

using quell::executor;
using quell::join;
using quell::on_cancel;
using quell::pending;
using quell::task;
using quell::test::cancel_mode;
using quell::test::leaf_control;
using quell::test::leaf_state;
using lines = std::vector<std::string>;

namespace {
task<int> returns(int v) { co_return v; }
task<> nothing() { co_return; }
struct X : std::runtime_error {
  X() : std::runtime_error("X") {}
};
}  // namespace

TEST(Join, YieldsEveryResultInArgumentOrderWithVoidAsMonostate) {
  leaf_control<int> slow;
  executor ex{join(slow.leaf(), returns(2), nothing())};
  ex.poll_once();
  slow.complete(1);
  EXPECT_TRUE(ex.poll_once());
  auto r = ex.run();
  static_assert(std::is_same_v<decltype(r), std::tuple<int, int, std::monostate>>);
  EXPECT_EQ(std::get<0>(r), 1);
  EXPECT_EQ(std::get<1>(r), 2);
}

TEST(Join, MoveOnlyResultsArriveIntact) {
  auto boxed = []() -> task<std::unique_ptr<int>> { co_return std::make_unique<int>(7); };
  auto [a, b] = quell::block_on(join(boxed(), boxed()));
  EXPECT_EQ(*a + *b, 14);
}

TEST(Join, TheFirstExceptionCancelsTheSiblingsAndWaitsForTheirAsyncCleanupBeforeRethrowing) {
  // Seed-derived: three operations; one fails after the others have started; the failure is
  // reported only after both siblings' asynchronous cleanups have finished.
  quell::test::log log;
  leaf_control<int> failing;
  auto cleanup = [&](std::string who, int turns) -> task<> {
    log.print(who + " cleanup starts");
    for (int i = 0; i < turns; ++i) co_await quell::yield();
    log.print(who + " cleanup done");
  };
  auto root = [&]() -> task<> {
    try {
      co_await join(on_cancel(pending<int>(), cleanup("a", 2)), failing.leaf(),
                    on_cancel(pending<int>(), cleanup("c", 4)));
    } catch (const X&) {
      log.print("join threw X");
    }
  };
  executor ex{root()};
  ex.poll_once();
  failing.fail(std::make_exception_ptr(X()));
  ex.run();
  EXPECT_EQ(log.lines,
            (lines{"a cleanup starts", "c cleanup starts", "a cleanup done", "c cleanup done", "join threw X"}));
}

TEST(Join, ExceptionsThrownWhileSiblingsAreCancelledAreAttachedToTheFirst) {
  leaf_control<int> first, second(cancel_mode::async);
  executor ex{join(first.leaf(), second.leaf())};
  ex.poll_once();
  first.fail(std::make_exception_ptr(X()));
  ex.poll_once();
  EXPECT_EQ(second.state, leaf_state::cancelling);
  second.fail(std::make_exception_ptr(std::runtime_error("second failed too")));
  EXPECT_TRUE(ex.poll_once());
  try {
    ex.run();
    FAIL();
  } catch (const X&) {
    const auto extra = quell::attached_errors();
    ASSERT_EQ(extra.size(), 1u);
    EXPECT_EQ(quell::describe(extra[0]), "second failed too");
  }
}

TEST(Join, CancellingTheJoinCancelsEveryOperationAndWaitsForAll) {
  quell::test::log log;
  leaf_control<int> a(cancel_mode::async);
  executor ex{join(a.leaf(), on_cancel(pending<int>(), log.hook("b hook")))};
  ex.poll_once();
  ex.cancel();
  EXPECT_EQ(log.lines, (lines{"b hook"}));
  EXPECT_FALSE(ex.done());
  a.confirm_cancel();
  EXPECT_TRUE(ex.poll_once());
  EXPECT_THROW(ex.run(), quell::cancelled_error);
}

TEST(Join, IfEveryOperationCompletesAnywayDuringCancellationTheTupleIsDelivered) {
  leaf_control<int> a(cancel_mode::async), b(cancel_mode::async);
  executor ex{join(a.leaf(), b.leaf())};
  ex.poll_once();
  ex.cancel();
  a.complete(1);
  b.complete(2);
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(ex.run(), std::make_tuple(1, 2));
}

TEST(Join, AnOperationEndingCancelledOnItsOwnEndsTheJoinCancelled) {
  leaf_control<int> a(cancel_mode::async), b(cancel_mode::sync);
  executor ex{join(a.leaf(), b.leaf())};
  ex.poll_once();
  ex.cancel();  // a is cancelling, b cancelled at once
  a.complete(1);
  EXPECT_TRUE(ex.poll_once());
  EXPECT_THROW(ex.run(), quell::cancelled_error);
}

namespace {
struct reason_spy {
  std::vector<std::string>* seen;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  bool await_cancel(std::coroutine_handle<>, const quell::cancel_request& r) noexcept {
    seen->push_back(r.reason.describe());
    return true;
  }
  bool await_must_resume() const noexcept { return false; }
  int await_resume() const noexcept { return 0; }
};
}  // namespace

TEST(Join, EveryOperationOfACancelledJoinSeesTheJoinsReason) {
  std::vector<std::string> seen;
  executor ex{join(reason_spy{&seen}, reason_spy{&seen}, reason_spy{&seen})};
  ex.poll_once();
  ex.cancel(quell::cancel_reason(quell::cancel_kind::deadline));
  EXPECT_EQ(seen, (std::vector<std::string>{"deadline", "deadline", "deadline"}));
}

TEST(Join, ANeverStartedJoinStartsNothing) {
  leaf_control<int> a, b;
  {
    executor ex{join(a.leaf(), b.leaf())};
    ex.cancel();
    ex.poll_once();
  }
  EXPECT_EQ(a.starts + b.starts, 0);
}

TEST(JoinRange, YieldsAVectorInOrder) {
  std::vector<task<int>> ops;
  for (int i = 0; i < 5; ++i) ops.push_back(returns(i * i));
  EXPECT_EQ(quell::block_on(join(std::move(ops))), (std::vector<int>{0, 1, 4, 9, 16}));
}

TEST(JoinRange, AnEmptyRangeIsReadyAtOnce) { EXPECT_TRUE(quell::block_on(join(std::vector<task<int>>{})).empty()); }

TEST(JoinRange, TheFirstExceptionCancelsTheRest) {
  quell::test::log log;
  auto thrower = []() -> task<int> {
    co_await quell::yield();
    throw X();
  };
  // (a named lambda: the closure must outlive the coroutines it creates)
  auto waiter = [&](std::string name) -> task<int> {
    co_return co_await on_cancel(pending<int>(), log.hook(name + " cancelled"));
  };
  std::vector<task<int>> ops;
  ops.push_back(waiter("0"));
  ops.push_back(thrower());
  ops.push_back(waiter("2"));
  EXPECT_THROW(quell::block_on(join(std::move(ops))), X);
  EXPECT_EQ(log.lines, (lines{"0 cancelled", "2 cancelled"}));
}

TEST(JoinRange, VoidTasksYieldMonostates) {
  std::vector<task<>> ops;
  ops.push_back(nothing());
  ops.push_back(nothing());
  EXPECT_EQ(quell::block_on(join(std::move(ops))).size(), 2u);
}

// Seed: join of three where one fails after the other two have started their async cleanup.
TEST(Join, OfThreeWhereOneFailsAfterTheOthersStartedAsyncCleanupTheErrorComesOnlyAfterAllCleanups) {
  using namespace std::chrono_literals;
  quell::virtual_clock clock;
  quell::test::log log;
  auto ms = [&] {
    return std::to_string(
               std::chrono::duration_cast<std::chrono::milliseconds>(clock.now().time_since_epoch()).count()) +
           "ms";
  };
  auto worker = [&](std::string name, quell::duration work, quell::duration cleanup) -> task<int> {
    auto release = [&log, &ms, name, cleanup]() -> task<> {  // named: g++ 12 (docs/decisions.md)
      log.print(name + " cleanup starts at " + ms());
      co_await quell::sleep_for(cleanup);
      log.print(name + " cleanup done at " + ms());
    };
    co_await quell::defer(release);
    co_await quell::sleep_for(work);
    co_return 1;
  };
  auto failing = [&]() -> task<int> {
    co_await quell::sleep_for(3ms);
    log.print("c fails at " + ms());
    throw std::runtime_error("c failed");
  };
  auto body = [&]() -> task<> {
    try {
      co_await join(worker("a", 1ms, 5ms), worker("b", 2ms, 10ms), failing());
    } catch (const std::runtime_error& e) {
      log.print(std::string("join threw \"") + e.what() + "\" at " + ms());
    }
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"a cleanup starts at 1ms", "b cleanup starts at 2ms", "c fails at 3ms",
                              "a cleanup done at 6ms", "b cleanup done at 12ms", "join threw \"c failed\" at 12ms"}));
}

// ---- join_settled: every outcome, nothing cancelled by a failure -------------------------------

TEST(JoinSettled, EveryOutcomeIsKeptAndAFailureCancelsNoSibling) {
  leaf_control<int> slow;
  auto fails = []() -> task<int> {
    co_await quell::yield();
    throw X();
  };
  executor ex{quell::join_settled(fails(), slow.leaf(), returns(3), nothing())};
  ex.poll_once();
  ex.poll_once();  // `fails` has thrown: nothing is cancelled
  EXPECT_EQ(slow.state, leaf_state::waiting);
  slow.complete(2);
  EXPECT_TRUE(ex.poll_once());
  auto [a, b, c, d] = ex.run();
  EXPECT_TRUE(a.has_error());
  EXPECT_THROW(a.value(), X);
  EXPECT_EQ(b.value(), 2);
  EXPECT_EQ(c.value(), 3);
  EXPECT_TRUE(d.has_value());
  static_assert(std::is_same_v<decltype(d), quell::settled<void>>);
}

TEST(JoinSettled, AnOperationThatEndsCancelledOnItsOwnIsACancelledOutcome) {
  quell::cancel_source src;
  auto body = [&]() -> task<> {
    auto stop = [&]() -> task<int> {
      co_await quell::yield();
      src.cancel();
      co_return 5;
    };
    auto [watched, other] = co_await quell::join_settled(quell::with_cancellation(src.token(), pending<int>()), stop());
    EXPECT_TRUE(watched.cancelled());
    EXPECT_THROW(watched.value(), quell::cancelled_error);
    EXPECT_EQ(other.value(), 5);
  };
  quell::block_on(body());
}

TEST(JoinSettled, CancelledItCancelsEveryOperationAndEndsCancelledWhenAllOfThemDid) {
  quell::test::log log;
  executor ex{quell::join_settled(on_cancel(pending<int>(), log.hook("a")), on_cancel(pending<int>(), log.hook("b")))};
  ex.poll_once();
  ex.cancel();
  EXPECT_TRUE(ex.done());
  EXPECT_EQ(log.lines, (lines{"a", "b"}));
  EXPECT_THROW(ex.run(), quell::cancelled_error);
}

TEST(JoinSettled, CancelledItYieldsTheOutcomesWhenAnOperationCompletedAnyway) {
  leaf_control<int> a(cancel_mode::async), b(cancel_mode::sync);
  executor ex{quell::join_settled(a.leaf(), b.leaf())};
  ex.poll_once();
  ex.cancel();
  a.complete(1);  // completed anyway
  EXPECT_TRUE(ex.poll_once());
  auto [x, y] = ex.run();
  EXPECT_EQ(x.value(), 1);
  EXPECT_TRUE(y.cancelled());
}

TEST(JoinSettled, TheRangeFormKeepsEveryOutcomeInOrder) {
  auto maybe = [](int i) -> task<int> {
    co_await quell::yield();
    if (i % 2) throw X();
    co_return i;
  };
  std::vector<task<int>> ops;
  for (int i = 0; i < 5; ++i) ops.push_back(maybe(i));
  auto r = quell::block_on(quell::join_settled(std::move(ops)));
  ASSERT_EQ(r.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    if (i % 2) {
      EXPECT_TRUE(r[i].has_error());
    } else {
      EXPECT_EQ(r[i].value(), i);
    }
  }
  EXPECT_TRUE(quell::block_on(quell::join_settled(std::vector<task<int>>{})).empty());
}

TEST(JoinSettled, NeverStartedItStartsNothing) {
  leaf_control<int> a;
  auto body = [&]() -> task<> {
    co_await quell::this_task::checkpoint();
    co_await quell::join_settled(a.leaf());
  };
  executor ex{body()};
  ex.cancel();
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(a.starts, 0);
}
