// executor: turns, run, cancel, destruction, stuck detection, yield, poll_fn, and shutdown with a
// grace period on the executor's clock.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "quell/quell.hpp"
#include "support/log.hpp"
#include "support/test_leaf.hpp"

using namespace std::chrono_literals;
using quell::executor;
using quell::on_cancel;
using quell::pending;
using quell::sleep_for;
using quell::task;
using quell::virtual_clock;
using lines = std::vector<std::string>;

TEST(Executor, TheFirstTurnStartsTheRootAndRunsItUntilItWaits) {
  quell::test::log log;
  auto body = [&]() -> task<> {
    log.print("turn 1");
    co_await quell::yield();
    log.print("turn 2");
    co_await quell::yield();
    log.print("turn 3");
  };
  executor ex{body()};
  EXPECT_TRUE(log.lines.empty());  // constructing runs nothing
  EXPECT_FALSE(ex.poll_once());
  EXPECT_EQ(log.lines, (lines{"turn 1"}));
  EXPECT_FALSE(ex.poll_once());
  EXPECT_TRUE(ex.poll_once());
  EXPECT_TRUE(ex.poll_once());  // finished: stays finished
  EXPECT_EQ(log.lines, (lines{"turn 1", "turn 2", "turn 3"}));
}

TEST(Executor, YieldLetsEveryOtherReadyBranchRunFirst) {
  quell::test::log log;
  auto worker = [&](std::string name) -> task<int> {
    for (int i = 0; i < 3; ++i) {
      log.print(name + std::to_string(i));
      co_await quell::yield();
    }
    co_return 0;
  };
  executor ex{quell::race(worker("a"), worker("b"))};
  ex.run();
  EXPECT_EQ(log.lines, (lines{"a0", "b0", "a1", "b1", "a2", "b2"}));
}

TEST(Executor, PollFnIsCalledOncePerTurnUntilItHasAValue) {
  int calls = 0;
  executor ex{quell::poll_fn([&]() -> std::optional<int> {
    ++calls;
    if (calls == 3) return 30;
    return std::nullopt;
  })};
  EXPECT_FALSE(ex.poll_once());
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(ex.poll_once());
  EXPECT_EQ(calls, 2);
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(ex.run(), 30);
}

TEST(Executor, PollFnThatThrowsEndsWithTheException) {
  int calls = 0;
  executor ex{quell::poll_fn([&]() -> bool {
    if (++calls == 2) throw std::runtime_error("poll failed");
    return false;
  })};
  EXPECT_THROW(ex.run(), std::runtime_error);
  EXPECT_EQ(calls, 2);
}

TEST(Executor, CancellingAPollFnStopsCallingIt) {
  int calls = 0;
  executor ex{quell::poll_fn([&] {
    ++calls;
    return false;
  })};
  ex.poll_once();
  ex.cancel();
  EXPECT_TRUE(ex.done());
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(calls, 1);
}

TEST(Executor, RunOnARootThatCanNeverFinishThrowsStuckErrorNamingTheTasks) {
  auto forever = []() -> task<int> {
    co_await pending();
    co_return 1;
  };
  executor ex{forever()};
  try {
    ex.run();
    FAIL() << "expected stuck_error";
  } catch (const quell::stuck_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("nothing can make progress"), std::string::npos) << what;
    EXPECT_NE(what.find("test_executor.cpp"), std::string::npos) << what;
  }
}

// Suspends once, then finishes; its frame stays alive while its handle holds the value.
static task<int> finished_helper_with_a_held_value() {
  co_await quell::yield();
  co_return 7;
}

static task<> waits_forever() { co_await pending(); }

// The registry keeps a task from its first suspension until its frame is destroyed (cheaper than
// joining and leaving it at every suspension); a report must still name only the tasks waiting now.
TEST(Executor, StuckReportNamesTheWaitingTasksButNotAFinishedTaskWhoseFrameIsStillHeld) {
  auto root = []() -> task<int> {
    co_return co_await quell::with_scope([](quell::scope& s) -> task<int> {
      auto done = s.spawn(finished_helper_with_a_held_value);
      co_await quell::yield();
      co_await quell::yield();  // the helper has finished; `done` still holds its frame
      co_await waits_forever();
      co_return co_await done;
    });
  };
  executor ex{root()};
  try {
    ex.run();
    FAIL() << "expected stuck_error";
  } catch (const quell::stuck_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("waits_forever"), std::string::npos) << what;
    EXPECT_EQ(what.find("finished_helper_with_a_held_value"), std::string::npos) << what;
  }
}

TEST(Executor, DestructionEscalatesToForcedWhenAGracefulCancellationCannotFinish) {
  quell::test::log log;
  auto stubborn_hook = [&]() -> task<> {
    log.print("hook waits for something that never comes");
    co_await on_cancel(pending(), log.hook("hook cancelled by the forced request"));
  };
  {
    executor ex{on_cancel(pending(), stubborn_hook())};
    ex.poll_once();
  }
  EXPECT_EQ(log.lines, (lines{"hook waits for something that never comes", "hook cancelled by the forced request"}));
}

TEST(Executor, CancelBetweenTurnsRunsHooksAtOnce) {
  quell::test::log log;
  executor ex{on_cancel(pending(), log.hook("hook"))};
  ex.poll_once();
  ex.cancel();
  EXPECT_EQ(log.lines, (lines{"hook"}));
  EXPECT_TRUE(ex.done());
}

TEST(Executor, TheRootMayBeAnyAwaitable) {
  quell::test::unaware_leaf u;
  executor ex{u};
  ex.poll_once();
  u.complete(5);
  EXPECT_EQ(ex.run(), 5);
}

TEST(Executor, BlockOnNestsInsideARunningTask) {
  auto inner = []() -> task<int> {
    co_await quell::yield();
    co_return 2;
  };
  auto outer = [&]() -> task<int> {
    co_await quell::yield();
    const int v = quell::block_on(inner());
    co_await quell::yield();
    co_return v + 1;
  };
  EXPECT_EQ(quell::block_on(outer()), 3);
}

TEST(Executor, TheCancelReasonOfTheRootIsReportedByRun) {
  executor ex{pending<int>()};
  ex.poll_once();
  ex.cancel(quell::cancel_reason(quell::cancel_kind::requested, "operator said stop"));
  try {
    ex.run();
    FAIL();
  } catch (const quell::cancelled_error& e) {
    EXPECT_NE(std::string(e.what()).find("operator said stop"), std::string::npos) << e.what();
  }
}

TEST(Shutdown, AGracePeriodEscalatesToForcedOnTheExecutorsClock) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    co_await on_cancel(quell::pending(), [&]() -> task<> {
      log.print("cleanup started");
      co_await on_cancel(sleep_for(1h), log.hook("cleanup forced"));
    }());
  };
  executor ex{body(), clock};
  ex.poll_once();
  const auto t0 = clock.now();
  ex.shutdown(5s);
  EXPECT_TRUE(ex.done());
  EXPECT_EQ(clock.now() - t0, 5s);
  EXPECT_EQ(log.lines, (lines{"cleanup started", "cleanup forced"}));
}

TEST(Shutdown, ACleanupThatFinishesInTimeIsNotForced) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    co_await on_cancel(quell::pending(), [&]() -> task<> {
      co_await on_cancel(sleep_for(1s), log.hook("forced"));
      log.print("cleanup done");
    }());
  };
  executor ex{body(), clock};
  ex.poll_once();
  ex.shutdown(5s);
  EXPECT_EQ(log.lines, (lines{"cleanup done"}));
}

// Like cancel() before the first turn: the request waits for the root, which then never runs.
TEST(Shutdown, AShutdownBeforeTheRootStartedMeansItNeverRuns) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    log.print("body ran");
    co_return;
  };
  executor ex{body(), clock};
  ex.shutdown(5s);
  try {
    ex.run();
    ADD_FAILURE() << "the root should have ended cancelled";
  } catch (const quell::cancelled_error& e) {
    EXPECT_NE(std::string(e.what()).find("shutdown"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(log.lines.empty());
}
