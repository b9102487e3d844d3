// A runtime of several cores: on(), on_each_core, cancellation across cores, the runtime's
// cancel/shutdown/stuck report, run_main on a runtime, and remote_handle::cancel as an awaitable.
// Every scenario crosses real threads; ThreadSanitizer runs this file (scripts/test).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <latch>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "quell/quell.hpp"
#include "quell/testing.hpp"

using namespace std::chrono_literals;
using quell::on;
using quell::on_cancel;
using quell::runtime;
using quell::task;
using lines = std::vector<std::string>;

namespace {

// The scenario log, written from several cores.
struct shared_log {
  std::mutex m;
  lines out;
  void print(std::string s) {
    std::lock_guard<std::mutex> lock(m);
    out.push_back(std::move(s));
  }
  lines get() {
    std::lock_guard<std::mutex> lock(m);
    return out;
  }
  bool has(const std::string& s) {
    std::lock_guard<std::mutex> lock(m);
    for (const auto& l : out) {
      if (l == s) return true;
    }
    return false;
  }
};

void wait_for_line(shared_log& log, const std::string& s) {
  while (!log.has(s)) std::this_thread::sleep_for(1ms);
}

task<unsigned> where() { co_return quell::this_core(); }

// A task that resolves at once (the "I am waiting now" signal of a child that needs none).
task<> nothing() { co_return; }

// A child that says it is waiting (`ready`, an operation run beside the wait: a call home that
// sets an event there), waits until cancelled, then runs an asynchronous cleanup that needs
// several turns of its own core.
template <class Ready>
task<> waits_then_cleans(shared_log& log, std::string name, Ready ready) {
  auto cleanup = [&log, name]() -> task<> {
    log.print(name + " cleanup started on core " + std::to_string(quell::this_core()));
    for (int i = 0; i < 3; ++i) co_await quell::yield();
    log.print(name + " cleanup done");
  };
  log.print(name + " waiting");
  co_await on_cancel(quell::join(ready(), quell::pending()), cleanup());
}

}  // namespace

TEST(Runtime, RunsTheRootOnCoreZeroOfThisThreadAndReturnsItsValue) {
  runtime rt{2};
  EXPECT_EQ(rt.size(), 2u);
  const auto caller = std::this_thread::get_id();
  auto root = [&]() -> task<int> {
    EXPECT_EQ(quell::this_core(), 0u);
    EXPECT_EQ(quell::core_count(), 2u);
    EXPECT_EQ(std::this_thread::get_id(), caller);
    co_return 7;
  };
  EXPECT_EQ(rt.run(root()), 7);
  EXPECT_EQ(rt.run(root()), 7);  // runs one after another on the same cores
}

TEST(Runtime, OutsideARuntimeThereIsOneCoreAndOnZeroRunsHere) {
  EXPECT_EQ(quell::this_core(), 0u);
  EXPECT_EQ(quell::core_count(), 1u);
  auto root = []() -> task<unsigned> {
    EXPECT_EQ(quell::core_count(), 1u);
    co_return co_await on(0, [] { return where(); });
  };
  EXPECT_EQ(quell::block_on(root()), 0u);
}

TEST(OnCore, CallsTheFactoryOnThatCoreAndDeliversTheValueOnTheCallersCore) {
  runtime rt{2};
  std::thread::id factory_thread, child_thread;
  const auto caller = std::this_thread::get_id();
  auto root = [&]() -> task<unsigned> {
    // A coroutine lambda's captures live in the lambda object, so it is named here, where it
    // outlives the call, not created as a temporary inside the factory.
    auto child = [&]() -> task<unsigned> {
      child_thread = std::this_thread::get_id();
      co_await quell::yield();
      co_return quell::this_core();
    };
    auto make = [&] {
      factory_thread = std::this_thread::get_id();
      return child();
    };
    const unsigned got = co_await on(1, make);
    EXPECT_EQ(std::this_thread::get_id(), caller);  // resumed at home
    EXPECT_EQ(quell::this_core(), 0u);
    co_return got;
  };
  EXPECT_EQ(rt.run(root()), 1u);
  EXPECT_NE(factory_thread, caller);
  EXPECT_EQ(factory_thread, child_thread);
}

TEST(OnCore, AnExceptionOfTheRemoteChildIsRethrownAtTheCaller) {
  runtime rt{2};
  auto root = []() -> task<std::string> {
    auto fails = []() -> task<int> {
      co_await quell::yield();
      throw std::runtime_error("failed on core " + std::to_string(quell::this_core()));
    };
    try {
      co_await on(1, fails);
    } catch (const std::runtime_error& e) {
      co_return e.what();
    }
    co_return "no exception";
  };
  EXPECT_EQ(rt.run(root()), "failed on core 1");
}

TEST(OnCore, AFactoryThatThrowsIsAnExceptionOfTheCall) {
  runtime rt{2};
  auto root = []() -> task<bool> {
    auto make = []() -> task<unsigned> {
      throw std::invalid_argument("factory failed");
      return where();
    };
    try {
      co_await on(1, make);
    } catch (const std::invalid_argument& e) {
      co_return std::string(e.what()) == "factory failed";
    }
    co_return false;
  };
  EXPECT_TRUE(rt.run(root()));
}

TEST(OnCore, AnIndexPastTheLastCoreIsAClearError) {
  runtime rt{2};
  auto root = []() -> task<std::string> {
    try {
      co_await on(2, [] { return where(); });
    } catch (const std::out_of_range& e) {
      co_return e.what();
    }
    co_return "";
  };
  EXPECT_EQ(rt.run(root()), "quell: on(2, ...): there are 2 cores (0..1)");
}

TEST(OnCore, AChildThatEndsCancelledOnItsOwnEndsTheCallCancelled) {
  runtime rt{2};
  auto root = []() -> task<bool> {
    auto gives_up = []() -> task<int> {
      quell::cancel_source src;
      src.cancel();
      co_await quell::with_cancellation(src.token(), quell::pending());
      co_return 1;
    };
    auto [r] = co_await quell::join_settled(on(1, gives_up));
    co_return r.cancelled();
  };
  EXPECT_TRUE(rt.run(root()));
}

TEST(OnCore, CancellingTheCallerRunsTheRemoteCleanupBeforeTheCallerResumes) {
  runtime rt{2};
  shared_log log;
  auto root = [&]() -> task<> {
    quell::event started;
    // The remote child tells core 0 it is waiting by a call home (0 -> 1 -> 0).
    auto tell_core0 = [&] {
      return on(0, [&]() -> task<> {
        started.set();
        co_return;
      });
    };
    auto child = [&]() -> task<> { co_await waits_then_cleans(log, "remote", tell_core0); };
    co_await quell::race(on(1, child), started.wait());
    log.print("caller resumed");
  };
  rt.run(root());
  EXPECT_EQ(log.get(),
            (lines{"remote waiting", "remote cleanup started on core 1", "remote cleanup done", "caller resumed"}));
}

TEST(OnCore, TheRequestsLevelAndReasonReachTheRemoteChild) {
  // In lockstep on a virtual clock: the child has surely started when the deadline expires.
  quell::virtual_clock clock;
  runtime rt{quell::runtime_options{.cores = 2, .one_thread = true, .clock = &clock}};
  shared_log log;
  auto root = [&]() -> task<> {
    auto child = [&]() -> task<> {
      auto hook = [&] {
        const auto r = quell::this_task::cancel_reason();
        log.print("remote saw " + (r ? r->describe() : std::string("nothing")));
      };
      co_await on_cancel(quell::pending(), hook);
    };
    auto r = co_await quell::move_on_after(20ms, on(1, child));
    EXPECT_FALSE(r.has_value());
  };
  rt.run(root());
  EXPECT_EQ(log.get(), (lines{"remote saw deadline"}));
}

TEST(OnCore, GracefulThenForcedWhileTheRemoteCleanupRuns) {
  runtime rt{2};
  shared_log log;
  auto root = [&]() -> task<> {
    auto child = [&]() -> task<> {
      auto cleanup = [&]() -> task<> {
        log.print("cleanup started");
        auto forced = [&] { log.print("cleanup cancelled (forced)"); };
        co_await on_cancel(quell::pending(), forced);  // ignores the graceful request
        log.print("cleanup finished");                 // never: the forced request ends it
      };
      log.print("child waiting");
      co_await on_cancel(quell::pending(), cleanup());
    };
    co_await on(1, child);
  };
  // The threads hold remote handles: something outside may still act, so the runtime is not stuck.
  std::thread canceller([&, h = rt.remote()] {
    wait_for_line(log, "cleanup started");  // a graceful request is in force by now
    log.print("forcing");
    h.force_cancel(quell::cancel_reason(quell::cancel_kind::requested, "second"));
  });
  std::thread first([&, h = rt.remote()] {
    wait_for_line(log, "child waiting");  // a cancel before the child started would skip it
    rt.cancel(quell::cancel_reason(quell::cancel_kind::requested, "first"));
  });
  try {
    rt.run(root());
    ADD_FAILURE() << "the root should end cancelled";
  } catch (const quell::cancelled_error& e) {
    EXPECT_NE(std::string(e.what()).find("first"), std::string::npos) << e.what();  // the first reason is kept
  }
  first.join();
  canceller.join();
  EXPECT_EQ(log.get(), (lines{"child waiting", "cleanup started", "forcing", "cleanup cancelled (forced)"}));
}

TEST(OnCore, ACallCancelledBeforeTheRemoteCoreStartedItNeverCallsTheFactory) {
  runtime rt{2};
  std::atomic<bool> core1_blocked{false};
  std::latch release_core1(1);
  std::atomic<bool> factory_called{false};
  auto root = [&]() -> task<bool> {
    // Core 1 is held inside a factory, so the next call's start waits in its mailbox.
    auto hold = [&] {
      core1_blocked = true;
      release_core1.wait();
      return where();
    };
    auto victim = [&] {
      factory_called = true;
      return where();
    };
    std::atomic<bool> decided{false};
    auto sequence = [&]() -> task<bool> {
      while (!core1_blocked) co_await quell::yield();
      auto other_branch = [&]() -> task<> {
        co_await quell::yield();
        decided = true;  // the race cancels the call as this branch ends, in this turn
      };
      auto r = co_await quell::race(on(1, victim), other_branch());
      co_return r.index() == 1;
    };
    auto releaser = [&]() -> task<> {
      while (!decided) co_await quell::yield();
      release_core1.count_down();  // the cancel is in core 1's mailbox, behind the start
    };
    auto [held, yielded_first, released] = co_await quell::join(on(1, hold), sequence(), releaser());
    (void)held;
    (void)released;
    co_return yielded_first;
  };
  EXPECT_TRUE(rt.run(root()));
  EXPECT_FALSE(factory_called);
}

TEST(OnCore, AValueTheRemoteChildProducedIsNeverDroppedByACancelThatCrossedIt) {
  runtime rt{2};
  std::atomic<int> produced{0};
  auto root = [&]() -> task<int> {
    int delivered = 0;
    for (int i = 0; i < 500; ++i) {
      auto child = [&]() -> task<int> {
        ++produced;
        co_return 1;
      };
      // The yield wins or the call does; a call that was cancelled after its child produced a
      // value delivers it anyway (any_of keeps every completion), one cancelled before the child
      // started never produces one.
      auto [a, b] = co_await quell::any_of(on(1, child), quell::yield());
      if (a) delivered += *a;
      (void)b;
    }
    co_return delivered;
  };
  const int delivered = rt.run(root());
  EXPECT_EQ(delivered, produced.load());
}

TEST(OnCore, NestedCallsAcrossThreeHopsCancelAsOneTree) {
  runtime rt{2};
  shared_log log;
  auto root = [&]() -> task<> {
    quell::event deepest_waiting;
    auto hop2 = [&]() -> task<> {  // on core 0 again
      deepest_waiting.set();
      co_await waits_then_cleans(log, "hop2", nothing);
    };
    auto hop1 = [&]() -> task<> {  // on core 1
      co_await on_cancel(on(0, hop2), [&] { log.print("hop1 hook on core " + std::to_string(quell::this_core())); });
    };
    co_await quell::race(on(1, hop1), deepest_waiting.wait());
    log.print("caller resumed");
  };
  rt.run(root());
  EXPECT_EQ(log.get(), (lines{"hop2 waiting", "hop1 hook on core 1", "hop2 cleanup started on core 0",
                              "hop2 cleanup done", "caller resumed"}));
}

TEST(OnCore, OnEachCoreRunsTheFactoryOncePerCoreInCoreOrder) {
  runtime rt{3};
  auto root = []() -> task<std::vector<unsigned>> { co_return co_await quell::on_each_core([] { return where(); }); };
  EXPECT_EQ(rt.run(root()), (std::vector<unsigned>{0, 1, 2}));
}

TEST(OnCore, OnEachCoresFirstErrorCancelsAndAwaitsTheOthers) {
  runtime rt{3};
  shared_log log;
  std::atomic<int> waiting{0};
  auto root = [&]() -> task<> {
    auto per_core = [&]() -> task<> {
      if (quell::this_core() == 2) {
        // Only once the others wait: one that had not started would (rightly) never run.
        while (waiting.load() < 2) co_await quell::yield();
        throw std::runtime_error("core 2 failed");
      }
      auto count_me = [&]() -> task<> {
        ++waiting;
        co_return;
      };
      co_await waits_then_cleans(log, "core " + std::to_string(quell::this_core()), count_me);
    };
    co_await quell::on_each_core(per_core);
  };
  try {
    rt.run(root());
    ADD_FAILURE() << "expected the error";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "core 2 failed");
  }
  const lines l = log.get();
  for (const char* s : {"core 0 cleanup done", "core 1 cleanup done"}) {
    EXPECT_NE(std::find(l.begin(), l.end(), s), l.end()) << s;
  }
}

TEST(Runtime, ACancelBeforeRunMeansTheRootNeverRuns) {
  runtime rt{2};
  bool ran = false;
  auto root = [&]() -> task<> {
    ran = true;
    co_return;
  };
  rt.cancel();
  EXPECT_THROW(rt.run(root()), quell::cancelled_error);
  EXPECT_FALSE(ran);
  rt.run(root());  // the request was for that run only
  EXPECT_TRUE(ran);
}

TEST(Runtime, ShutdownFromAnotherThreadCancelsIOInFlightOnEveryCoreAndWaits) {
  runtime rt{2};
  shared_log log;
  std::atomic<int> reading{0};
  int fds[2][2];
  for (auto& p : fds) ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p), 0);
  auto root = [&]() -> task<> {
    auto per_core = [&]() -> task<> {
      quell::tcp_stream s{fds[quell::this_core()][0]};
      char buf[16];
      auto note = [&] { log.print("read cancelled on core " + std::to_string(quell::this_core())); };
      ++reading;
      co_await on_cancel(s.read_some(std::span(buf)), note);
    };
    co_await quell::on_each_core(per_core);
  };
  std::thread stopper([&, h = rt.remote()] {
    while (reading.load() < 2) std::this_thread::sleep_for(1ms);  // both reads are being started
    rt.shutdown(5s);
    log.print("shutdown returned");
  });
  EXPECT_THROW(rt.run(root()), quell::cancelled_error);
  stopper.join();
  lines l = log.get();
  std::sort(l.begin(), l.end());
  EXPECT_EQ(l, (lines{"read cancelled on core 0", "read cancelled on core 1", "shutdown returned"}));
  ::close(fds[0][1]);
  ::close(fds[1][1]);
}

TEST(Runtime, AShutdownGraceEscalatesToForcedOnEveryCore) {
  runtime rt{2};
  shared_log log;
  auto root = [&]() -> task<> {
    auto child = [&]() -> task<> {
      auto cleanup = [&]() -> task<> {
        auto forced = [&] { log.print("remote cleanup forced"); };
        co_await on_cancel(quell::pending(), forced);
      };
      log.print("child waiting");
      co_await on_cancel(quell::pending(), cleanup());
    };
    co_await on(1, child);
  };
  std::thread stopper([&, h = rt.remote()] {
    wait_for_line(log, "child waiting");
    rt.shutdown(30ms);
  });
  EXPECT_THROW(rt.run(root()), quell::cancelled_error);
  stopper.join();
  EXPECT_EQ(log.get(), (lines{"child waiting", "remote cleanup forced"}));
}

TEST(Runtime, AShutdownAskedFromATaskArmsTheGraceOnCoreZero) {
  runtime rt{2};
  shared_log log;
  auto root = [&]() -> task<> {
    auto child = [&]() -> task<> {
      auto cleanup = [&]() -> task<> {
        auto forced = [&] { log.print("forced"); };
        co_await on_cancel(quell::pending(), forced);
      };
      rt.shutdown(20ms);  // from core 1: returns at once
      log.print("asked");
      co_await on_cancel(quell::pending(), cleanup());
    };
    co_await on(1, child);
  };
  EXPECT_THROW(rt.run(root()), quell::cancelled_error);
  EXPECT_EQ(log.get(), (lines{"asked", "forced"}));
}

TEST(Runtime, NothingCanHappenOnAnyCoreIsStuckAndTheReportNamesEachCore) {
  runtime rt{2};
  auto root = []() -> task<> {
    auto child = []() -> task<> { co_await quell::event().wait(); };
    co_await on(1, child);
  };
  try {
    rt.run(root());
    ADD_FAILURE() << "expected stuck_error";
  } catch (const quell::stuck_error& e) {
    const std::string what = e.what();
    // The tree joins the child on core 1 under its caller on core 0.
    EXPECT_NE(what.find("on core 0 suspended, waiting on a child on core 1\n  - "), std::string::npos) << what;
    EXPECT_NE(what.find("on core 1 suspended, waiting on event\n"), std::string::npos) << what;
  }
}

TEST(Runtime, AStuckRemoteCleanupIsForcedWhenRunLeavesByAnException) {
  runtime rt{2};
  shared_log log;
  auto root = [&]() -> task<> {
    auto child = [&]() -> task<> {
      auto cleanup = [&]() -> task<> {
        auto forced = [&] { log.print("forced"); };
        co_await on_cancel(quell::event().wait(), forced);  // answers only a forced request
      };
      co_await on_cancel(quell::event().wait(), cleanup());
    };
    co_await on(1, child);
  };
  // stuck -> run() leaves by an exception -> the executor cancels gracefully (the cleanup starts
  // and gets stuck too) -> forced: the cleanup's hook runs and everything ends.
  EXPECT_THROW(rt.run(root()), quell::stuck_error);
  EXPECT_EQ(log.get(), (lines{"forced"}));
}

TEST(Runtime, RunMainOnARuntimeCancelsEveryCoreOnTheFirstSignal) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    runtime rt{2};
    auto body = []() -> task<int> {
      auto child = []() -> task<> {
        ::kill(::getpid(), SIGINT);
        auto cleanup = []() -> task<> {
          co_await quell::yield();
          std::fputs("remote cleanup done\n", stderr);
        };
        co_await on_cancel(quell::pending(), cleanup());
      };
      co_await on(1, child);
      co_return 3;
    };
    std::_Exit(quell::run_main(rt, body(), 5s));
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);  // graceful: an orderly shutdown
}

TEST(RemoteHandle, AwaitingCancelResumesOnceTheRemoteRootHasFinishedItsCleanup) {
  shared_log log;
  std::promise<quell::remote_handle> handle;
  std::thread other([&] {
    auto body = [&]() -> task<> {
      auto cleanup = [&]() -> task<> {
        for (int i = 0; i < 3; ++i) co_await quell::yield();
        log.print("remote cleanup done");
      };
      co_await on_cancel(quell::pending(), cleanup());
    };
    quell::executor ex{body()};
    handle.set_value(ex.remote());
    try {
      ex.run();
    } catch (const quell::cancelled_error&) {
      log.print("remote root ended cancelled");
    }
  });
  quell::remote_handle h = handle.get_future().get();
  auto waiter = [&]() -> task<> {
    co_await h.cancel(quell::cancel_reason(quell::cancel_kind::requested, "done here"));
    log.print("canceller resumed");
    co_await h.cancel();  // already finished: at once
  };
  quell::block_on(waiter());
  other.join();
  const lines l = log.get();
  ASSERT_GE(l.size(), 2u);
  EXPECT_EQ(l[0], "remote cleanup done");
  EXPECT_NE(std::find(l.begin(), l.end(), "canceller resumed"), l.end());
}

TEST(RemoteHandle, CancellingTheWaitForTheRemoteFinishStopsOnlyTheWaiting) {
  shared_log log;
  std::promise<quell::remote_handle> handle;
  std::thread other([&] {
    auto body = [&]() -> task<> { co_await quell::shield(quell::pending()); };  // only a forced request ends it
    quell::executor ex{body()};
    handle.set_value(ex.remote());
    try {
      ex.run();
    } catch (const quell::cancelled_error&) {
      log.print("remote root ended");
    }
  });
  quell::remote_handle h = handle.get_future().get();
  auto waiter = [&]() -> task<> {
    co_await quell::race(h.cancel(), quell::yield());  // the yield wins: the wait is cancelled
    log.print("wait stopped");
    co_await h.force_cancel();
    log.print("remote finished");
  };
  quell::block_on(waiter());
  other.join();
  lines l = log.get();
  ASSERT_EQ(l.size(), 3u);
  EXPECT_EQ(l[0], "wait stopped");  // before the remote root ended: only the waiting stopped
  std::sort(l.begin() + 1, l.end());
  EXPECT_EQ(l, (lines{"wait stopped", "remote finished", "remote root ended"}));
}

TEST(Runtime, ACancelAskedFromAnotherCoreIsNeverMistakenForStuck) {
  // The request waits in core 0's mailbox while both cores may look idle: it counts as a message
  // in transit, so the run ends cancelled, never with stuck_error.
  runtime rt{2};
  for (int i = 0; i < 200; ++i) {
    auto root = [&]() -> task<> {
      auto asks = [&]() -> task<> {
        rt.cancel();
        co_await quell::pending();
      };
      auto local = []() -> task<> {
        for (int k = 0; k < 3; ++k) co_await quell::yield();
      };
      auto make = [&] { return asks(); };
      co_await quell::join(on(1, make), local());
    };
    EXPECT_THROW(rt.run(root()), quell::cancelled_error);
  }
}

TEST(RemoteHandle, AwaitingTheEndOfARootThatNeverRanResumesAtOnce) {
  auto body = []() -> task<> { co_await quell::pending(); };
  quell::executor ex{body()};
  quell::remote_handle h = ex.remote();
  ex.cancel();  // before the first turn: the root never runs, and that is its end
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  auto waiter = [&]() -> task<> { co_await h.cancel(); };
  quell::block_on(waiter());  // the executor still exists: only the announcement can end this
}

TEST(OnCore, ACoroutineLambdaGivenAsTheFactoryKeepsItsCapturesUntilTheChildEnds) {
  runtime rt{2};
  auto root = []() -> task<std::string> {
    // Long enough to live on the heap: ASan sees it if the factory dies before the child.
    auto child = [text = std::string(64, 'x')]() -> task<std::string> {
      co_await quell::yield();
      co_return text;
    };
    co_return co_await on(1, child);
  };
  EXPECT_EQ(rt.run(root()), std::string(64, 'x'));
}

namespace {
// A scenario on two cores for the lockstep runtime: jobs on core 1, a job called back from core 1
// onto core 0, and one on core 0, sharing one permit; each job's cleanup is asynchronous.
// `cancel_seen`, if given, is set to the virtual time at which a cancel request reached the root.
task<> crossing_jobs(quell::testing::ledger& held, shared_log& log, quell::shared_semaphore& permits,
                     quell::virtual_clock* clock = nullptr, std::optional<quell::time_point>* cancel_seen = nullptr) {
  auto job = [&held, &log, &permits](std::string name) -> task<int> {
    quell::shared_permit p = co_await permits.acquire();
    quell::testing::ledger::hold h(held, name + " permit");
    auto cleanup = [&held, name]() -> task<> {
      quell::testing::ledger::hold c(held, name + " cleanup");
      co_await quell::sleep_for(5ms);
    };
    co_await on_cancel(quell::sleep_for(1h), cleanup());  // work that only a cancel shortens
    log.print(name + " done on core " + std::to_string(quell::this_core()));
    co_return 1;
  };
  auto a = [&] { return job("a"); };
  auto b_inner = [&] { return job("b"); };
  auto b = [&]() -> task<int> { co_return co_await on(0, b_inner); };
  auto all = [&]() -> task<int> {
    auto [x, y, z] = co_await quell::join(on(1, a), on(1, b), job("c"));
    co_return x + y + z;
  };
  auto seen = [&] {
    if (cancel_seen && !*cancel_seen) *cancel_seen = clock->now();
  };
  const int sum = co_await on_cancel(all(), seen);
  log.print("sum " + std::to_string(sum));
}
}  // namespace

TEST(Runtime, OneThreadModeRunsEveryCoreInTheSameOrderEachTime) {
  lines first;
  for (int run = 0; run < 3; ++run) {
    quell::virtual_clock clock;
    runtime rt{quell::runtime_options{.cores = 2, .one_thread = true, .clock = &clock}};
    quell::testing::ledger held;
    shared_log log;
    quell::shared_semaphore permits{1};
    rt.run(crossing_jobs(held, log, permits));
    held.expect_balanced();
    if (run == 0) {
      first = log.get();
      EXPECT_EQ(first.size(), 4u);
      EXPECT_EQ(first.back(), "sum 3");
    } else {
      EXPECT_EQ(log.get(), first);
    }
  }
}

TEST(OnCore, CancelSweepOverAScenarioThatCrossesCores) {
  quell::testing::ledger held;
  shared_log log;
  quell::shared_semaphore permits{1};
  quell::virtual_clock* clock = nullptr;
  std::optional<quell::time_point> cancel_seen;
  const auto report = quell::testing::cancel_sweep(
      2,
      [&](quell::virtual_clock& c) {
        held.reset();
        clock = &c;
        cancel_seen.reset();
        return crossing_jobs(held, log, permits, &c, &cancel_seen);
      },
      [&](const quell::testing::sweep_point& p) {
        held.expect_balanced();
        // The request reached every core: what was running ended within its cleanup's 5 ms,
        // instead of the hour a job that never heard of it would still sleep.
        if (cancel_seen && clock->now() - *cancel_seen > 5ms) {
          throw std::logic_error(
              "the run went on " +
              std::to_string(
                  std::chrono::duration_cast<std::chrono::milliseconds>(clock->now() - *cancel_seen).count()) +
              " ms after the cancel reached the root");
        }
        if (permits.available() != 1 || permits.waiting() != 0) {
          throw std::logic_error("the permit is not back after " + p.describe());
        }
      });
  // Suspension points of tasks on both cores and completion windows (timers, permits, the
  // cross-core calls' ends), each cancelled at gracefully and forcibly.
  EXPECT_GE(report.points, 5u) << report.points;
  EXPECT_GE(report.completions, 5u) << report.completions;
  EXPECT_EQ(report.runs, 1 + 2 * (report.points + report.completions));
  std::printf("cancel_sweep over two cores: %llu points, %llu completion windows, %llu runs\n",
              static_cast<unsigned long long>(report.points), static_cast<unsigned long long>(report.completions),
              static_cast<unsigned long long>(report.runs));
}

// The other cores of a one_thread runtime only turn when core 0 waits; a root that ends in its
// first turn never lets them start, and the runtime's destructor used to resume a host that had
// never suspended (a null handle: a crash).
TEST(Runtime, ALockstepRuntimeWhoseRootNeverSuspendsEndsCleanly) {
  quell::virtual_clock clock;
  int ran = 0;
  {
    runtime rt{quell::runtime_options{.cores = 3, .one_thread = true, .clock = &clock}};
    auto root = [&]() -> task<> {
      ++ran;
      co_return;
    };
    rt.run(root());
  }
  EXPECT_EQ(ran, 1);
}
