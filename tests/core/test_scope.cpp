// with_scope (nursery): spawn, handles, start()/started(), and the Trio rules on small programs.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "quell/quell.hpp"
#include "support/log.hpp"

using namespace std::chrono_literals;
using quell::executor;
using quell::on_cancel;
using quell::scope;
using quell::sleep_for;
using quell::task;
using quell::virtual_clock;
using quell::with_scope;
using lines = std::vector<std::string>;
using quell::test::at;

namespace {
struct boom : std::runtime_error {
  using std::runtime_error::runtime_error;
};
task<int> value_after(quell::duration d, int v) {
  co_await sleep_for(d);
  co_return v;
}
}  // namespace

TEST(Scope, WaitsForEveryChildAndYieldsTheBodysValue) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<int> {
    int r = co_await with_scope([&](scope& s) -> task<int> {
      auto a = s.spawn(value_after(5ms, 1));
      // The callable form: the scope keeps the lambda (and its by-value capture) alive.
      s.spawn([&log, &clock, what = std::string("unawaited child")]() -> task<> {
        co_await sleep_for(20ms);
        log.print(what + " done at " + at(clock));
      });
      co_return co_await a + 10;
    });
    log.print("scope returned " + std::to_string(r) + " at " + at(clock));
    co_return r;
  };
  EXPECT_EQ(executor(body(), clock).run(), 11);
  EXPECT_EQ(log.lines, (lines{"unawaited child done at 20ms", "scope returned 11 at 20ms"}));
}

TEST(Scope, TheFirstErrorCancelsTheOtherMembersWaitsForTheirCleanupAndIsRethrownWithLaterOnesAttached) {
  virtual_clock clock;
  quell::test::log log;
  auto slow_cleanup = [&](std::string name, bool throw_too) {
    return [&log, &clock, name, throw_too]() -> task<> {
      co_await sleep_for(3ms);
      log.print(name + " cleanup done at " + at(clock) + " (" + quell::this_task::cancel_reason()->describe() + ")");
      if (throw_too) throw std::logic_error(name + " cleanup failed");
    };
  };
  auto failing = []() -> task<> {
    co_await sleep_for(2ms);
    throw boom("child failed");
  };
  auto body = [&]() -> task<> {
    try {
      co_await with_scope([&](scope& s) -> task<> {
        s.spawn(on_cancel(sleep_for(1h), slow_cleanup("sibling", true)));
        s.spawn(failing());
        co_await on_cancel(sleep_for(1h), slow_cleanup("body", false));
      });
    } catch (const boom& e) {
      log.print(std::string("caught ") + e.what() + " at " + at(clock) +
                ", attached: " + quell::describe(quell::attached_errors().at(0)));
    }
  };
  executor(body(), clock).run();
  // The body is cancelled first, then the children in the order they were spawned.
  EXPECT_EQ(log.lines,
            (lines{"body cleanup done at 5ms (sibling failed)", "sibling cleanup done at 5ms (sibling failed)",
                   "caught child failed at 5ms, attached: sibling cleanup failed"}));
}

TEST(Scope, CancellingTheScopeCancelsEveryMemberAndCompletesOnlyAfterEachFinished) {
  virtual_clock clock;
  quell::test::log log;
  auto member = [&](std::string name, quell::duration cleanup) -> task<> {
    // Named, not written inside the co_await: g++ 12 miscompiles a closure that copies a
    // non-trivial capture when it is a temporary in a co_await expression (docs/decisions.md).
    auto hook = [&log, &clock, name, cleanup]() -> task<> {
      co_await sleep_for(cleanup);
      log.print(name + " cancelled at " + at(clock));
    };
    co_await on_cancel(sleep_for(1h), hook);
  };
  auto body = [&]() -> task<> {
    co_await on_cancel(with_scope([&](scope& s) -> task<> {
                         s.spawn(member("child 1", 4ms));
                         s.spawn(member("child 2", 1ms));
                         co_await member("body", 2ms);
                       }),
                       [&] { log.print("cancel reached the scope"); });
  };
  executor ex{body(), clock};
  ex.poll_once();
  ex.cancel();
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_EQ(log.lines, (lines{"cancel reached the scope", "child 2 cancelled at 1ms", "body cancelled at 2ms",
                              "child 1 cancelled at 4ms"}));
}

TEST(Scope, CancellationReachesEveryDescendantOfATwoLevelTreeExactlyOnce) {
  quell::test::log log;
  int hooks = 0;
  auto leaf = [&](std::string name) -> task<> {
    auto hook = [&hooks, &log, name] {  // named: see the g++ 12 note above
      ++hooks;
      log.print(name);
    };
    co_await on_cancel(quell::pending(), hook);
  };
  auto subtree = [&](std::string name) -> task<> {
    auto body = [&, name](scope& s) -> task<> {
      s.spawn(leaf(name + ".a"));
      s.spawn(leaf(name + ".b"));
      co_await leaf(name + ".body");
    };
    co_await with_scope(body);
  };
  auto root = [&]() -> task<> {
    co_await with_scope([&](scope& s) -> task<> {
      s.spawn(subtree("x"));
      s.spawn(subtree("y"));
      co_await quell::pending();
    });
  };
  executor ex{root()};
  ex.poll_once();
  ex.cancel();
  ex.cancel();  // idempotent
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_EQ(hooks, 6);
  std::sort(log.lines.begin(), log.lines.end());
  EXPECT_EQ(log.lines, (lines{"x.a", "x.b", "x.body", "y.a", "y.b", "y.body"}));
}

TEST(Scope, ATaskSpawnedIntoACancelledScopeStillStartsRunsItsCleanupAndIsCancelledAtItsFirstSuspension) {
  quell::test::log log;
  auto late = [&]() -> task<> {
    log.print("late child started");
    co_await quell::defer(log.hook("late child cleanup"));
    co_await quell::yield();
    log.print("never");
  };
  auto body = [&]() -> task<> {
    co_await with_scope([&](scope& s) -> task<> {
      s.cancel(quell::cancel_reason(quell::cancel_kind::requested, "enough"));
      s.spawn(late());
      log.print(s.running() == 1 ? "spawned, being cancelled" : "?");
      co_return;
    });
    log.print("scope returned");
  };
  executor(body()).run();
  EXPECT_EQ(log.lines,
            (lines{"late child started", "spawned, being cancelled", "late child cleanup", "scope returned"}));
}

TEST(Scope, FuturesUnorderedWithTheFirstChildFinishesTheBodyReturnsTheOtherIsCancelledWithItsHook) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    int first = co_await with_scope([&](scope& s) -> task<int> {
      auto a = s.spawn(value_after(3ms, 1));
      auto b = s.spawn(on_cancel(value_after(1h, 2), [&]() -> task<> {
        co_await sleep_for(2ms);
        log.print("b cancelled at " + at(clock));
      }));
      int v = co_await quell::race(a, b);
      log.print("first finished: " + std::to_string(v) + " at " + at(clock) + "; body returns");
      s.cancel();
      co_return v;
    });
    log.print("scope returned " + std::to_string(first) + " at " + at(clock));
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines,
            (lines{"first finished: 1 at 3ms; body returns", "b cancelled at 5ms", "scope returned 1 at 5ms"}));
}

TEST(Scope, HandlesYieldValuesAndCancelOneChildWithoutTheOthers) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    co_await with_scope([&](scope& s) -> task<> {
      auto a = s.spawn(value_after(2ms, 7));
      auto b = s.spawn(on_cancel(value_after(1h, 8), log.hook("b cancelled alone")));
      b.cancel();
      log.print("a = " + std::to_string(co_await a) + ", b done: " + (b.done() ? "yes" : "no"));
      auto waits_for_b = [&]() -> task<> {
        co_await b;  // b ended cancelled: so does whoever awaits it
        log.print("never");
      };
      auto w = s.spawn(waits_for_b());
      co_await quell::yield();
      log.print(std::string("a waiter of a cancelled child ") + (w.done() ? "ended cancelled" : "waits"));
    });
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines,
            (lines{"b cancelled alone", "a = 7, b done: yes", "a waiter of a cancelled child ended cancelled"}));
}

TEST(ScopeStart, StartYieldsWhatTheChildPassesToStartedAndTheChildKeepsServing) {
  quell::test::log log;
  auto server = [&](quell::task_status<std::uint16_t>& status) -> task<> {
    auto l = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
    status.started(l.local_address().port());  // "listening": start() returns now
    auto conn = co_await l.accept();
    char buf[16];
    std::size_t n = co_await conn.read_some(buf);
    co_await conn.write_all(std::string_view(buf, n));
    log.print("server echoed " + std::to_string(n) + " bytes");
  };
  auto body = [&]() -> task<> {
    co_await with_scope([&](scope& s) -> task<> {
      std::uint16_t port = co_await s.start<std::uint16_t>(server);
      log.print(port != 0 ? "started on a port" : "port 0?");
      auto c = co_await quell::tcp_stream::connect(quell::address::parse("127.0.0.1", port));
      co_await c.write_all("ping");
      char buf[16];
      co_await c.read_exact(std::span<char>(buf, 4));
      log.print("client got " + std::string(buf, 4));
    });
  };
  executor(body()).run();
  EXPECT_EQ(log.lines, (lines{"started on a port", "server echoed 4 bytes", "client got ping"}));
}

TEST(ScopeStart, BeforeStartedAnErrorGoesToTheStartCallerNotTheScope) {
  quell::test::log log;
  auto fails = [](quell::task_status<>&) -> task<> {
    co_await quell::yield();
    throw boom("could not bind");
  };
  auto quits = [](quell::task_status<>&) -> task<> { co_await quell::yield(); };
  auto body = [&]() -> task<> {
    co_await with_scope([&](scope& s) -> task<> {
      try {
        co_await s.start(fails);
      } catch (const boom& e) {
        log.print(std::string("start threw ") + e.what());
      }
      try {
        co_await s.start(quits);
      } catch (const std::logic_error&) {
        log.print("start threw logic_error: ended without started()");
      }
    });
    log.print("scope finished cleanly");
  };
  executor(body()).run();
  EXPECT_EQ(log.lines, (lines{"start threw could not bind", "start threw logic_error: ended without started()",
                              "scope finished cleanly"}));
}

TEST(ScopeStart, CancellingTheCallerBeforeStartedCancelsTheChildButAfterStartedNoLonger) {
  virtual_clock clock;
  quell::test::log log;
  auto slow_to_start = [&](quell::task_status<>& st) -> task<> {
    co_await on_cancel(sleep_for(10ms), log.hook("starting child cancelled"));
    st.started();
  };
  auto quick_to_start = [&](quell::task_status<>& st) -> task<> {
    st.started();
    co_await sleep_for(20ms);
    log.print("started child kept running until " + at(clock));
  };
  auto body = [&]() -> task<> {
    co_await with_scope([&](scope& s) -> task<> {
      auto starter = [&]() -> task<> {
        co_await s.start(slow_to_start);
        log.print("never");
      };
      auto starter2 = [&]() -> task<> {
        co_await s.start(quick_to_start);
        co_await sleep_for(1h);
      };
      auto a = s.spawn(starter());
      auto b = s.spawn(starter2());
      co_await sleep_for(5ms);
      a.cancel();  // before started(): reaches the starting child
      b.cancel();  // after started(): the started child belongs to the scope now
      co_return;
    });
    log.print("scope finished at " + at(clock));
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines,
            (lines{"starting child cancelled", "started child kept running until 20ms", "scope finished at 20ms"}));
}

// Found by the random-tree sweep (seed 8: cleanup[scope[never, throws]]): a body that throws
// while a child is still waiting completed the scope from inside its own failure handling, and
// the scope then touched itself after its awaiting task had freed it (use after free under ASan).
TEST(Scope, ABodyThatThrowsWhileAChildWaitsRethrowsOnceAndTouchesNothingAfterward) {
  auto inner = []() -> task<> {  // the scope lives in this frame, freed as soon as it ends
    co_await with_scope([](scope& s) -> task<> {
      s.spawn(quell::pending());
      co_await quell::yield();  // the body's end then arrives through a callback
      throw boom("body failed");
    });
  };
  auto body = [&]() -> task<> {
    try {
      co_await inner();
    } catch (const boom& e) {
      EXPECT_STREQ(e.what(), "body failed");
      co_return;
    }
    ADD_FAILURE() << "expected the body's exception";
  };
  executor(body()).run();
}

TEST(Scope, CancellingAHandlesWaiterLeavesTheChildRunningAndHandleMisuseIsAClearError) {
  virtual_clock clock;
  quell::test::log log;
  auto twice = [&](quell::task_status<int>& st) -> task<> {
    st.started(1);
    try {
      st.started(2);
    } catch (const std::logic_error&) {
      log.print("started() twice: logic_error");
    }
    co_return;
  };
  auto body = [&]() -> task<> {
    co_await with_scope([&](scope& s) -> task<> {
      auto h = s.spawn(value_after(10ms, 5));
      auto r = co_await quell::move_on_after(2ms, h);  // the wait is cancelled, not the child
      log.print(std::string(r ? "got a value" : "stopped waiting") + " at " + at(clock));
      log.print("then got " + std::to_string(co_await h) + " at " + at(clock));
      try {
        (void)co_await h;
      } catch (const std::logic_error&) {
        log.print("value taken twice: logic_error");
      }
      log.print("start gave " + std::to_string(co_await s.start<int>(twice)));
    });
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"stopped waiting at 2ms", "then got 5 at 10ms", "value taken twice: logic_error",
                              "started() twice: logic_error", "start gave 1"}));
}

// A spawned task is driven directly, not through the generic driver (detail/scope_core.hpp,
// task_child).
// These pin the rules it must keep anyway.

TEST(Scope, ASpawnedTaskThatEndsCancelledDestroysItsLocalsAtOnceEvenWhileAHandleIsHeld) {
  virtual_clock clock;
  quell::test::log log;
  struct guard {
    quell::test::log& log;
    ~guard() { log.print("child's local destroyed"); }
  };
  auto child = [&]() -> task<int> {
    guard g{log};
    co_await sleep_for(1h);
    co_return 1;
  };
  auto body = [&]() -> task<> {
    co_await with_scope([&](scope& s) -> task<> {
      auto h = s.spawn(child);
      co_await sleep_for(1ms);
      h.cancel();
      log.print(std::string("cancelled; done: ") + (h.done() ? "yes" : "no"));
      co_await sleep_for(1ms);
      log.print(std::string("handle still held; valid: ") + (h.valid() ? "yes" : "no"));
    });
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"child's local destroyed", "cancelled; done: yes", "handle still held; valid: yes"}));
}

TEST(Scope, ASpawnedTaskCancelledWhileItStillRunsInsideSpawnIsCancelledAtItsNextCoAwaitEvenAReadyOne) {
  quell::test::log log;
  auto body = [&]() -> task<> {
    co_await with_scope([&](scope& s) -> task<> {
      auto h = s.spawn([&]() -> task<int> {
        log.print("child runs inside spawn");
        s.cancel(quell::cancel_reason(quell::cancel_kind::requested, "from the child"));
        co_await quell::defer(log.hook("child's cleanup"));
        co_await quell::yield();
        log.print("never");
        co_return 1;
      });
      log.print(std::string("spawn returned; child done: ") + (h.done() ? "yes" : "no"));
      co_return;
    });
    log.print("scope returned");
  };
  executor(body()).run();
  // It ends cancelled inside its own await_suspend, so its cleanup runs from the next turn, after
  // spawn has returned (as for any task ending there).
  EXPECT_EQ(log.lines,
            (lines{"child runs inside spawn", "spawn returned; child done: no", "child's cleanup", "scope returned"}));
}

TEST(Scope, ASpawnedTaskWhoseAsyncCleanupThrowsGivesTheScopeThatErrorAndItsHandleNoValue) {
  quell::test::log log;
  auto child = [&]() -> task<int> {
    co_await quell::defer([]() -> task<> {
      co_await quell::yield();
      throw boom("cleanup failed");
    });
    co_return 5;
  };
  auto body = [&]() -> task<> {
    try {
      co_await with_scope([&](scope& s) -> task<> {
        auto h = s.spawn(child);
        auto waiter = [&]() -> task<> {
          (void)co_await h;
          log.print("never: the child's value is not delivered");
        };
        s.spawn(waiter);
        co_return;
      });
    } catch (const boom& e) {
      log.print(std::string("scope threw: ") + e.what());
    }
  };
  executor(body()).run();
  EXPECT_EQ(log.lines, (lines{"scope threw: cleanup failed"}));
}

TEST(Scope, AnyAwaitableMayBeSpawnedAndItsValueErrorOrCancellationReachesTheHandle) {
  virtual_clock clock;
  quell::test::log log;
  auto fails_later = [&]() -> task<int> {
    co_await sleep_for(4ms);
    throw boom("a branch of a spawned race failed");
  };
  auto body = [&]() -> task<> {
    co_await with_scope([&](scope& s) -> task<> {
      auto timer = s.spawn(sleep_for(3ms));  // a leaf
      auto raced = s.spawn(quell::race(value_after(2ms, 4), value_after(1h, 5)));
      auto held = s.spawn(on_cancel(value_after(1h, 6), log.hook("hook of a spawned on_cancel")));
      log.print("race gave " + std::to_string(co_await raced) + " at " + at(clock));
      co_await timer;
      log.print("timer done at " + at(clock));
      held.cancel();
      log.print(std::string("on_cancel child done: ") + (held.done() ? "yes" : "no"));
    });
    try {
      co_await with_scope([&](scope& s) -> task<> {
        s.spawn(quell::race(fails_later(), value_after(1h, 5)));
        co_await sleep_for(1h);
      });
    } catch (const boom& e) {
      log.print(std::string(e.what()) + "; the scope threw it at " + at(clock));
    }
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines,
            (lines{"race gave 4 at 2ms", "timer done at 3ms", "hook of a spawned on_cancel",
                   "on_cancel child done: yes", "a branch of a spawned race failed; the scope threw it at 7ms"}));
}

TEST(Scope, ACallableReturningAnyKindOfAwaitableMayBeSpawnedAndIsKeptAliveWithItsChild) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    co_await with_scope([&](scope& s) -> task<> {
      int base = 40;  // captured by the callables, which the scope keeps alive
      auto a_task = s.spawn([base]() -> task<int> {
        co_await sleep_for(1ms);
        co_return base + 1;
      });
      auto a_race = s.spawn([base] { return quell::race(value_after(2ms, base + 2), value_after(1h, 0)); });
      auto a_leaf = s.spawn([] { return sleep_for(3ms); });
      auto a_deadline = s.spawn([base] { return quell::move_on_after(1ms, value_after(1h, base)); });
      auto a_hook = s.spawn([&log] { return on_cancel(quell::pending(), log.hook("spawned hook")); });
      log.print("task " + std::to_string(co_await a_task) + ", race " + std::to_string(co_await a_race));
      co_await a_leaf;
      log.print(std::string("deadline moved on: ") + ((co_await a_deadline).has_value() ? "no" : "yes"));
      a_hook.cancel();
    });
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"task 41, race 42", "deadline moved on: yes", "spawned hook"}));
}

TEST(Scope, CancellingTheScopeReachesEveryChildInSpawnOrderTheLastOneIncluded) {
  quell::test::log log;
  auto body = [&]() -> task<> {
    co_await with_scope([&](scope& s) -> task<> {
      for (const char* name : {"first", "second", "last"}) {
        s.spawn(on_cancel(quell::pending(), log.hook(std::string(name) + " cancelled")));
      }
      s.cancel();
      co_return;
    });
    log.print("scope ended");
  };
  quell::block_on(body());
  EXPECT_EQ(log.lines, (lines{"first cancelled", "second cancelled", "last cancelled", "scope ended"}));
}

// Cancelling a scope visits its children once each, in spawn order, while their own hooks change
// the list under the walk: one ends a sibling the walk has not reached, one spawns into the scope,
// one escalates to a forced request (a second walk inside the first). Under ASan a walk that
// keeps a pointer to a child another child's hook freed fails here.
TEST(Scope, CancellingVisitsEachChildOnceInOrderWhileHooksEndSiblingsSpawnAndEscalate) {
  quell::test::log log;
  executor<void>* ex_ptr = nullptr;
  scope* sp = nullptr;
  std::vector<quell::spawn_handle<void>> h;
  auto late = [&]() -> task<> {
    co_await quell::defer(log.hook("late child's cleanup"));
    co_await quell::pending();
  };
  auto child = [&](int i) -> task<> {
    auto hook = [&, i] {
      log.print("hook " + std::to_string(i));
      if (i == 1) {
        h[3].cancel();
        h[3] = {};  // the last reference: child 3 is freed now, while the walk is short of it
      }
      if (i == 2) sp->spawn(late());
      if (i == 4) ex_ptr->force_cancel();
    };
    co_await on_cancel(quell::pending(), hook);
  };
  auto body = [&]() -> task<> {
    co_await with_scope([&](scope& s) -> task<> {
      sp = &s;
      for (int i = 0; i < 6; ++i) h.push_back(s.spawn(child(i)));
      co_return;
    });
  };
  executor ex{body()};
  ex_ptr = &ex;
  ex.poll_once();
  ex.cancel();
  ex.run();  // the body had returned: with_scope's value stands (completion wins)
  EXPECT_EQ(log.lines, (lines{"hook 0", "hook 1", "hook 3", "hook 2", "hook 4", "hook 5", "late child's cleanup"}));
  for (auto& c : h) EXPECT_TRUE(!c.valid() || c.done());
}

TEST(Scope, ForceCancelReachesAChildsRunningCleanupAndShieldsWhereCancelDoesNot) {
  // A child whose cleanup would wait an hour, and a child inside a shield: a graceful cancel
  // (through the handle or the scope) leaves both waiting; a forced one ends both at once.
  virtual_clock clock;
  quell::test::log log;
  auto cleanup_child = [&]() -> task<> {
    co_await on_cancel(quell::pending(), [&]() -> task<> {
      co_await on_cancel(sleep_for(1h), log.hook("cleanup cancelled"));
    }());
  };
  auto shielded_child = [&]() -> task<> {
    co_await quell::shield(on_cancel(sleep_for(1h), log.hook("shield reached")));
  };
  auto body = [&]() -> task<> {
    co_await with_scope([&](scope& s) -> task<> {
      auto a = s.spawn(cleanup_child);
      auto b = s.spawn(shielded_child);
      co_await sleep_for(1s);
      a.cancel();
      s.cancel();
      co_await quell::shield(sleep_for(1min));
      log.print("after a graceful cancel: " + std::to_string(s.running()) + " running");
      a.force_cancel();
      co_await quell::shield(sleep_for(1s));
      log.print("after forcing a: " + std::to_string(s.running()) + " running");
      s.force_cancel(quell::cancel_reason(quell::cancel_kind::shutdown));
    });
  };
  executor ex{body(), clock};
  ex.run();
  EXPECT_EQ(log.lines, (lines{"after a graceful cancel: 2 running", "cleanup cancelled", "after forcing a: 1 running",
                               "shield reached"}));
  EXPECT_LT(clock.now().time_since_epoch(), 2h);
}
