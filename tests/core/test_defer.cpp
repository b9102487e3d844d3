// defer: async cleanup registered with a task (docs/model.md, "Cleanup"), on the virtual clock.
#include <gtest/gtest.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "quell/quell.hpp"
#include "support/log.hpp"

using namespace std::chrono_literals;
using quell::defer;
using quell::executor;
using quell::on_cancel;
using quell::sleep_for;
using quell::task;
using quell::virtual_clock;
using lines = std::vector<std::string>;
using quell::test::at;

namespace {
struct boom : std::runtime_error {
  using std::runtime_error::runtime_error;
};
}  // namespace

TEST(Defer, CleanupsRunOnEveryExitLastRegisteredFirstAndAsynchronously) {
  virtual_clock clock;
  quell::test::log log;
  auto cleanup = [&](std::string name) {
    return [&log, &clock, name]() -> task<> {
      co_await sleep_for(1ms);
      log.print(name + " at " + at(clock));
    };
  };
  auto returns = [&]() -> task<int> {
    co_await defer(cleanup("first registered"));
    co_await defer(cleanup("second registered"));
    co_return 1;
  };
  auto throws = [&]() -> task<int> {
    co_await defer(cleanup("cleanup after throw"));
    co_await sleep_for(1ms);
    throw boom("X");
  };
  auto cancelled = [&]() -> task<int> {
    co_await defer(cleanup("cleanup after cancel"));
    co_await sleep_for(1h);
    co_return 3;
  };
  auto body = [&]() -> task<> {
    log.print("returned " + std::to_string(co_await returns()) + " at " + at(clock));
    try {
      co_await throws();
    } catch (const boom&) {
      log.print("caught at " + at(clock));
    }
    auto r = co_await quell::move_on_after(10ms, cancelled());
    log.print(std::string(r ? "completed" : "cancelled") + " at " + at(clock));
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"second registered at 1ms", "first registered at 2ms", "returned 1 at 2ms",
                              "cleanup after throw at 4ms", "caught at 4ms", "cleanup after cancel at 15ms",
                              "cancelled at 15ms"}));
}

TEST(Defer, OnCancellationACleanupUsesTheBodysLocalsByReference) {
  virtual_clock clock;
  quell::test::log log;
  auto handler = [&]() -> task<> {
    std::string request_id = "req-17";
    std::vector<std::string> acquired{"permit", "connection"};
    co_await defer([&]() -> task<> {
      co_await sleep_for(2ms);  // e.g. tell the backend to stop; the frame stays alive meanwhile
      log.print("releasing " + std::to_string(acquired.size()) + " for " + request_id);
    });
    co_await sleep_for(1h);
  };
  {
    executor ex{handler(), clock};
    ex.poll_once();
  }  // the destructor cancels the root and drives its cleanup
  EXPECT_EQ(log.lines, (lines{"releasing 2 for req-17"}));
}

TEST(Defer, TheWaiterHearsOfTheEndOnlyAfterEveryCleanupFinished) {
  virtual_clock clock;
  quell::test::log log;
  auto child = [&]() -> task<int> {
    co_await defer([&]() -> task<> {
      co_await sleep_for(5ms);
      log.print("cleanup done at " + at(clock));
    });
    co_return 42;
  };
  auto body = [&]() -> task<> {
    int v = co_await child();
    log.print("parent got " + std::to_string(v) + " at " + at(clock));
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"cleanup done at 5ms", "parent got 42 at 5ms"}));
}

TEST(Defer, RegisteringIsNotACancellationPointSoACleanupIsNeverSkipped) {
  quell::test::log log;
  auto body = [&]() -> task<> {
    co_await quell::shield(quell::yield());  // completes while the cancel below is pending
    co_await defer(log.hook("registered under a pending cancel, still ran"));
    log.print("body continues to its next suspension point");
    co_await quell::this_task::checkpoint();
    log.print("never");
  };
  executor ex{body()};
  ex.poll_once();
  ex.cancel();
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_EQ(log.lines,
            (lines{"body continues to its next suspension point", "registered under a pending cancel, still ran"}));
}

TEST(Defer, CleanupsAreShieldedFromGracefulCancelButNotFromForced) {
  virtual_clock clock;
  quell::test::log log;
  auto body = [&]() -> task<> {
    co_await defer([&]() -> task<> {
      log.print("reason: " + quell::this_task::cancel_reason()->describe());
      co_await on_cancel(sleep_for(10ms), [&] { log.print("cleanup forced at " + at(clock)); });
      log.print("cleanup finished");
    });
    co_await defer([&]() -> task<> {
      co_await sleep_for(1ms);
      log.print("later cleanup ran at " + at(clock));
    });
    co_await sleep_for(1h);
  };
  executor ex{body(), clock};
  ex.poll_once();
  ex.cancel(quell::cancel_reason(quell::cancel_kind::peer_disconnected));
  ex.poll_once();
  clock.advance(1ms);
  ex.poll_once();  // the second-registered cleanup finishes, the first starts
  ex.cancel();     // graceful again: ignored by the running cleanup
  clock.advance(3ms);
  ex.poll_once();
  ex.force_cancel();
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_EQ(log.lines, (lines{"later cleanup ran at 1ms", "reason: peer disconnected", "cleanup forced at 4ms"}));
}

TEST(Defer, ACleanupFailureIsAttachedToThePrimaryErrorNeverReplacingIt) {
  auto body = []() -> task<> {
    co_await defer([]() -> task<> {
      co_await quell::yield();
      throw std::logic_error("cleanup failed");
    });
    co_await quell::yield();
    throw boom("primary");
  };
  try {
    executor(body()).run();
    FAIL() << "expected boom";
  } catch (const boom& e) {
    EXPECT_STREQ(e.what(), "primary");
    auto extra = quell::attached_errors();
    ASSERT_EQ(extra.size(), 1u);
    EXPECT_EQ(quell::describe(extra[0]), "cleanup failed");
  }
}

TEST(Defer, ACleanupFailureAfterAValueOrACancelIsWhatTheTaskThrows) {
  auto returns = []() -> task<int> {
    co_await defer([] { throw std::logic_error("first cleanup failed"); });
    co_await defer([] { throw std::logic_error("second cleanup failed"); });
    co_return 1;
  };
  try {
    executor(returns()).run();
    FAIL() << "expected the cleanup's error";
  } catch (const std::logic_error& e) {
    EXPECT_STREQ(e.what(), "second cleanup failed");  // the first to run: registered last
    ASSERT_EQ(quell::attached_errors().size(), 1u);
  }
  auto cancelled = []() -> task<> {
    co_await defer([] { throw std::logic_error("cleanup failed during cancel"); });
    co_await quell::pending();
  };
  executor ex{cancelled()};
  ex.poll_once();
  ex.cancel();
  EXPECT_THROW(ex.run(), std::logic_error);
}

// The same rules when the task is awaited by another task (task.hpp: task_await_task), whether
// its cleanups finish inside the call that started it or after it suspended.
TEST(Defer, ACleanupFailureReachesAnAwaitingTaskLikeAnyOtherError) {
  auto sync_cleanup = []() -> task<int> {
    co_await defer([] { throw std::logic_error("sync cleanup failed"); });
    co_return 1;
  };
  auto async_cleanup = []() -> task<int> {
    co_await defer([]() -> task<> {
      co_await quell::yield();
      throw std::logic_error("async cleanup failed");
    });
    co_return 2;
  };
  auto primary = []() -> task<int> {
    co_await defer([] { throw std::logic_error("cleanup failed"); });
    throw boom("primary");
  };
  auto parent = [&]() -> task<lines> {
    lines seen;
    try {
      (void)co_await sync_cleanup();
    } catch (const std::logic_error& e) {
      seen.emplace_back(e.what());
    }
    try {
      (void)co_await async_cleanup();
    } catch (const std::logic_error& e) {
      seen.emplace_back(e.what());
    }
    try {
      (void)co_await primary();
    } catch (const boom& e) {
      seen.emplace_back(std::string(e.what()) + " + " + std::to_string(quell::attached_errors().size()));
    }
    co_return seen;
  };
  EXPECT_EQ(quell::block_on(parent()), (lines{"sync cleanup failed", "async cleanup failed", "primary + 1"}));

  auto cancelled = []() -> task<> {
    co_await defer([] { throw std::logic_error("cleanup failed during cancel"); });
    co_await quell::pending();
  };
  auto waits = [&]() -> task<> { co_await cancelled(); };
  executor ex{waits()};
  ex.poll_once();
  ex.cancel();
  EXPECT_THROW(ex.run(), std::logic_error);
}

TEST(Defer, ABoundedCleanupTalkingToAPeerThatNeverAnswersTakesItsBoundAndTheOriginalErrorSurvives) {
  virtual_clock clock;
  clock.set_io_grace(50ms);  // the peer is a real socket: give its (absent) answer real time
  quell::test::log log;
  auto handler = [&](quell::tcp_stream& backend) -> task<> {
    co_await defer(
        [&]() -> task<> {
          co_await backend.write_all("CANCEL job-1\n");
          char ack[16];
          co_await on_cancel(backend.read_some(ack), [&] { log.print("gave up waiting for the ack at " + at(clock)); });
          log.print("ack received");
        },
        2s);
    co_await sleep_for(100ms);
    throw boom("handler failed");
  };
  auto body = [&]() -> task<> {
    auto l = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
    quell::tcp_stream peer, backend;
    std::tie(peer, backend) = co_await quell::join(l.accept(), quell::tcp_stream::connect(l.local_address()));
    try {
      co_await handler(backend);
    } catch (const boom& e) {
      log.print(std::string("caught \"") + e.what() + "\" at " + at(clock) + " with " +
                std::to_string(quell::attached_errors().size()) + " attached");
    }
    char got[32];
    std::size_t n = co_await peer.read_some(got);
    log.print("peer saw: " + std::string(got, n - 1));
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"gave up waiting for the ack at 2100ms",
                              "caught \"handler failed\" at 2100ms with 0 attached", "peer saw: CANCEL job-1"}));
}

TEST(Defer, DeferOutsideATaskBodyIsAClearError) {
  // Awaited by the executor's root directly (not in a task body): rejected, not registered.
  executor ex{defer([] {})};
  EXPECT_THROW(ex.run(), std::logic_error);
}
