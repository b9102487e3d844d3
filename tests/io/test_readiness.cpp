// wait_readable / wait_writable on descriptors quell does not own (pipes here): readiness,
// cancellation in the same turn (no system call) and in the kernel, completion wins, bad input,
// and a sweep cancelling a reader at every suspension point without losing a byte.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>

#include "quell/quell.hpp"
#include "quell/testing.hpp"

using quell::executor;
using quell::race;
using quell::task;
using quell::wait_readable;
using quell::wait_writable;

namespace {

quell::detail::reactor& io() { return quell::detail::reactor::current(); }

struct pipe_pair {
  int r = -1, w = -1;
  pipe_pair() {
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) throw std::system_error(errno, std::system_category(), "pipe2");
    r = fds[0];
    w = fds[1];
  }
  ~pipe_pair() {
    if (r >= 0) ::close(r);
    if (w >= 0) ::close(w);
  }
  void put(const std::string& s) const { ASSERT_EQ(::write(w, s.data(), s.size()), static_cast<ssize_t>(s.size())); }
  std::string take() const {
    char buf[256];
    const ssize_t n = ::read(r, buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  }
};

task<unsigned> after_one_turn(unsigned v) {
  co_await quell::yield();
  co_return v;
}

}  // namespace

TEST(Readiness, AWaitEndsWhenTheDescriptorBecomesReadyAndReportsTheReadyEvents) {
  pipe_pair p;
  auto writer = [&]() -> task<unsigned> {
    co_await quell::yield();
    p.put("hi");
    co_return 0;
  };
  auto body = [&]() -> task<> {
    auto [events, ignored] = co_await quell::join(wait_readable(p.r), writer());
    (void)ignored;
    EXPECT_TRUE(events & POLLIN);
    EXPECT_EQ(p.take(), "hi");
    EXPECT_TRUE(co_await wait_writable(p.w) & POLLOUT);  // an empty pipe has room at once
  };
  quell::block_on(body());
}

TEST(Readiness, AWaitCancelledInTheSameTurnCostsNoSystemCall) {
  pipe_pair p;
  auto body = [&]() -> task<> {
    (void)co_await quell::yield();
    const auto enters = io().enters();
    auto r = co_await race(wait_readable(p.r), quell::ready(7u));
    EXPECT_EQ(r, 7u);
    EXPECT_EQ(io().enters(), enters);
    EXPECT_EQ(io().in_flight(), 0u);
  };
  quell::block_on(body());
}

TEST(Readiness, AWaitCancelledInTheKernelIsOutOfItBeforeTheRaceReturnsAndTheDataStaysReadable) {
  pipe_pair p;
  auto body = [&]() -> task<> {
    const auto enters = io().enters();
    auto r = co_await race(wait_readable(p.r), after_one_turn(5));
    EXPECT_EQ(r, 5u);
    EXPECT_GT(io().enters(), enters);  // the wait did reach the kernel
    EXPECT_EQ(io().in_flight(), 0u);   // and the kernel let go of it before race returned
    p.put("later");
    EXPECT_TRUE(co_await wait_readable(p.r) & POLLIN);
    EXPECT_EQ(p.take(), "later");
  };
  quell::block_on(body());
}

TEST(Readiness, ReadinessReportedBeforeTheCancelLandedIsDeliveredCompletionWins) {
  pipe_pair p;
  p.put("x");
  executor ex{wait_readable(p.r)};
  EXPECT_FALSE(ex.poll_once());  // submitted; the kernel answers at once (the pipe has data)
  ASSERT_EQ(ex.reactor_if_any()->in_flight(), 0u) << "the readiness was not reaped in the first turn";
  ex.cancel();                    // the waiter has not run yet: the cancel comes too late
  EXPECT_TRUE(ex.run() & POLLIN);  // delivered, not cancelled
}

TEST(Readiness, AHangUpIsReportedWithoutBeingAskedFor) {
  pipe_pair p;
  ::close(p.w);
  p.w = -1;
  EXPECT_TRUE(quell::block_on(wait_readable(p.r)) & POLLHUP);
}

TEST(Readiness, ADescriptorThatIsNotOpenIsAClearErrorAndTheExecutorGoesOn) {
  pipe_pair p;
  auto errno_of = [](int fd) -> task<int> {
    try {
      (void)co_await wait_readable(fd);
    } catch (const std::system_error& e) {
      co_return e.code().value();
    }
    co_return 0;
  };
  auto body = [&]() -> task<> {
    EXPECT_TRUE(co_await wait_writable(p.w) & POLLOUT);  // the reactor (and its ring's fd) exists now
    const int closed = ::dup(p.r);                       // so this number stays free
    ::close(closed);
    EXPECT_EQ(co_await errno_of(closed), EBADF);
    EXPECT_EQ(co_await errno_of(-1), EBADF);
    p.put("ok");
    EXPECT_TRUE(co_await wait_readable(p.r) & POLLIN);
    EXPECT_EQ(p.take(), "ok");
  };
  quell::block_on(body());
  EXPECT_THROW((void)wait_readable(p.r).await_ready(), std::logic_error);  // outside an executor
}

// A reader that waits for readiness and then reads, cancelled anywhere: every byte the writer
// put in the pipe is either read or still in the pipe, never lost.
TEST(Readiness, AReaderCancelledAtEverySuspensionPointLosesNoByte) {
  std::unique_ptr<pipe_pair> p;
  std::string got;
  auto report = quell::testing::cancel_sweep(
      [&](quell::virtual_clock&) -> task<> {
        p = std::make_unique<pipe_pair>();
        got.clear();
        return [](pipe_pair& pp, std::string& out) -> task<> {
          auto writer = [&]() -> task<> {
            for (const char* s : {"ab", "cd", "ef"}) {
              co_await quell::yield();
              pp.put(s);
            }
          };
          auto reader = [&]() -> task<> {
            while (out.size() < 6) {
              co_await wait_readable(pp.r);
              out += pp.take();
            }
          };
          co_await quell::join(writer(), reader());
        }(*p, got);
      },
      [&](const quell::testing::sweep_point&) {
        const std::string all = got + p->take();
        if (std::string("abcdef").compare(0, all.size(), all) != 0)
          throw std::logic_error("bytes lost or reordered: " + all);
      });
  EXPECT_GT(report.points, 3u);
}
