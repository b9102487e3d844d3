// generator<T>: lazy production, values in order, the producer's cancellation through next(), and
// every way of finishing with it (end, exception, close, destruction).
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "quell/generator.hpp"
#include "quell/quell.hpp"
#include "quell/testing.hpp"
#include "support/log.hpp"
#include "support/test_leaf.hpp"

using namespace std::chrono_literals;
using quell::executor;
using quell::generator;
using quell::sleep_for;
using quell::task;
using quell::virtual_clock;
using quell::test::cancel_mode;
using quell::test::leaf_control;
using quell::testing::ledger;
using lines = std::vector<std::string>;

namespace {
struct boom : std::runtime_error {
  using std::runtime_error::runtime_error;
};

generator<int> count_to(int n, quell::test::log& log) {
  for (int i = 1; i <= n; ++i) {
    log.print("producing " + std::to_string(i));
    co_yield i;
  }
  log.print("producer returns");
}

// Marks its own destruction (RAII in the producer's frame).
struct marker {
  quell::test::log* log;
  std::string what;
  ~marker() { log->print(what); }
};
}  // namespace

TEST(Generator, ValuesComeInOrderThenNulloptAndTheProducerRunsOnlyWhileAsked) {
  quell::test::log log;
  auto body = [&]() -> task<> {
    auto g = count_to(3, log);
    log.print("made");
    while (auto v = co_await g.next()) log.print("got " + std::to_string(*v));
    EXPECT_TRUE(g.finished());
    EXPECT_FALSE(co_await g.next());  // stays finished
  };
  quell::block_on(body());
  EXPECT_EQ(log.lines, (lines{"made", "producing 1", "got 1", "producing 2", "got 2", "producing 3", "got 3",
                              "producer returns"}));
}

TEST(Generator, TheProducerMayAwaitAnythingATaskMay) {
  virtual_clock clock;
  std::vector<std::string> got;
  auto ticks = [&]() -> generator<std::string> {
    for (int i = 0; i < 3; ++i) {
      co_await sleep_for(1ms);
      co_yield "tick at " + quell::test::at(clock);
    }
  };
  auto body = [&]() -> task<> {
    auto g = ticks();
    while (auto v = co_await g.next()) got.push_back(*v);
  };
  executor(body(), clock).run();
  EXPECT_EQ(got, (std::vector<std::string>{"tick at 1ms", "tick at 2ms", "tick at 3ms"}));
}

TEST(Generator, AnExceptionFromTheProducerIsThrownByNextAndFinishesIt) {
  auto failing = []() -> generator<int> {
    co_yield 1;
    throw boom("producer failed");
  };
  auto body = [&]() -> task<> {
    auto g = failing();
    EXPECT_EQ(*co_await g.next(), 1);
    EXPECT_THROW(co_await g.next(), boom);
    EXPECT_TRUE(g.finished());
  };
  quell::block_on(body());
}

TEST(Generator, CancellingTheConsumerWhileItWaitsCancelsTheProducerThereAndRunsItsCleanupFirst) {
  virtual_clock clock;
  quell::test::log log;
  auto producer = [&]() -> generator<int> {
    marker m{&log, "producer frame destroyed"};
    auto cleanup = [&]() -> task<> {
      co_await sleep_for(2ms);
      log.print("producer cleanup done at " + quell::test::at(clock));
    };
    co_await quell::defer(cleanup);
    co_yield 1;
    co_await sleep_for(1h);  // cancelled here
    log.print("not reached");
    co_yield 2;
  };
  auto body = [&]() -> task<> {
    auto g = producer();
    auto first = co_await g.next();
    log.print("got " + std::to_string(*first));
    auto second = co_await quell::move_on_after(5ms, g.next());
    log.print(std::string(second ? "got a second" : "moved on") + " at " + quell::test::at(clock));
    EXPECT_TRUE(g.finished());
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"got 1", "producer cleanup done at 7ms", "moved on at 7ms", "producer frame destroyed"}));
}

TEST(Generator, AValueProducedWhileTheCancelWasInFlightIsDeliveredAndCloseEndsTheProducerAtItsCoYield) {
  leaf_control<int> upstream(cancel_mode::async);
  quell::test::log log;
  auto producer = [&]() -> generator<int> {
    auto cleanup = [&]() -> task<> {
      log.print("producer cleanup");
      co_return;
    };
    co_await quell::defer(cleanup);
    const int v = co_await upstream.leaf();
    co_yield v;
    log.print("not reached: the co_yield is where the pending cancel ends it");
  };
  std::optional<int> got;
  auto g = producer();
  auto consumer = [&]() -> task<> {
    auto close_after = [&]() -> task<> {
      auto closing = g.close();  // runs however the consumer ends: a shielded cleanup
      co_await std::move(closing);
    };
    co_await quell::defer(close_after);
    got = co_await g.next();
    log.print("consumer went on");  // completion wins: the value is delivered and used
    co_await quell::yield();        // the consumer's cancel is sticky: it ends here
    log.print("not reached");
  };
  executor ex{consumer()};
  ex.poll_once();
  ex.cancel();  // reaches the producer's upstream operation, which answers later
  EXPECT_EQ(upstream.state, quell::test::leaf_state::cancelling);
  upstream.complete(42);  // completed anyway: the producer yields it
  EXPECT_TRUE(ex.poll_once());
  EXPECT_EQ(got, 42);  // delivered to the consumer (completion wins)
  EXPECT_EQ(log.lines, (lines{"consumer went on", "producer cleanup"}));
  EXPECT_TRUE(g.finished());
}

TEST(Generator, CloseRunsTheAsyncCleanupOfAProducerSuspendedAtCoYieldAndThrowsItsError) {
  virtual_clock clock;
  quell::test::log log;
  auto producer = [&](bool cleanup_fails) -> generator<int> {
    auto cleanup = [&log, &clock, cleanup_fails]() -> task<> {
      co_await sleep_for(1ms);
      log.print("cleanup at " + quell::test::at(clock));
      if (cleanup_fails) throw boom("cleanup failed");
    };
    co_await quell::defer(cleanup);
    co_yield 1;
    log.print("not reached");
  };
  auto body = [&]() -> task<> {
    auto g = producer(false);
    co_await g.next();
    co_await g.close();
    EXPECT_TRUE(g.finished());
    co_await g.close();  // finished: nothing to do
    auto h = producer(true);
    co_await h.next();
    EXPECT_THROW(co_await h.close(), boom);
    auto never_started = producer(false);
    co_await never_started.close();
  };
  executor(body(), clock).run();
  EXPECT_EQ(log.lines, (lines{"cleanup at 1ms", "cleanup at 2ms"}));
}

TEST(Generator, DestroyingOneSuspendedAtCoYieldDestroysItsFrame) {
  quell::test::log log;
  auto producer = [&]() -> generator<int> {
    marker m{&log, "producer frame destroyed"};
    co_yield 1;
    co_yield 2;
  };
  auto body = [&]() -> task<> {
    {
      auto g = producer();
      co_await g.next();
      log.print("dropping it");
    }
    log.print("dropped");
  };
  quell::block_on(body());
  EXPECT_EQ(log.lines, (lines{"dropping it", "producer frame destroyed", "dropped"}));
}

TEST(GeneratorDeathTest, DestroyingOneAtCoYieldWithAnAsyncCleanupThatHasNotRunTerminates) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto producer = []() -> generator<int> {
    auto cleanup = []() -> task<> { co_return; };
    co_await quell::defer(cleanup);
    co_yield 1;
  };
  auto body = [&]() -> task<> {
    auto g = producer();
    co_await g.next();
  };
  EXPECT_DEATH(quell::block_on(body()), "generator created at .* async cleanup that has not run");
}

TEST(Generator, LinesOfAStream) {
  auto lines_of = [](quell::tcp_stream& s) -> generator<std::string> {
    std::string buf;
    char chunk[7];  // small, so lines cross reads
    for (;;) {
      for (std::size_t nl; (nl = buf.find('\n')) != std::string::npos;) {
        co_yield buf.substr(0, nl);
        buf.erase(0, nl + 1);
      }
      const std::size_t n = co_await s.read_some(chunk);
      if (n == 0) break;
      buf.append(chunk, n);
    }
    if (!buf.empty()) co_yield buf;
  };
  auto body = [&]() -> task<std::vector<std::string>> {
    auto l = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
    auto [a, b] = co_await quell::join(l.accept(), quell::tcp_stream::connect(l.local_address()));
    co_await b.write_all("first line\nsecond\n\nlast, no newline");
    b.shutdown();
    std::vector<std::string> out;
    auto g = lines_of(a);
    while (auto line = co_await g.next()) out.push_back(*line);
    co_return out;
  };
  EXPECT_EQ(quell::block_on(body()), (std::vector<std::string>{"first line", "second", "", "last, no newline"}));
}

TEST(Generator, CancelledAnywhereTheProducersCleanupRunsOnceAndEveryValueIsSeenOnce) {
  std::unique_ptr<ledger> l;
  auto report = quell::testing::cancel_sweep(
      [&](virtual_clock&) -> task<> {
        l = std::make_unique<ledger>();
        return [](ledger& lg) -> task<> {
          auto producer = [&lg]() -> generator<int> {
            ledger::hold frame(lg, "producer frame");
            auto cleanup = [&lg]() -> task<> {
              ledger::hold h(lg, "producer cleanup");
              co_await sleep_for(1ms);
            };
            co_await quell::defer(cleanup);
            for (int i = 0; i < 3; ++i) {
              co_await sleep_for(1ms);
              lg.acquire("value " + std::to_string(i));
              co_yield i;
            }
          };
          // The generator is a parameter: parameters outlive the body for its cleanups, on every
          // exit (a local would be gone on a return, quell/defer.hpp).
          auto consume = [&lg](generator<int> g) -> task<> {
            auto close = [&g]() -> task<> { co_await g.close(); };
            co_await quell::defer(close);
            while (auto v = co_await g.next()) lg.release("value " + std::to_string(*v));
          };
          co_await consume(producer());
        }(*l);
      },
      [&](const quell::testing::sweep_point&) { l->expect_balanced(); });
  EXPECT_GT(report.points, 4u);
}
