// task_set<T> and with_task_set: results in completion order, exceptions through next(), and
// every way of closing it.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "quell/quell.hpp"
#include "quell/testing.hpp"
#include "support/log.hpp"

using namespace std::chrono_literals;
using quell::executor;
using quell::sleep_for;
using quell::task;
using quell::task_set;
using quell::virtual_clock;
using quell::testing::ledger;
using lines = std::vector<std::string>;

namespace {
struct boom : std::runtime_error {
  using std::runtime_error::runtime_error;
};
task<int> after(quell::duration d, int v) {
  co_await sleep_for(d);
  co_return v;
}
task<int> fails_after(quell::duration d, const char* what) {
  co_await sleep_for(d);
  throw boom(what);
}
}  // namespace

TEST(TaskSet, ResultsComeInCompletionOrderThenNulloptOnceClosedAndDrained) {
  virtual_clock clock;
  std::vector<int> got;
  auto body = [&]() -> task<> {
    task_set<int> set;
    set.spawn(after(3ms, 3));
    set.spawn(after(1ms, 1));
    set.spawn(after(2ms, 2));
    set.close();
    while (auto v = co_await set.next()) got.push_back(*v);
    EXPECT_EQ(set.running(), 0u);
  };
  executor(body(), clock).run();
  EXPECT_EQ(got, (std::vector<int>{1, 2, 3}));
}

TEST(TaskSet, AnExceptionIsThrownByTheNextThatTakesItAndCancelsNoOtherMember) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    task_set<int> set;
    set.spawn(fails_after(1ms, "member failed"));
    set.spawn(after(2ms, 2));
    set.close();
    try {
      co_await set.next();
    } catch (const boom& e) {
      log.print(std::string(e.what()) + " at " + quell::test::at(clock));
    }
    auto v = co_await set.next();
    log.print("then " + std::to_string(v.value()) + " at " + quell::test::at(clock));
    EXPECT_FALSE(co_await set.next());
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"member failed at 1ms", "then 2 at 2ms"}));
}

TEST(TaskSet, AMemberThatEndsCancelledYieldsNothingAndVoidMembersYieldTrue) {
  quell::cancel_source src;
  auto body = [&]() -> task<> {
    task_set<> set;
    set.spawn(quell::with_cancellation(src.token(), quell::pending()));
    set.spawn([]() -> task<> { co_await quell::yield(); });
    set.close();
    EXPECT_TRUE(co_await set.next());
    src.cancel();
    EXPECT_FALSE(co_await set.next());  // the cancelled member was skipped: the set is drained
  };
  quell::block_on(body());
}

TEST(TaskSet, MembersMayBeAddedWhileANextWaitsAndSpawnAfterCloseIsALogicError) {
  virtual_clock clock;
  auto body = [&]() -> task<> {
    task_set<int> set;
    auto adder = [&]() -> task<> {
      co_await sleep_for(1ms);
      set.spawn(after(1ms, 7));
    };
    auto [v, added] = co_await quell::join(set.next(), adder());
    (void)added;
    EXPECT_EQ(v.value(), 7);
    set.close();
    EXPECT_THROW(set.spawn(after(1ms, 8)), std::logic_error);
    EXPECT_FALSE(co_await set.next());
  };
  executor(body(), clock).run();
}

TEST(TaskSet, CancellingATaskWaitingInNextCancelsNothingInTheSet) {
  virtual_clock clock;
  auto body = [&]() -> task<> {
    task_set<int> set;
    set.spawn(after(5ms, 5));
    auto r = co_await quell::move_on_after(1ms, set.next());
    EXPECT_FALSE(r.has_value());
    EXPECT_EQ(set.running(), 1u);
    set.close();
    auto v = co_await set.next();
    EXPECT_EQ(v.value(), 5);
  };
  executor(body(), clock).run();
}

TEST(TaskSet, AResultHandedToANextCancelledBeforeItResumedGoesBackToTheFront) {
  auto body = [&]() -> task<> {
    task_set<int> set;
    bool ran_on = false;
    auto taker = [&]() -> task<> {
      auto v = co_await set.next();
      ran_on = true;  // must not run: the race was decided before it resumed
      (void)v;
    };
    auto finisher = [&]() -> task<int> {
      co_await quell::yield();  // the next() is waiting by now
      set.spawn([]() -> task<int> { co_return 9; });  // ends at once: handed to the next()
      co_return 0;                                    // and this branch wins before it resumes
    };
    co_await quell::race(taker(), finisher());
    EXPECT_FALSE(ran_on);
    EXPECT_EQ(set.ready(), 1u);
    set.close();
    EXPECT_EQ((co_await set.next()).value(), 9);
  };
  quell::block_on(body());
}

TEST(TaskSet, CancelAndJoinCancelsEveryMemberWaitsForItsCleanupAndThrowsAnExceptionNobodyTook) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    task_set<int> set;
    auto slow_cleanup = [&]() -> task<> {
      co_await sleep_for(2ms);
      log.print("cleanup done at " + quell::test::at(clock));
    };
    set.spawn(quell::on_cancel(after(1h, 1), slow_cleanup));
    set.spawn(after(1ms, 2));  // finishes, never taken: dropped
    co_await sleep_for(1ms);
    co_await set.cancel_and_join();
    log.print("joined at " + quell::test::at(clock));
    EXPECT_TRUE(set.closed());

    task_set<int> failing;
    failing.spawn(fails_after(1ms, "nobody took this"));
    co_await sleep_for(2ms);
    try {
      co_await failing.cancel_and_join();
    } catch (const boom& e) {
      log.print(e.what());
    }
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"cleanup done at 3ms", "joined at 3ms", "nobody took this"}));
}

TEST(TaskSet, WithTaskSetClosesTheSetHoweverTheBodyEnds) {
  virtual_clock clock;
  quell::test::log log;
  auto member = [&](int id) -> task<int> {
    auto hook = [&log, id] { log.print("member " + std::to_string(id) + " cancelled"); };
    co_await quell::on_cancel(sleep_for(1h), hook);
    co_return id;
  };
  auto body = [&]() -> task<> {
    // Returns while a member runs: it is cancelled and awaited before with_task_set returns.
    int first = co_await quell::with_task_set<int>([&](task_set<int>& s) -> task<int> {
      s.spawn(after(1ms, 1));
      s.spawn(member(2));
      co_return (co_await s.next()).value();
    });
    log.print("first " + std::to_string(first));
    // Throws: the same, and the body's exception comes out.
    try {
      co_await quell::with_task_set<int>([&](task_set<int>& s) -> task<> {
        s.spawn(member(3));
        co_await sleep_for(1ms);
        throw boom("body failed");
      });
    } catch (const boom& e) {
      log.print(e.what());
    }
    // Cancelled (a deadline): the same.
    auto r = co_await quell::move_on_after(1ms, quell::with_task_set<int>([&](task_set<int>& s) -> task<> {
                                              s.spawn(member(4));
                                              co_await s.next();
                                            }));
    log.print(r ? "not cancelled" : "moved on");
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines,
            (lines{"member 2 cancelled", "first 1", "member 3 cancelled", "body failed", "member 4 cancelled", "moved on"}));
}

TEST(TaskSetDeathTest, DestroyingASetWhileAMemberRunsTerminatesNamingWhereItWasCreated) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto body = []() -> task<> {
    task_set<int> set;
    set.spawn(after(1h, 1));
    co_return;
  };
  EXPECT_DEATH(quell::block_on(body()), "task_set created at .*test_task_set.cpp.*still running");
}

TEST(TaskSet, CancelledAnywhereEveryMemberEndsAndEveryCleanupRunsOnce) {
  std::unique_ptr<ledger> l;
  auto report = quell::testing::cancel_sweep(
      [&](virtual_clock&) -> task<> {
        l = std::make_unique<ledger>();
        return [](ledger& lg) -> task<> {
          auto member = [&lg](int id) -> task<int> {
            ledger::hold frame(lg, "member " + std::to_string(id));
            auto hook = [&lg, id]() -> task<> {
              ledger::hold h(lg, "hook " + std::to_string(id));
              co_await sleep_for(1ms);
            };
            co_await quell::on_cancel(sleep_for(std::chrono::milliseconds(id)), hook);
            co_return id;
          };
          int sum = co_await quell::with_task_set<int>([&](task_set<int>& s) -> task<int> {
            for (int i = 1; i <= 3; ++i) s.spawn(member(i));
            s.close();
            int total = 0;
            while (auto v = co_await s.next()) total += *v;
            co_return total;
          });
          if (sum != 6) throw std::logic_error("sum " + std::to_string(sum));
        }(*l);
      },
      [&](const quell::testing::sweep_point& p) {
        l->expect_balanced();
        if (p.outcome == quell::testing::sweep_point::ended::error) std::rethrow_exception(p.error);
      });
  EXPECT_GT(report.points, 4u);
}
