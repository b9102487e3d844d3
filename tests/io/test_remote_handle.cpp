// executor::remote() (executor.hpp): a cancel from another thread wakes an executor blocked in the
// kernel; posted functions run on the executor's thread; the thread that takes the handle need not
// be the one that runs; with no handle left, an executor with nothing to do is stuck.

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "quell/quell.hpp"
#include "support/log.hpp"

using namespace std::chrono_literals;
using quell::executor;
using quell::on_cancel;
using quell::task;
using lines = std::vector<std::string>;

TEST(RemoteHandle, ACancelFromAnotherThreadWakesABlockedExecutor) {
  quell::test::log log;
  auto body = [&]() -> task<int> {
    co_await on_cancel(quell::pending(), log.hook("hook ran"));
    co_return 1;
  };
  executor ex{body()};
  std::thread t([h = ex.remote()] {
    std::this_thread::sleep_for(20ms);
    h.cancel(quell::cancel_reason(quell::cancel_kind::requested, "from another thread"));
  });
  try {
    ex.run();
    ADD_FAILURE() << "the root should have ended cancelled";
  } catch (const quell::cancelled_error& e) {
    EXPECT_NE(std::string(e.what()).find("from another thread"), std::string::npos);
  }
  t.join();
  EXPECT_EQ(log.lines, (lines{"hook ran"}));
}

TEST(RemoteHandle, PostedFunctionsRunOnTheExecutorThread) {
  quell::event ev;
  std::thread::id ran_on;
  auto body = [&]() -> task<> { co_await ev.wait(); };
  executor ex{body()};
  std::thread t([&, h = ex.remote()] {
    std::this_thread::sleep_for(10ms);
    h.post([&] {
      ran_on = std::this_thread::get_id();
      ev.set();
    });
  });
  ex.run();
  t.join();
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(RemoteHandle, AnExecutorWhoseRemoteWasTakenOnOneThreadRunsOnAnother) {
  // remote() makes the ring; it must belong to the thread that runs the executor, not this one.
  quell::event ev;
  std::thread::id ran_on;
  auto body = [&]() -> task<> {
    co_await ev.wait();
    co_await quell::sleep_for(1ms);  // a timer and a wait through the ring, on the running thread
    ran_on = std::this_thread::get_id();
  };
  executor ex{body()};
  quell::remote_handle h = ex.remote();
  std::thread runner([&] { ex.run(); });
  h.post([&] { ev.set(); });
  runner.join();
  EXPECT_NE(ran_on, std::thread::id());
  EXPECT_NE(ran_on, std::this_thread::get_id());
}

TEST(RemoteHandle, OnceTheLastHandleIsGoneAnExecutorWithNothingToDoReportsStuck) {
  auto body = [&]() -> task<> { co_await quell::event().wait(); };
  executor ex{body()};
  std::thread t([h = ex.remote()] { std::this_thread::sleep_for(20ms); });
  EXPECT_THROW(ex.run(), quell::stuck_error);
  t.join();
}
