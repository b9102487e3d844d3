// run_blocking: values, exceptions, a function that honours its stop token, one that ignores it
// (the caller waits, graceful or forced), cancellation while queued (the function never runs),
// the completion window (a value on its way home is delivered), many small jobs on a small pool,
// and one pool for every core of a runtime. ThreadSanitizer runs this file.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <latch>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "quell/quell.hpp"
#include "quell/testing.hpp"

using quell::run_blocking;
using quell::task;

namespace {

// Spins the executor (never blocking) until `ready` holds: the test thread's view of "the job has
// started on its pool thread". The bound only keeps a broken build from hanging the suite.
template <class Ex, class P>
void turn_until(Ex& ex, P ready) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!ready()) {
    ASSERT_FALSE(ex.poll_once()) << "the root finished before the condition held";
    ASSERT_LT(std::chrono::steady_clock::now(), give_up) << "the condition never held";
    std::this_thread::yield();
  }
}

void wait_for(const std::atomic<bool>& flag) {
  while (!flag.load()) std::this_thread::yield();
}

}  // namespace

TEST(Blocking, ReturnsTheValueOnTheCallersThreadAfterRunningElsewhere) {
  const auto caller = std::this_thread::get_id();
  std::thread::id ran_on;
  auto root = [&]() -> task<int> {
    int v = co_await run_blocking([&] {
      ran_on = std::this_thread::get_id();
      return 42;
    });
    EXPECT_EQ(std::this_thread::get_id(), caller);
    co_return v;
  };
  EXPECT_EQ(quell::block_on(root()), 42);
  EXPECT_NE(ran_on, caller);
}

TEST(Blocking, AnExceptionPropagatesAndAVoidFunctionWorks) {
  int touched = 0;
  auto root = [&]() -> task<> {
    co_await run_blocking([&] { touched = 1; });
    auto thrower = [] { throw std::runtime_error("legacy client: connection refused"); };
    try {
      co_await run_blocking(thrower);
      ADD_FAILURE() << "no exception";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "legacy client: connection refused");
    }
  };
  quell::block_on(root());
  EXPECT_EQ(touched, 1);
}

TEST(Blocking, CancellingRequestsStopAndWaitsForTheFunctionWhichHonoursIt) {
  std::atomic<bool> started{false};
  std::atomic<bool> returned{false};
  bool delivered = false;
  auto root = [&]() -> task<> {
    auto fn = [&](std::stop_token st) {
      started = true;
      while (!st.stop_requested()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      returned = true;
      return std::string("stopped early");
    };
    std::string s = co_await run_blocking(fn);
    EXPECT_EQ(s, "stopped early");
    delivered = true;                         // completion wins: the value came back...
    co_await quell::this_task::checkpoint();  // ...and the request is still pending here
    ADD_FAILURE() << "ran past the checkpoint";
  };
  quell::executor ex{root()};
  turn_until(ex, [&] { return started.load(); });
  ex.cancel();
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_TRUE(returned);
  EXPECT_TRUE(delivered);
}

// Nothing runs unowned: neither request level lets the caller (and so the executor) end while the
// function still runs, even if it never looks at its token.
class BlockingIgnoresItsToken : public ::testing::TestWithParam<quell::cancel_level> {};

TEST_P(BlockingIgnoresItsToken, TheCallerWaitsForItWhateverTheLevel) {
  std::atomic<bool> started{false};
  std::atomic<bool> release{false};
  std::atomic<bool> returned{false};
  bool delivered = false;
  auto root = [&]() -> task<> {
    auto fn = [&] {
      started = true;
      wait_for(release);
      returned = true;
      return 7;
    };
    int v = co_await run_blocking(fn);
    delivered = v == 7;
    co_await quell::this_task::checkpoint();
  };
  quell::executor ex{root()};
  turn_until(ex, [&] { return started.load(); });
  if (GetParam() == quell::cancel_level::forced) {
    ex.force_cancel();
  } else {
    ex.cancel();
  }
  for (int i = 0; i < 50; ++i) {
    EXPECT_FALSE(ex.poll_once()) << "the caller ended while its function still ran";
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  release = true;
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_TRUE(returned);
  EXPECT_TRUE(delivered);
}

INSTANTIATE_TEST_SUITE_P(Blocking, BlockingIgnoresItsToken,
                         ::testing::Values(quell::cancel_level::graceful, quell::cancel_level::forced),
                         [](const auto& info) {
                           return info.param == quell::cancel_level::forced ? std::string("Forced")
                                                                            : std::string("Graceful");
                         });

TEST(Blocking, AJobCancelledWhileQueuedNeverRunsAndTheOneAheadIsUnaffected) {
  std::atomic<bool> first_started{false};
  std::atomic<bool> release{false};
  std::atomic<int> second_ran{0};
  int first_value = 0;
  bool second_cancelled = false;
  auto root = [&]() -> task<> {
    co_await quell::with_scope([&](quell::scope& s) -> task<> {
      auto first = [&]() -> task<> {
        auto fn = [&] {
          first_started = true;
          wait_for(release);
          return 1;
        };
        first_value = co_await run_blocking(fn);
      };
      auto second = [&]() -> task<> {
        auto fn = [&] { return ++second_ran; };
        co_await run_blocking(fn);
      };
      s.spawn(first());
      while (!first_started) co_await quell::yield();  // the only thread is busy from here on
      auto h = s.spawn(second());
      co_await quell::yield();  // `second` is queued behind `first`
      h.cancel();
      second_cancelled = h.done();  // ended at once: it only had to leave the queue
      release = true;
    });
  };
  quell::executor ex{root()};
  ex.set_blocking_threads(1);
  ex.run();
  EXPECT_TRUE(second_cancelled);
  EXPECT_EQ(second_ran, 0);
  EXPECT_EQ(first_value, 1);
}

// A thread counts as idle until it wakes up and takes a job. Two jobs submitted in one turn, with
// one idle thread left by an earlier job, must not both count on it: the second would wait in the
// queue behind the first, which waits for it. (The wait is bounded so that the bug fails the
// test instead of hanging it.)
TEST(Blocking, TwoJobsSubmittedTogetherDoNotShareOneIdleThread) {
  bool released = false;
  auto root = [&]() -> task<> {
    auto warm_up = [] { return 0; };
    co_await run_blocking(warm_up);  // leaves one thread, idle once it has looked for more work
    const quell::detail::blocking_pool& pool = quell::detail::current_blocking_pool();
    while (pool.idle_threads() < 1) std::this_thread::yield();
    std::latch latch(1);
    auto waits = [&] {
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!latch.try_wait()) {
        if (std::chrono::steady_clock::now() > give_up) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      return true;
    };
    auto releases = [&] { latch.count_down(); };
    auto [ok, done] = co_await quell::join(run_blocking(waits), run_blocking(releases));
    (void)done;
    released = ok;
  };
  quell::block_on(root());
  EXPECT_TRUE(released) << "the second job never ran while the first waited for it";
}

TEST(Blocking, AnAlreadyCancelledCallerNeverStartsTheFunction) {
  std::atomic<int> ran{0};
  auto root = [&]() -> task<> {
    co_await quell::with_scope([&](quell::scope& s) -> task<> {
      auto child = [&]() -> task<> {
        co_await quell::yield();  // the cancel arrives here
        auto fn = [&] { ++ran; };
        co_await run_blocking(fn);
      };
      auto h = s.spawn(child());
      h.cancel();
      co_return;
    });
  };
  quell::block_on(root());
  EXPECT_EQ(ran, 0);
}

TEST(Blocking, TenThousandSmallJobsOnFourThreadsAllComeBack) {
  constexpr int jobs = 10000;
  std::atomic<int> max_parallel{0};
  std::atomic<int> now_running{0};
  std::set<std::thread::id> threads_seen;
  std::mutex seen_m;
  long long sum = 0;
  auto root = [&]() -> task<> {
    std::vector<int> items(jobs);
    for (int i = 0; i < jobs; ++i) items[i] = i;
    auto one = [&](int i) -> task<> {
      auto fn = [&, i] {
        int n = ++now_running;
        int m = max_parallel.load();
        while (n > m && !max_parallel.compare_exchange_weak(m, n)) {
        }
        {
          std::lock_guard<std::mutex> lock(seen_m);
          threads_seen.insert(std::this_thread::get_id());
        }
        --now_running;
        return i;
      };
      sum += co_await run_blocking(fn);
    };
    co_await quell::for_each(items, 64, one);
  };
  quell::executor ex{root()};
  ex.set_blocking_threads(4);
  ex.run();
  EXPECT_EQ(sum, static_cast<long long>(jobs) * (jobs - 1) / 2);
  EXPECT_LE(max_parallel.load(), 4);
  EXPECT_LE(threads_seen.size(), 4u);
}

TEST(Blocking, EveryCoreOfARuntimeSharesOnePool) {
  quell::runtime rt{quell::runtime_options{.cores = 2, .blocking_threads = 2}};
  std::atomic<int> ran{0};
  auto root = [&]() -> task<> {
    auto here = [&]() -> task<const void*> {
      auto fn = [&] { ++ran; };
      co_await run_blocking(fn);
      co_return &quell::detail::current_blocking_pool();
    };
    std::vector<const void*> pools = co_await quell::on_each_core(here);
    EXPECT_EQ(pools.size(), 2u);
    EXPECT_EQ(pools[0], pools[1]);
  };
  rt.run(root());
  EXPECT_EQ(ran, 2);
}

TEST(Blocking, OutsideAnExecutorOrInALockstepRuntimeIsAClearError) {
  quell::runtime rt{quell::runtime_options{.cores = 2, .one_thread = true}};
  auto root = [&]() -> task<> {
    auto fn = [] { return 1; };
    try {
      co_await run_blocking(fn);
      ADD_FAILURE() << "no error";
    } catch (const std::logic_error& e) {
      EXPECT_NE(std::string(e.what()).find("one_thread"), std::string::npos) << e.what();
    }
  };
  rt.run(root());
  EXPECT_THROW(quell::detail::current_blocking_pool(), std::logic_error);
}

// The sweep cancels the caller at each suspension point and in each completion window (the value
// is home, the caller has not resumed): whatever a function returned is delivered, and a job
// cancelled before it ran never runs. The pool's timing varies between runs; the invariant holds
// for every interleaving.
TEST(Blocking, CancelSweepEveryFunctionThatRanHasItsResultDelivered) {
  std::atomic<int> ran{0};
  int delivered = 0;
  auto make = [&](quell::virtual_clock&) -> task<> {
    ran = 0;
    delivered = 0;
    auto worker = [&](int i) -> task<> {
      auto fn = [&, i] {
        ++ran;
        return i;
      };
      int v = co_await run_blocking(fn);
      (void)v;
      ++delivered;
    };
    return [](auto w) -> task<> { co_await quell::join(w(1), w(2), w(3)); }(worker);
  };
  auto check = [&](const quell::testing::sweep_point& p) {
    if (p.outcome == quell::testing::sweep_point::ended::error) std::rethrow_exception(p.error);
    if (ran.load() != delivered) {
      throw std::logic_error("ran " + std::to_string(ran.load()) + ", delivered " + std::to_string(delivered));
    }
  };
  auto report = quell::testing::cancel_sweep(make, check);
  EXPECT_GE(report.points, 3u);
  EXPECT_GE(report.completions, 3u);
}
