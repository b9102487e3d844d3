// Signals (signal.hpp) and run_main: a wait receives a signal sent to the process; SIGINT runs the
// cleanup and exits zero; a second SIGINT forces it; a third exits at once; the grace period forces
// a cleanup that would not end. Each runs in a forked child: signals are process-wide.

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "quell/quell.hpp"
#include "support/child.hpp"

using namespace std::chrono_literals;
using quell::on_cancel;
using quell::sleep_for;
using quell::task;
using quell::test::in_child;
using quell::test::read_until;
using quell::test::say;

TEST(Signals, AWaitReceivesTheSignalSentToTheProcess) {
  const int rc = in_child([] {
    quell::signal_set sigs{SIGUSR1};
    auto body = [&]() -> task<int> {
      ::kill(::getpid(), SIGUSR1);
      co_return co_await sigs.wait();
    };
    return quell::block_on(body()) == SIGUSR1 ? 0 : 1;
  });
  EXPECT_EQ(rc, 0);
}

TEST(Signals, RunMainOnSigintRunsTheCleanupHooksAndExitsZero) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    auto body = [&]() -> task<int> {
      say(p[1], "ready\n");
      co_await on_cancel(quell::pending(), [&]() -> task<> {
        co_await sleep_for(1ms);  // async cleanup
        say(p[1], "cleanup ran\n");
      }());
      co_return 3;
    };
    ::_exit(quell::run_main(body()));
  }
  ::close(p[1]);
  EXPECT_NE(read_until(p[0], "ready\n").find("ready"), std::string::npos);
  ::kill(pid, SIGINT);
  const std::string rest = read_until(p[0], "cleanup ran\n");
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(p[0]);
  EXPECT_NE(rest.find("cleanup ran"), std::string::npos);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Signals, ASecondSigintForcesACleanupThatWouldNotEnd) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    auto body = [&]() -> task<int> {
      say(p[1], "ready\n");
      co_await on_cancel(quell::pending(), [&]() -> task<> {
        say(p[1], "cleanup started\n");
        co_await on_cancel(sleep_for(1h), [&] { say(p[1], "cleanup cancelled\n"); });
      }());
      co_return 3;
    };
    ::_exit(quell::run_main(body(), 1h));
  }
  ::close(p[1]);
  read_until(p[0], "ready\n");
  ::kill(pid, SIGINT);
  read_until(p[0], "cleanup started\n");
  ::kill(pid, SIGINT);
  const std::string rest = read_until(p[0], "cleanup cancelled\n");
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(p[0]);
  EXPECT_NE(rest.find("cleanup cancelled"), std::string::npos);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGINT);
}

TEST(Signals, AThirdSigintExitsAtOnceWhenTheForcedCancellationCannotFinish) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    // A leaf that never completes and answers every cancel "not yet" (an operation the kernel
    // cannot interrupt): the forced cancellation can never finish.
    struct deaf {
      int fd;
      bool await_ready() const noexcept { return false; }
      void await_suspend(std::coroutine_handle<>) const noexcept {}
      bool await_cancel(std::coroutine_handle<>) const noexcept {
        say(fd, "a cancel reached the leaf\n");
        return false;
      }
      bool await_must_resume() const noexcept { return true; }
      void await_resume() const noexcept {}
    };
    auto body = [&]() -> task<int> {
      say(p[1], "ready\n");
      co_await on_cancel(quell::pending(), [&]() -> task<> {
        say(p[1], "cleanup started\n");
        co_await deaf{p[1]};
      }());
      co_return 3;
    };
    ::_exit(quell::run_main(body(), 1h));
  }
  ::close(p[1]);
  read_until(p[0], "ready\n");
  ::kill(pid, SIGINT);
  read_until(p[0], "cleanup started\n");
  ::kill(pid, SIGINT);
  read_until(p[0], "a cancel reached the leaf\n");
  ::kill(pid, SIGINT);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(p[0]);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGINT);
}

TEST(Signals, TheGracePeriodForcesACleanupThatWouldNotEnd) {
  const int rc = in_child([] {
    auto body = []() -> task<int> {
      ::kill(::getpid(), SIGTERM);  // blocked by run_main in this (only) thread: read via signalfd
      co_await on_cancel(quell::pending(), []() -> task<> { co_await sleep_for(1h); }());
      co_return 3;
    };
    return quell::run_main(body(), 30ms);
  });
  EXPECT_EQ(rc, 128 + SIGTERM);
}
