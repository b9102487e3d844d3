// The io_uring reactor (detail/reactor.hpp) as the executor drives it: virtual time with real I/O
// in flight, io_uring blocked by seccomp, deferred task running, steps that must not wait, turns
// that make no system call, and more operations in one turn than the ring holds.

#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <system_error>
#include <tuple>
#include <vector>

#include "quell/quell.hpp"
#include "support/child.hpp"
#include "support/log.hpp"

using namespace std::chrono_literals;
using quell::executor;
using quell::race;
using quell::sleep_for;
using quell::task;
using quell::virtual_clock;
using quell::test::in_child;
using quell::test::say;
using lines = std::vector<std::string>;

TEST(VirtualTime, AnIdleTimeoutOnARealSocketFiresInVirtualTimeNotRealTime) {
  virtual_clock clock;
  clock.set_io_grace(100ms);  // the peer is real: give its bytes real time to arrive
  quell::test::log log;
  auto body = [&]() -> task<> {
    auto l = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
    quell::tcp_stream server, client;
    std::tie(server, client) = co_await quell::join(l.accept(), quell::tcp_stream::connect(l.local_address()));
    co_await client.write_all("hi");
    char buf[8];
    for (;;) {
      auto r = co_await race([&]() -> task<std::size_t> { co_return co_await server.read_some(buf); }(),
                             [&]() -> task<std::size_t> {
                               co_await sleep_for(10s);
                               co_return 999;
                             }());
      if (r == 999) break;
      log.print(
          "read " + std::to_string(r) + " at " +
          std::to_string(std::chrono::duration_cast<std::chrono::seconds>(clock.now().time_since_epoch()).count()) +
          "s");
    }
    log.print("idle timeout at " +
              std::to_string(std::chrono::duration_cast<std::chrono::seconds>(clock.now().time_since_epoch()).count()) +
              "s");
  };
  const auto started = std::chrono::steady_clock::now();
  executor{body(), clock}.run();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  EXPECT_EQ(log.lines, (lines{"read 2 at 0s", "idle timeout at 10s"}));
}

// Virtual time moves once a non-waiting look at the kernel finds nothing (no io_grace here). A
// loopback connect usually completes while its SQE is being submitted, as kernel-side work that
// only an enter with GETEVENTS runs: the look that submits it must run that work in the same
// system call, or the clock jumps past a connect that has already happened.
TEST(VirtualTime, IoThatCompletesWhileBeingSubmittedIsSeenBeforeVirtualTimeMoves) {
  virtual_clock clock;
  int connected = 0, timed_out = 0;
  auto body = [&]() -> task<> {
    auto l = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
    for (int i = 0; i < 20; ++i) {
      auto r = co_await quell::join(quell::move_on_after(5s, l.accept()),
                                    quell::move_on_after(5s, quell::tcp_stream::connect(l.local_address())));
      if (std::get<1>(r)) {
        ++connected;
      } else {
        ++timed_out;
      }
    }
    co_await l.close();
  };
  executor{body(), clock}.run();
  EXPECT_EQ(connected, 20);
  EXPECT_EQ(timed_out, 0);
  EXPECT_EQ(clock.now().time_since_epoch(), quell::duration::zero());
}

TEST(Reactor, WithIoUringBlockedBySeccompAnOperationFailsWithAClearError) {
  const int rc = in_child([] {
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return 10;
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) return 11;
    auto body = []() -> task<int> {
      try {
        co_await quell::file::open("/dev/null");
      } catch (const std::system_error& e) {
        co_return std::string(e.what()).find("io_uring is unavailable") != std::string::npos&& e.code().value() == EPERM
            ? 0
            : 2;
      }
      co_return 3;
    };
    return quell::block_on(body());
  });
  EXPECT_EQ(rc, 0);
}

TEST(Reactor, UsesDeferredTaskRunWhereTheKernelHasIt) {
  auto body = [&]() -> task<unsigned> {
    co_await quell::file::open("/dev/null");
    co_return quell::detail::reactor::current().setup_flags();
  };
  const unsigned flags = quell::block_on(body());
  // Informational on old kernels; this project's machines run 6.x.
  EXPECT_NE(flags, 0u);
}

namespace {
// A connected AF_UNIX pair: `ours` is adopted by a tcp_stream, `peer` stays a plain descriptor.
struct unix_pair {
  int ours = -1, peer = -1;
  unix_pair() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
      ours = sv[0];
      peer = sv[1];
    }
  }
  ~unix_pair() {
    if (peer >= 0) ::close(peer);
  }
};

// Calls poll_once (which never waits) up to `turns` times; whether the root finished.
template <class T>
bool finishes_by_polling(executor<T>& ex, int turns) {
  bool done = false;
  for (int i = 0; i < turns && !done; ++i) done = ex.poll_once();
  return done;
}
}  // namespace

// A step that must not wait (poll_once, or a turn while other tasks are ready) still collects a
// completion the kernel holds. With DEFER_TASKRUN that completion is kernel-side work run only by
// an io_uring_enter with GETEVENTS, which a step with nothing to submit makes only when the kernel
// flags the ring (TASKRUN_FLAG); without the flag the read below would never finish while nobody
// waits.
TEST(Reactor, AStepThatMustNotWaitCollectsACompletionTheKernelHolds) {
  unix_pair p;
  ASSERT_GE(p.ours, 0);
  auto body = [&]() -> task<std::size_t> {
    quell::tcp_stream s(p.ours);
    char buf[8];
    const std::size_t n = co_await s.read_some(buf);
    co_await s.close();
    co_return n;
  };
  executor<std::size_t> ex(body());
  EXPECT_FALSE(ex.poll_once());  // the read is started and submitted; no data yet
  EXPECT_FALSE(ex.poll_once());
  say(p.peer, "x");
  ASSERT_TRUE(finishes_by_polling(ex, 10));
  EXPECT_EQ(ex.run(), 1u);
}

// And if the read is cancelled instead: the kernel's answer to the cancel (the read's own
// -ECANCELED completion) is also work it holds for us, so poll_once alone sees the race end.
TEST(Reactor, AStepThatMustNotWaitCollectsTheEndOfACancelledRead) {
  unix_pair p;
  ASSERT_GE(p.ours, 0);
  auto body = [&]() -> task<std::size_t> {
    quell::tcp_stream s(p.ours);
    char buf[8];
    auto later = []() -> task<int> {
      for (int i = 0; i < 3; ++i) co_await quell::yield();  // the read reaches the kernel meanwhile
      co_return 7;
    };
    auto r = co_await race(s.read_some(buf), later());
    EXPECT_EQ(quell::detail::reactor::current().in_flight(), 0u);
    co_await s.close();
    co_return r.index();
  };
  executor<std::size_t> ex(body());
  ASSERT_TRUE(finishes_by_polling(ex, 20));
  EXPECT_EQ(ex.run(), 1u);
}

// The other side of the rule above: while a read waits in the kernel and another task keeps
// yielding, a turn with nothing to submit and no completion held by the kernel makes no system
// call (before TASKRUN_FLAG every such turn entered the kernel to look).
TEST(Reactor, TurnsWithNothingToSubmitAndNothingHeldByTheKernelMakeNoSystemCall) {
  unix_pair p;
  ASSERT_GE(p.ours, 0);
  std::uint64_t during = ~std::uint64_t{0};
  auto body = [&]() -> task<> {
    quell::tcp_stream s(p.ours);
    char buf[8];
    auto spin = [&]() -> task<int> {
      co_await quell::yield();  // the read is in the kernel from here on
      const std::uint64_t enters0 = quell::detail::reactor::current().enters();
      for (int i = 0; i < 100; ++i) co_await quell::yield();
      during = quell::detail::reactor::current().enters() - enters0;
      co_return 7;
    };
    auto r = co_await race(s.read_some(buf), spin());
    EXPECT_EQ(r.index(), 1u);
    EXPECT_EQ(quell::detail::reactor::current().in_flight(), 0u);
    co_await s.close();
  };
  quell::block_on(body());
  EXPECT_EQ(during, 0u);
}

// A turn that starts more operations than the ring has entries (4,096) fills the submission
// queue mid-flush: the reactor must submit what it has and go on, losing and repeating nothing.
TEST(Reactor, MoreOperationsStartedInOneTurnThanTheRingHoldsAllRunOnceAndComplete) {
  constexpr int n = 6000;
  const std::string path = "/tmp/quell-many-" + std::to_string(::getpid());
  {
    std::string data(n, '\0');
    for (int i = 0; i < n; ++i) data[i] = static_cast<char>(i % 251);
    FILE* w = std::fopen(path.c_str(), "wb");
    ASSERT_NE(w, nullptr);
    ASSERT_EQ(std::fwrite(data.data(), 1, data.size(), w), data.size());
    std::fclose(w);
  }
  std::vector<int> got(n, -1);
  auto body = [&]() -> task<std::uint64_t> {
    quell::file f = co_await quell::file::open(path);
    const std::uint64_t enters0 = quell::detail::reactor::current().enters();
    co_await quell::with_scope([&](quell::scope& s) -> task<> {
      for (int i = 0; i < n; ++i) {
        s.spawn([&f, &got, i]() -> task<> {
          char c = 0;
          const std::size_t k = co_await f.read_at(std::span<char>(&c, 1), static_cast<std::uint64_t>(i));
          got[i] = k == 1 ? static_cast<unsigned char>(c) : -2;
        });
      }
      co_return;
    });
    const std::uint64_t enters = quell::detail::reactor::current().enters() - enters0;
    EXPECT_EQ(quell::detail::reactor::current().in_flight(), 0u);
    co_await f.close();
    co_return enters;
  };
  const std::uint64_t enters = quell::block_on(body());
  ::unlink(path.c_str());
  for (int i = 0; i < n; ++i) ASSERT_EQ(got[i], i % 251) << "read " << i;
  EXPECT_GE(enters, 2u);  // one when the queue was full, one at the end of the turn
}
