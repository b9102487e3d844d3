// shield(op) and shield(op, max), on the virtual clock.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "quell/quell.hpp"
#include "support/log.hpp"

using namespace std::chrono_literals;
using quell::executor;
using quell::on_cancel;
using quell::shield;
using quell::sleep_for;
using quell::task;
using quell::virtual_clock;
using lines = std::vector<std::string>;
using quell::test::at;

TEST(Shield, AShieldedOperationIgnoresAGracefulCancelAndTheTaskEndsAtItsNextSuspension) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    co_await shield(on_cancel(sleep_for(10ms), log.hook("shielded op cancelled")));
    log.print("shielded sleep done at " + at(clock));
    co_await sleep_for(1ms);
    log.print("never");
  };
  executor ex{body(), clock};
  ex.poll_once();
  ex.cancel();
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_EQ(log.lines, (lines{"shielded sleep done at 10ms"}));
}

TEST(Shield, AGracefulCancelPendingBeforeTheShieldStartsDoesNotStopIt) {
  quell::test::log log;
  auto body = [&]() -> task<> {
    co_await quell::this_task::checkpoint();
    co_await shield(log.say("shielded ran"));
  };
  executor ex{body()};
  ex.cancel();  // before the first turn: the root never starts, so nothing runs
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_EQ(log.lines, lines{});

  auto body2 = [&]() -> task<> {
    co_await shield(sleep_for(1ms));                // completes despite the cancel below
    co_await shield(log.say("second shield ran"));  // the cancel is already pending: still runs
    log.print("between");                           // no suspension point since the shield: this still runs
    co_await quell::this_task::checkpoint();
    log.print("never");
  };
  executor ex2{body2()};
  ex2.poll_once();
  ex2.cancel();
  EXPECT_THROW(ex2.run(), quell::cancelled_error);
  EXPECT_EQ(log.lines, (lines{"second shield ran", "between"}));
}

TEST(Shield, ABoundedShieldCancelsItsOperationWhenTheBoundExpires) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    co_await sleep_for(5ms);
    co_await shield(on_cancel(sleep_for(1h), [&] { log.print("bound expired at " + at(clock)); }), 20ms);
    log.print("never");
  };
  executor ex{body(), clock};
  ex.poll_once();
  clock.advance(5ms);
  ex.poll_once();
  clock.advance(3ms);
  ex.cancel();  // at 8ms: the bound runs until 28ms
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_EQ(log.lines, (lines{"bound expired at 28ms"}));
}

TEST(Shield, ABoundedShieldWhoseOperationFinishesInTimeDeliversItsResult) {
  virtual_clock clock;
  auto work = []() -> task<int> {
    co_await sleep_for(10ms);
    co_return 5;
  };
  int got = 0;
  auto body = [&]() -> task<> { got = co_await shield(work(), 20ms); };
  executor ex{body(), clock};
  ex.poll_once();
  ex.cancel();
  ex.run();  // no suspension point after the shield: the root completes anyway
  EXPECT_EQ(got, 5);
}

TEST(Shield, AForcedCancelReachesAShieldedOperation) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    co_await shield(on_cancel(sleep_for(1h), [&] { log.print("forced through at " + at(clock)); }));
  };
  executor ex{body(), clock};
  ex.poll_once();
  ex.cancel();
  clock.advance(7ms);
  ex.poll_once();
  EXPECT_EQ(log.lines, lines{});
  ex.force_cancel();
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_EQ(log.lines, (lines{"forced through at 7ms"}));
}

TEST(Shield, UnshieldingDeliversAHeldBackCancelToAnAlreadyBlockedWaiter) {
  virtual_clock clock;
  quell::test::log log;
  auto guarded = shield(on_cancel(sleep_for(1h), [&] { log.print("blocked waiter cancelled at " + at(clock)); }));
  auto lifter = [&]() -> task<> {
    co_await shield(sleep_for(10ms));  // outlives the cancel below
    log.print("lifting the shield at " + at(clock));
    guarded.unshield();
  };
  executor ex{quell::join(guarded, lifter()), clock};
  ex.poll_once();
  ex.cancel();
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_EQ(log.lines, (lines{"lifting the shield at 10ms", "blocked waiter cancelled at 10ms"}));
}

TEST(Shield, UnshieldingBeforeAnyCancelLetsLaterRequestsThrough) {
  quell::test::log log;
  auto guarded = shield(on_cancel(quell::pending(), log.hook("cancelled")));
  guarded.unshield();
  executor ex{guarded};
  ex.poll_once();
  ex.cancel();
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_EQ(log.lines, (lines{"cancelled"}));
}
