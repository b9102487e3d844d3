// race against sync cancel, async cancel and completion during cancel; result types; errors.
#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "quell/quell.hpp"
#include "support/log.hpp"
#include "support/test_leaf.hpp"

using quell::executor;
using quell::on_cancel;
using quell::pending;
using quell::race;
using quell::task;
using quell::test::cancel_mode;
using quell::test::leaf_control;
using quell::test::leaf_state;
using lines = std::vector<std::string>;

namespace {
task<int> returns(int v) { co_return v; }
task<std::string> says(std::string s) { co_return s; }
struct X : std::runtime_error {
  X() : std::runtime_error("X") {}
};
}  // namespace

TEST(Race, SameTypesYieldThatType) {
  static_assert(std::is_same_v<decltype(quell::block_on(race(returns(1), pending<int>()))), int>);
  EXPECT_EQ(quell::block_on(race(returns(1), pending<int>())), 1);
}

TEST(Race, MixedTypesYieldAVariantIndexedByArgument) {
  auto r = quell::block_on(race(pending<int>(), says("b"), quell::pending<void>()));
  static_assert(std::is_same_v<decltype(r), std::variant<int, std::string, std::monostate>>);
  ASSERT_EQ(r.index(), 1u);
  EXPECT_EQ(std::get<1>(r), "b");
}

TEST(Race, AVariantKeepsTheWinnersIndexEvenWithRepeatedTypes) {
  leaf_control<int> a, b;
  executor ex{race(a.leaf(), says("never"), b.leaf())};
  ex.poll_once();
  EXPECT_EQ(a.state, leaf_state::cancelled);  // says() won at once; the others were cancelled
  EXPECT_EQ(std::get<1>(ex.run()), "never");
}

TEST(Race, MoveOnlyValuesWin) {
  auto boxed = []() -> task<std::unique_ptr<int>> { co_return std::make_unique<int>(5); };
  EXPECT_EQ(*quell::block_on(race(boxed(), pending<std::unique_ptr<int>>())), 5);
}

TEST(Race, EveryBranchIsStartedEvenIfAnEarlierOneFinishesAtOnce) {
  leaf_control<int> c;
  executor ex{race(returns(1), c.leaf())};
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(c.starts, 1);
  EXPECT_EQ(c.cancel_calls, 1);
}

TEST(Race, ASyncCancellingLoserEndsTheRaceInTheSameTurn) {
  leaf_control<int> winner, loser(cancel_mode::sync);
  executor ex{race(winner.leaf(), loser.leaf())};
  ex.poll_once();
  winner.complete(3);
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(loser.state, leaf_state::cancelled);
  EXPECT_EQ(ex.run(), 3);
}

TEST(Race, AnAsyncCancellingLoserIsAwaitedBeforeTheRaceReturns) {
  leaf_control<int> winner, loser(cancel_mode::async);
  executor ex{race(winner.leaf(), loser.leaf())};
  ex.poll_once();
  winner.complete(3);
  EXPECT_FALSE(ex.poll_once());
  EXPECT_EQ(loser.state, leaf_state::cancelling);
  EXPECT_FALSE(ex.poll_once());
  loser.confirm_cancel();
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(ex.run(), 3);
}

TEST(Race, ALoserCompletingDuringItsCancelDoesNotChangeTheWinner) {
  leaf_control<int> winner, loser(cancel_mode::async);
  executor ex{race(winner.leaf(), loser.leaf())};
  ex.poll_once();
  winner.complete(3);
  ex.poll_once();
  loser.complete(4);  // completed anyway: its value is discarded, the winner stands
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(ex.run(), 3);
}

TEST(Race, CancellingTheRaceCancelsEveryBranchAndEndsCancelled) {
  leaf_control<int> a(cancel_mode::sync), b(cancel_mode::async);
  executor ex{race(a.leaf(), b.leaf())};
  ex.poll_once();
  ex.cancel();
  EXPECT_EQ(a.state, leaf_state::cancelled);
  EXPECT_EQ(b.state, leaf_state::cancelling);
  EXPECT_FALSE(ex.done());
  b.confirm_cancel();
  EXPECT_TRUE(ex.poll_once());
  EXPECT_THROW(ex.run(), quell::cancelled_error);
}

TEST(Race, ABranchCompletingAnywayWhileTheRaceIsCancelledIsDelivered) {
  leaf_control<int> a(cancel_mode::sync), b(cancel_mode::async);
  executor ex{race(a.leaf(), b.leaf())};
  ex.poll_once();
  ex.cancel();
  b.complete(9);
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(ex.run(), 9);
}

TEST(Race, AForcedRequestReachesLosersRunningHooks) {
  quell::test::log log;
  auto stubborn_hook = [&]() -> task<> {
    log.print("loser hook waits");
    co_await on_cancel(pending(), log.hook("loser hook cancelled"));
  };
  executor ex{race(returns(1), on_cancel(pending<int>(), stubborn_hook()))};
  EXPECT_FALSE(ex.poll_once());
  ex.force_cancel();
  EXPECT_TRUE(ex.done());
  EXPECT_EQ(ex.run(), 1);  // the winner was decided before the forced request: completion wins
  EXPECT_EQ(log.lines, (lines{"loser hook waits", "loser hook cancelled"}));
}

TEST(Race, AnExceptionBeatsAValueAndLaterExceptionsAreAttached) {
  leaf_control<int> winner, loser(cancel_mode::async);
  executor ex{race(winner.leaf(), loser.leaf())};
  ex.poll_once();
  winner.fail(std::make_exception_ptr(X()));
  ex.poll_once();
  loser.fail(std::make_exception_ptr(std::runtime_error("loser failed while cancelling")));
  EXPECT_TRUE(ex.poll_once());
  try {
    ex.run();
    FAIL();
  } catch (const X&) {
    const auto extra = quell::attached_errors();
    ASSERT_EQ(extra.size(), 1u);
    EXPECT_EQ(quell::describe(extra[0]), "loser failed while cancelling");
  }
}

TEST(Race, ALoserThrowingWhileCancelledTurnsTheResultIntoThatException) {
  leaf_control<int> winner, loser(cancel_mode::async);
  executor ex{race(winner.leaf(), loser.leaf())};
  ex.poll_once();
  winner.complete(1);
  ex.poll_once();
  loser.fail(std::make_exception_ptr(X()));
  EXPECT_TRUE(ex.poll_once());
  EXPECT_THROW(ex.run(), X);
}

TEST(Race, ANeverStartedRaceStartsNothing) {
  leaf_control<int> a, b;
  {
    executor ex{race(a.leaf(), b.leaf())};
    ex.cancel();
    EXPECT_TRUE(ex.poll_once());
  }
  EXPECT_EQ(a.starts + b.starts, 0);
}

TEST(Race, NestedRacesCancelInnerLosersToo) {
  quell::test::log log;
  executor ex{race(race(on_cancel(pending<int>(), log.hook("inner loser")), pending<int>()), returns(2))};
  EXPECT_EQ(ex.run(), 2);
  EXPECT_EQ(log.lines, (lines{"inner loser"}));
}

TEST(Race, AcceptsAnyAwaitableNotOnlyTasks) {
  quell::test::unaware_leaf u;
  executor ex{race(u, pending<int>())};
  ex.poll_once();
  u.complete(6);
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(ex.run(), 6);
}

// ---- any_of: race's start, decision and waiting, keeping every value ------------------------------

TEST(AnyOf, TheWinnerAndALoserThatCompletedWhileBeingCancelledAreBothKept) {
  leaf_control<int> winner, loser(cancel_mode::async);
  executor ex{quell::any_of(winner.leaf(), loser.leaf())};
  ex.poll_once();
  winner.complete(1);
  EXPECT_FALSE(ex.poll_once());
  EXPECT_EQ(loser.state, leaf_state::cancelling);
  loser.complete(2);  // completed anyway
  EXPECT_TRUE(ex.poll_once());
  auto [a, b] = ex.run();
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 2);
}

TEST(AnyOf, ALoserThatEndsCancelledLeavesItsSlotEmptyAndAVoidBranchIsABool) {
  leaf_control<int> loser(cancel_mode::async);
  auto void_branch = []() -> task<> { co_return; };
  executor ex{quell::any_of(loser.leaf(), void_branch())};
  static_assert(std::is_same_v<decltype(ex.run()), std::tuple<std::optional<int>, bool>>);
  ex.poll_once();
  EXPECT_EQ(loser.state, leaf_state::cancelling);
  loser.confirm_cancel();
  EXPECT_TRUE(ex.poll_once());
  auto [a, b] = ex.run();
  EXPECT_FALSE(a.has_value());
  EXPECT_TRUE(b);
}

TEST(AnyOf, BranchesThatCompleteAtOnceAfterTheWinnerAreKeptNotDropped) {
  auto r = quell::block_on(quell::any_of(returns(1), says("two"), quell::ready(3)));
  EXPECT_EQ(std::get<0>(r), 1);
  EXPECT_EQ(std::get<1>(r), "two");
  EXPECT_EQ(std::get<2>(r), 3);
}

TEST(AnyOf, AnExceptionIsThrownOnceEveryLoserHasFinishedItsCleanup) {
  quell::test::log log;
  auto fails = []() -> task<int> {
    co_await quell::yield();
    throw X();
  };
  auto body = [&]() -> task<> {
    try {
      co_await quell::any_of(fails(), on_cancel(pending<int>(), log.hook("loser's hook")));
    } catch (const X&) {
      log.print("caught X");
    }
  };
  quell::block_on(body());
  EXPECT_EQ(log.lines, (lines{"loser's hook", "caught X"}));
}

TEST(AnyOf, ALosersExceptionWhileBeingCancelledBeatsTheValues) {
  leaf_control<int> winner, loser(cancel_mode::async);
  executor ex{quell::any_of(winner.leaf(), loser.leaf())};
  ex.poll_once();
  winner.complete(1);
  ex.poll_once();
  loser.fail(std::make_exception_ptr(X()));
  EXPECT_TRUE(ex.poll_once());
  EXPECT_THROW(ex.run(), X);
}

TEST(AnyOf, CancelledBeforeItStartsItStartsNothing) {
  leaf_control<int> a, b;
  auto body = [&]() -> task<> {
    co_await quell::this_task::checkpoint();  // cancelled here, before any_of starts
    co_await quell::any_of(a.leaf(), b.leaf());
  };
  executor ex{body()};
  ex.cancel();
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(a.starts + b.starts, 0);
}

TEST(AnyOf, CancelledWhileRunningItEndsCancelledIfEveryBranchDidAndYieldsWhatCompletedOtherwise) {
  {
    leaf_control<int> a(cancel_mode::sync), b(cancel_mode::sync);
    executor ex{quell::any_of(a.leaf(), b.leaf())};
    ex.poll_once();
    ex.cancel();
    EXPECT_TRUE(ex.done());
    EXPECT_THROW(ex.run(), quell::cancelled_error);
  }
  {
    leaf_control<int> a(cancel_mode::sync), b(cancel_mode::async);
    executor ex{quell::any_of(a.leaf(), b.leaf())};
    ex.poll_once();
    ex.cancel();
    b.complete(7);  // completed anyway
    EXPECT_TRUE(ex.poll_once());
    auto [x, y] = ex.run();
    EXPECT_FALSE(x.has_value());
    EXPECT_EQ(y, 7);
  }
}

TEST(AnyOf, ACancelAfterItCompletedReachesNothingInIt) {
  quell::test::log log;
  auto body = [&]() -> task<> {
    auto r = co_await quell::any_of(returns(1), on_cancel(pending<int>(), log.hook("hook")));
    log.print("got " + std::to_string(*std::get<0>(r)));
    co_await pending();  // cancelled here
  };
  executor ex{body()};
  ex.poll_once();
  ex.cancel();
  EXPECT_TRUE(ex.done());
  EXPECT_EQ(log.lines, (lines{"hook", "got 1"}));
}
