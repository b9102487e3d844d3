// task_group: tasks owned by an object, closed with join() / cancel_and_join().
#include <gtest/gtest.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include "quell/quell.hpp"
#include "support/log.hpp"

using namespace std::chrono_literals;
using quell::executor;
using quell::on_cancel;
using quell::sleep_for;
using quell::task;
using quell::task_group;
using quell::virtual_clock;
using lines = std::vector<std::string>;
using quell::test::at;

namespace {
struct boom : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A server-like object holding its connections' tasks.
struct table {
  quell::test::log& log;
  virtual_clock& clock;
  task_group conns{};

  task<> serve(std::string name, quell::duration life) {
    // Named, not a temporary in the co_await: g++ 12 miscompiles that (docs/decisions.md).
    auto goodbye = [this, name]() -> task<> {
      co_await sleep_for(1ms);  // e.g. say goodbye to the peer
      log.print(name + " closed at " + at(clock));
    };
    co_await quell::defer(goodbye);
    co_await sleep_for(life);
  }
  void accept(std::string name, quell::duration life) { conns.spawn(serve(std::move(name), life)); }
};
}  // namespace

TEST(TaskGroup, JoinWaitsUntilEveryChildHasFinished) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    table t{log, clock};
    t.accept("a", 5ms);
    t.accept("b", 2ms);
    log.print(std::to_string(t.conns.running()) + " running");
    co_await t.conns.join();
    log.print("joined at " + at(clock));
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"2 running", "b closed at 3ms", "a closed at 6ms", "joined at 6ms"}));
}

TEST(TaskGroup, CancelAndJoinCancelsEveryChildAndWaitsForItsAsyncCleanup) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    table t{log, clock};
    t.accept("a", 1h);
    t.accept("b", 1h);
    co_await sleep_for(10ms);
    co_await t.conns.cancel_and_join(quell::cancel_reason(quell::cancel_kind::shutdown));
    log.print("closed at " + at(clock) + ", " + std::to_string(t.conns.running()) + " running");
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"a closed at 11ms", "b closed at 11ms", "closed at 11ms, 0 running"}));
}

TEST(TaskGroup, TheFirstChildErrorCancelsTheOthersAndJoinRethrowsItOnce) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    task_group g;
    auto failing = []() -> task<> {
      co_await sleep_for(1ms);
      throw boom("child failed");
    };
    g.spawn(on_cancel(sleep_for(1h), log.hook("sibling cancelled")));
    g.spawn(failing());
    try {
      co_await g.join();
    } catch (const boom& e) {
      log.print(std::string("join threw ") + e.what());
    }
    g.spawn(sleep_for(1ms));  // usable again; the error was collected
    co_await g.join();
    log.print("second join clean");
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"sibling cancelled", "join threw child failed", "second join clean"}));
}

TEST(TaskGroup, CancellingTheJoinerCancelsTheChildrenAndWaitsForThem) {
  virtual_clock clock;
  quell::test::log log;
  table* tp = nullptr;
  auto body = [&]() -> task<> {
    table t{log, clock};
    tp = &t;
    t.accept("a", 1h);
    co_await t.conns.join();
    log.print("never");
  };
  {
    executor ex{body(), clock};
    ex.poll_once();
    ex.cancel();
    EXPECT_THROW(ex.run(), quell::cancelled_error);
  }
  EXPECT_EQ(log.lines, (lines{"a closed at 1ms"}));
}

TEST(TaskGroup, ChildrenDoNotInheritTheSpawnersDeadline) {
  virtual_clock clock;
  std::vector<quell::time_point> seen;
  auto child = [&]() -> task<> {
    seen.push_back(quell::this_task::deadline());
    co_await sleep_for(20ms);  // outlives the spawner's deadline
    seen.push_back(quell::this_task::deadline());
  };
  auto body = [&]() -> task<> {
    task_group g;
    co_await quell::timeout(10ms, [&]() -> task<> {
      g.spawn(child());
      co_return;
    }());
    co_await g.join();
  };
  executor(body(), clock).run();
  EXPECT_EQ(seen, (std::vector<quell::time_point>{quell::time_point::max(), quell::time_point::max()}));
  EXPECT_EQ(at(clock), "20ms");
}

TEST(TaskGroupDeathTest, DestroyingAGroupWhileATaskRunsTerminatesNamingWhereItWasCreated) {
  auto body = []() -> task<> {
    task_group g;  // the message names this line
    g.spawn(quell::pending());
    co_return;  // g is destroyed with its child still running
  };
  EXPECT_DEATH(executor(body()).run(),
               "task_group created at .*test_task_group.cpp:[0-9]+.*1 task\\(s\\) still running");
}

// The last child's end resumes its handle's waiter first, which destroys the group while another
// task still waits in join(): that task would be left waiting on a group that no longer exists.
TEST(TaskGroupDeathTest, DestroyingAGroupWhileAnotherTaskWaitsInItsJoinTerminates) {
  quell::event go;
  task_group* shared = nullptr;
  auto child = [&]() -> task<> { co_await go.wait(); };
  auto owner = [&]() -> task<> {
    task_group g;
    shared = &g;
    auto h = g.spawn(child());
    co_await h;
  };  // g is destroyed here, running nothing, but joined by `joiner`
  auto joiner = [&]() -> task<> {
    co_await quell::yield();
    co_await shared->join();
  };
  auto setter = [&]() -> task<> {
    for (int i = 0; i < 3; ++i) co_await quell::yield();
    go.set();
  };
  EXPECT_DEATH(executor(quell::join(owner(), joiner(), setter())).run(),
               "destroyed while a task was waiting in its join");
}

TEST(TaskGroupDeathTest, DestroyingAGroupHoldingAnUncollectedErrorTerminates) {
  auto failing = []() -> task<> {
    co_await quell::this_task::checkpoint();  // (a co_await makes it a coroutine)
    throw boom("nobody joined");
  };
  auto body = [&]() -> task<> {
    task_group g;
    g.spawn(failing());
    co_return;
  };
  EXPECT_DEATH(executor(body()).run(), "error nobody collected \\(nobody joined\\)");
}

// Runs `owner` spawned into a scope, so that its frame (and a group in it) is freed as soon as it
// ends, beside `other`, the scope's body.
static void run_spawned_beside(task<> owner, task<> other) {
  auto body = [&]() -> task<> {
    co_await quell::with_scope([&](quell::scope& s) -> task<> {
      s.spawn(std::move(owner));
      co_await std::move(other);
    });
  };
  executor{body()}.run();
}

// A child's end resumes the task awaiting its handle at once; that task may join the group (nothing
// is left running) and destroy it before the call that ended the child has returned.
TEST(TaskGroup, ATaskResumedByAChildsEndMayDestroyTheGroupBeforeTheEndingCallReturns) {
  quell::test::log log;
  quell::event go;
  auto child = [&]() -> task<int> {
    co_await go.wait();
    co_return 7;
  };
  auto owner = [&]() -> task<> {
    {
      task_group g;
      auto h = g.spawn(child());
      log.print("handle: " + std::to_string(co_await h));
      co_await g.join();
    }
    log.print("group destroyed");
  };
  auto other = [&]() -> task<> {
    co_await quell::yield();
    go.set();
    log.print("other goes on");
  };
  run_spawned_beside(owner(), other());
  EXPECT_EQ(log.lines, (lines{"other goes on", "handle: 7", "group destroyed"}));
}

// The same when the child ends inside the group's cancel(): the walk over the children stops
// at once once the group is gone.
TEST(TaskGroup, ATaskResumedByAChildCancelledInsideCancelMayDestroyTheGroupBeforeCancelReturns) {
  quell::test::log log;
  quell::event never;
  task_group* shared = nullptr;
  struct says_when_gone {
    quell::test::log& log;
    ~says_when_gone() { log.print("owner's frame gone"); }
  };
  auto child = [&]() -> task<int> {
    co_await never.wait();
    co_return 7;
  };
  auto owner = [&]() -> task<> {
    says_when_gone bye{log};
    task_group g;  // destroyed before `bye`
    shared = &g;
    auto first = g.spawn(child());
    auto last = g.spawn(child());
    co_await last;  // the last child ends cancelled: so does this task, at once, destroying the group
    log.print("never");
  };
  auto other = [&]() -> task<> {
    co_await quell::yield();
    shared->cancel();  // the last child's end ends the owner inside this call
    log.print("cancel returned");
  };
  run_spawned_beside(owner(), other());
  EXPECT_EQ(log.lines, (lines{"owner's frame gone", "cancel returned"}));
}

// cancel_and_join() from a task that does not own the group: its cancel ends the last child, whose
// handle's waiter (the owner) ends at once and destroys the group. Nothing is left to join.
TEST(TaskGroup, CancelAndJoinReturnsWhenItsCancelLetTheOwnerDestroyTheGroup) {
  quell::test::log log;
  quell::event never;
  task_group* shared = nullptr;
  auto child = [&]() -> task<> { co_await never.wait(); };
  auto owner = [&]() -> task<> {
    task_group g;
    shared = &g;
    auto h = g.spawn(child());
    co_await h;  // ends cancelled with its child, destroying g
  };
  auto closer = [&]() -> task<> {
    co_await quell::yield();
    co_await shared->cancel_and_join();
    log.print("joined");
  };
  run_spawned_beside(owner(), closer());
  EXPECT_EQ(log.lines, (lines{"joined"}));
}
