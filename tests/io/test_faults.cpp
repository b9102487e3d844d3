// The reactor's fault-injection mode: simulated -EINTR, -EAGAIN, -ENOMEM, -ECANCELED, short reads
// and writes, and a full submission queue. Each error path gives a clear error or is absorbed,
// and loses nothing.
#include <gtest/gtest.h>

#include <cerrno>
#include <functional>
#include <span>
#include <string>
#include <system_error>
#include <tuple>

#include "quell/quell.hpp"

using quell::task;
using quell::detail::fault_injector;

namespace {

struct scripted : fault_injector {
  std::function<decision(int)> script;
  int submissions = 0;
  int faults = 0;
  decision on_submit(const quell::detail::io_op&) noexcept override {
    decision d = script(submissions++);
    if (d.fake_result != 0 || d.max_len != 0 || d.sq_full) ++faults;
    return d;
  }
};

// Installs `f` on this executor's reactor for the lifetime of the guard.
struct injecting {
  explicit injecting(fault_injector& f) { quell::detail::reactor::current().inject_faults(&f); }
  ~injecting() { quell::detail::reactor::current().inject_faults(nullptr); }
};

// One receive per read: the faults are injected into the kernel's operations, and a socket with
// receive-ahead reads none of its own (tests/io/test_receive_ahead.cpp covers that path).
task<std::tuple<quell::tcp_stream, quell::tcp_stream>> connected_pair() {
  quell::listen_options one_accept_per_call;
  one_accept_per_call.accept_queue = 0;
  auto l = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0), one_accept_per_call);
  quell::tcp_stream a, b;
  std::tie(a, b) = co_await quell::join(quell::tcp_stream::connect(l.local_address()), l.accept());
  a.set_receive_ahead(false);
  b.set_receive_ahead(false);
  co_return std::make_tuple(std::move(a), std::move(b));
}

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + i % 26);
  return s;
}

}  // namespace

TEST(Faults, InterruptedAndWouldBlockSubmissionsAreRetriedTransparently) {
  scripted f;
  f.script = [](int n) {
    fault_injector::decision d;
    if (n % 2 == 0) d.fake_result = (n % 4 == 0) ? -EINTR : -EAGAIN;  // every other submission
    return d;
  };
  auto body = [&]() -> task<> {
    quell::tcp_stream a, b;
    std::tie(a, b) = co_await connected_pair();
    injecting on(f);
    const std::string msg = pattern(4000);
    for (int round = 0; round < 20; ++round) {
      std::string got(msg.size(), '\0');
      co_await quell::join(a.write_all(msg), b.read_exact(std::span<char>(got)));
      EXPECT_EQ(got, msg);
    }
    auto u1 = quell::udp_socket::bind(quell::address::parse("127.0.0.1", 0));
    auto u2 = quell::udp_socket::bind(quell::address::parse("127.0.0.1", 0));
    char buf[8];
    auto [sent, d] = co_await quell::join(u1.send_to("dgram", u2.local_address()), u2.recv_from(buf));
    EXPECT_EQ(std::string(buf, d.size), "dgram");
    (void)sent;
  };
  quell::block_on(body());
  EXPECT_GT(f.faults, 20);
}

TEST(Faults, OutOfMemoryAndSpuriousCancellationAreClearErrorsAndTheBytesWaitForTheNextRead) {
  for (const int err : {ENOMEM, ECANCELED}) {
    scripted f;
    f.script = [err](int n) {
      fault_injector::decision d;
      if (n == 0) d.fake_result = -err;
      return d;
    };
    auto body = [&]() -> task<> {
      quell::tcp_stream a, b;
      std::tie(a, b) = co_await connected_pair();
      co_await a.write_all("still here");
      char buf[16];
      {
        injecting on(f);
        try {
          co_await b.read_some(buf);
          ADD_FAILURE() << "expected error " << err;
        } catch (const std::system_error& e) {
          EXPECT_EQ(e.code().value(), err) << e.what();
        }
      }
      std::size_t n = co_await b.read_some(buf);  // the kernel never saw the failed read
      EXPECT_EQ(std::string(buf, n), "still here");
    };
    quell::block_on(body());
  }
}

TEST(Faults, ShortReadsAndWritesStillTransferEveryByteInOrder) {
  scripted f;
  f.script = [](int n) {
    fault_injector::decision d;
    d.max_len = 1 + static_cast<unsigned>(n % 3);  // 1 to 3 bytes per submission
    return d;
  };
  auto body = [&]() -> task<> {
    quell::tcp_stream a, b;
    std::tie(a, b) = co_await connected_pair();
    injecting on(f);
    const std::string msg = pattern(3000);
    std::string got(msg.size(), '\0');
    std::size_t written = 0;
    co_await quell::join(a.write_all(msg, &written), b.read_exact(std::span<char>(got)));
    EXPECT_EQ(written, msg.size());
    EXPECT_EQ(got, msg);
    co_await a.write_all("xyz");
    char small[16];
    std::size_t n = co_await b.read_some(small);
    EXPECT_LE(n, 3u);
    EXPECT_EQ(std::string(small, n), std::string("xyz").substr(0, n));
  };
  quell::block_on(body());
  EXPECT_GT(f.faults, 1000);
}

TEST(Faults, AFullSubmissionQueueStillSubmitsEveryOperation) {
  scripted f;
  f.script = [](int) {
    fault_injector::decision d;
    d.sq_full = true;
    return d;
  };
  auto body = [&]() -> task<> {
    quell::tcp_stream a, b;
    std::tie(a, b) = co_await connected_pair();
    injecting on(f);
    const std::string msg = pattern(1000);
    std::string got(msg.size(), '\0');
    co_await quell::join(a.write_all(msg), b.read_exact(std::span<char>(got)),
                         quell::sleep_for(std::chrono::milliseconds(1)));
    EXPECT_EQ(got, msg);
  };
  quell::block_on(body());
  EXPECT_GT(f.faults, 1);
}

// An operation gets its user_data slot only when it becomes an SQE; one queued again after a
// short write keeps the slot it has, and gives it back if it is cancelled before the next flush.
TEST(Faults, AWriteCancelledWhileQueuedAfterAShortWriteGivesBackItsSlotAndLosesNoByte) {
  scripted f;
  f.script = [](int) {
    fault_injector::decision d;
    d.max_len = 1;  // every submission writes one byte, then the op is queued again
    return d;
  };
  auto body = [&]() -> task<> {
    quell::tcp_stream a, b;
    std::tie(a, b) = co_await connected_pair();
    quell::detail::reactor& io = quell::detail::reactor::current();
    const std::string msg = pattern(1000);
    std::size_t written = 0;
    {
      injecting on(f);
      auto after_some_turns = []() -> task<int> {
        for (int i = 0; i < 5; ++i) co_await quell::yield();
        co_return 0;
      };
      auto r = co_await quell::race(a.write_all(msg, &written), after_some_turns());
      EXPECT_EQ(r.index(), 1u);  // the write was cancelled part way
    }
    EXPECT_GT(written, 0u);
    EXPECT_LT(written, msg.size());
    EXPECT_EQ(io.slots_taken(), 0u);
    EXPECT_EQ(io.in_flight(), 0u);
    std::string got(written, '\0');  // exactly what was reported written arrives, in order
    co_await b.read_exact(std::span<char>(got));
    EXPECT_EQ(got, msg.substr(0, written));
  };
  quell::block_on(body());
}

TEST(Faults, AReadCancelledInTheTurnItStartedNeverTakesASlot) {
  auto body = [&]() -> task<> {
    quell::tcp_stream a, b;
    std::tie(a, b) = co_await connected_pair();
    quell::detail::reactor& io = quell::detail::reactor::current();
    std::size_t taken_while_queued = 99;
    auto look = [&]() -> task<int> {  // runs after the read was started, in the same turn
      taken_while_queued = io.slots_taken();
      co_return 0;
    };
    char buf[16];
    const std::uint64_t enters = io.enters();
    auto r = co_await quell::race(b.read_some(buf), look());
    EXPECT_EQ(r.index(), 1u);
    EXPECT_EQ(taken_while_queued, 0u);
    EXPECT_EQ(io.enters(), enters);  // and no system call
    EXPECT_EQ(io.slots_taken(), 0u);
  };
  quell::block_on(body());
}
