// cancel_source / cancel_token / cancel_callback, with_cancellation, and std::stop_token.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "quell/quell.hpp"
#include "support/log.hpp"

using namespace std::chrono_literals;
using quell::cancel_callback;
using quell::cancel_source;
using quell::executor;
using quell::on_cancel;
using quell::task;
using quell::with_cancellation;
using lines = std::vector<std::string>;

TEST(Tokens, ACallbackRunsAtMostOnceAndAtOnceIfTheSourceIsAlreadyCancelled) {
  cancel_source src;
  int runs = 0;
  cancel_callback cb(src.token(), [&]() noexcept { ++runs; });
  EXPECT_EQ(runs, 0);
  EXPECT_TRUE(src.cancel(quell::cancel_reason(quell::cancel_kind::requested, "first")));
  EXPECT_FALSE(src.cancel(quell::cancel_reason(quell::cancel_kind::shutdown)));  // the first reason stays
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(src.token().reason()->describe(), "requested: first");
  int late = 0;
  cancel_callback cb2(src.token(), [&]() noexcept { ++late; });
  EXPECT_EQ(late, 1);  // registered after the cancel: ran in the constructor
  quell::cancel_token never;
  EXPECT_FALSE(never.can_be_cancelled());
  EXPECT_FALSE(never.cancel_requested());
}

TEST(Tokens, DeregisteringWaitsForACallbackRunningOnAnotherThread) {
  cancel_source src;
  std::atomic<bool> started{false}, finished{false};
  auto cb = std::make_unique<cancel_callback<std::function<void()>>>(src.token(), std::function<void()>([&] {
                                                                       started = true;
                                                                       std::this_thread::sleep_for(50ms);
                                                                       finished = true;
                                                                     }));
  std::thread t([&] { src.cancel(); });
  while (!started) std::this_thread::yield();
  cb.reset();  // must not return while the callback still runs on `t`
  EXPECT_TRUE(finished);
  t.join();
}

TEST(Tokens, ACallbackMayDeregisterItselfOnItsOwnThreadWithoutDeadlock) {
  cancel_source src;
  std::unique_ptr<cancel_callback<std::function<void()>>> cb;
  bool ran = false;
  cb = std::make_unique<cancel_callback<std::function<void()>>>(src.token(), std::function<void()>([&] {
                                                                  ran = true;
                                                                  cb.reset();  // deregisters from inside
                                                                }));
  src.cancel();
  EXPECT_TRUE(ran);
  EXPECT_EQ(cb, nullptr);
}

TEST(Tokens, WithCancellationCancelsTheOperationWhenAnotherThreadCancelsTheToken) {
  quell::test::log log;
  cancel_source src;
  auto work = [&]() -> task<> {
    auto hook = [&] { log.print("hook: " + quell::this_task::cancel_reason()->describe()); };
    co_await on_cancel(quell::sleep_for(1h), hook);  // real clock: only the token can end this
  };
  std::thread t([&] {
    std::this_thread::sleep_for(20ms);
    src.cancel(quell::cancel_reason(quell::cancel_kind::peer_disconnected));
  });
  executor ex{with_cancellation(src.token(), work())};
  EXPECT_THROW(ex.run(), quell::cancelled_error);  // the cancellation travelled up to the root
  t.join();
  EXPECT_EQ(log.lines, (lines{"hook: peer disconnected"}));
}

TEST(Tokens, ACancelOnTheExecutorsOwnThreadEndsTheGovernedOperationButNotItsSiblings) {
  quell::test::log log;
  cancel_source src;
  auto body = [&]() -> task<> {
    co_await quell::with_scope([&](quell::scope& s) -> task<> {
      auto governed = s.spawn(with_cancellation(src.token(), on_cancel(quell::pending(), log.hook("governed hook"))));
      co_await quell::yield();
      src.cancel();
      log.print(std::string("governed done: ") + (governed.done() ? "yes" : "no"));
      co_await quell::yield();
      log.print("the body goes on");
    });
  };
  executor(body()).run();
  EXPECT_EQ(log.lines, (lines{"governed hook", "governed done: yes", "the body goes on"}));
}

namespace {
// A spawned task (freed as soon as it ends) holds a Source in its frame and waits under its
// token; another task stops the source through a pointer: the owner is resumed, ends and is freed
// inside that call, which must not touch the source or its state afterwards. Returns the log.
template <class Source, class TokenOf, class Stop>
lines stop_a_source_freed_inside_the_stop(TokenOf token_of, Stop stop) {
  quell::test::log log;
  quell::event never;
  Source* shared = nullptr;
  auto owner = [&]() -> task<> {
    Source src;  // e.g. a connection's own source, published so that an admin can stop it
    shared = &src;
    co_await with_cancellation(token_of(src), never.wait());
    log.print("never");
  };
  auto admin = [&]() -> task<> {
    co_await quell::yield();
    const bool did = stop(*shared);  // the owner's frame, and `*shared`, are gone when it returns
    log.print(did ? "stop returned true" : "?");
  };
  auto body = [&]() -> task<> {
    co_await quell::with_scope([&](quell::scope& s) -> task<> {
      s.spawn(owner());
      co_await admin();
    });
  };
  executor(body()).run();
  return log.lines;
}
}  // namespace

TEST(Tokens, ASourceInTheFrameOfTheTaskItsCancelEndsMayBeFreedInsideCancel) {
  const lines got = stop_a_source_freed_inside_the_stop<cancel_source>([](cancel_source& s) { return s.token(); },
                                                                       [](cancel_source& s) { return s.cancel(); });
  EXPECT_EQ(got, (lines{"stop returned true"}));
}

// libstdc++'s request_stop copes with a callback destroyed while it runs.
TEST(Tokens, AStdStopSourceInTheFrameOfTheTaskItsRequestEndsMayBeFreedInsideTheRequest) {
  const lines got = stop_a_source_freed_inside_the_stop<std::stop_source>(
      [](std::stop_source& s) { return s.get_token(); }, [](std::stop_source& s) { return s.request_stop(); });
  EXPECT_EQ(got, (lines{"stop returned true"}));
}

TEST(Tokens, AnAlreadyCancelledTokenNeverStartsTheOperation) {
  quell::test::log log;
  cancel_source src;
  src.cancel();
  auto body = [&]() -> task<> {
    co_await quell::with_scope([&](quell::scope& s) -> task<> {
      s.spawn(with_cancellation(src.token(), log.say("ran")));
      co_return;
    });
    log.print("scope done");
  };
  executor(body()).run();
  EXPECT_EQ(log.lines, (lines{"scope done"}));
}

TEST(Tokens, CompletionWinsAndALaterCancelIsANoOp) {
  cancel_source src;
  auto body = [&]() -> task<int> {
    int v = co_await with_cancellation(src.token(), []() -> task<int> { co_return 5; }());
    src.cancel();  // the operation is over: nothing is registered any more
    co_return v;
  };
  EXPECT_EQ(executor(body()).run(), 5);
}

TEST(Tokens, StdStopTokenWorksTheSameFromAnotherThread) {
  quell::test::log log;
  std::stop_source stop;
  auto work = [&]() -> task<> {
    auto hook = [&] { log.print("stopped: " + quell::this_task::cancel_reason()->describe()); };
    co_await on_cancel(quell::sleep_for(1h), hook);
  };
  std::thread t([&] {
    std::this_thread::sleep_for(20ms);
    stop.request_stop();
  });
  executor ex{with_cancellation(stop.get_token(), work())};
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  t.join();
  EXPECT_EQ(log.lines, (lines{"stopped: requested: stop requested"}));
}

TEST(Tokens, CancellingWithCancellationFromOutsideIsForwardedAndALaterTokenCancelIsANoOp) {
  quell::test::log log;
  cancel_source src;
  executor ex{with_cancellation(src.token(), on_cancel(quell::pending(), log.hook("op cancelled from outside")))};
  ex.poll_once();
  ex.cancel();
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_TRUE(src.cancel());  // the registration is gone: nothing runs, nothing crashes
  EXPECT_EQ(log.lines, (lines{"op cancelled from outside"}));
}
