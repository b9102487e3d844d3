// Both branches of every I/O leaf's cancel decision, made certain. The fault injector holds the
// operation "in the kernel" and answers its cancel with the final result each test chooses: the
// kernel stopped it (-ECANCELED), it completed anyway with a value, or it failed anyway with a
// real error. The outcome must be what the leaf's header says: a value or an error delivered
// (completion wins), or the operation cancelled with what it received kept for the next call.
// The real-kernel variants force the same crossing where a real socket can: the operation
// completes in the kernel, its completion is held un-reaped, the cancel goes out and finds nothing
// to stop, and the completion arrives with the cancel already sent.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <system_error>
#include <tuple>

#include "quell/quell.hpp"

using quell::address;
using quell::race;
using quell::task;
using quell::tcp_listener;
using quell::tcp_stream;
using quell::yield;
using quell::detail::fault_injector;
using quell::detail::io_op;

namespace {

quell::detail::reactor& io() { return quell::detail::reactor::current(); }

// Holds the first operation submitted after it is installed; answers that operation's cancel
// with `result`, after `fill` wrote what the kernel would have (bytes into the caller's buffer).
struct held_op : fault_injector {
  held_op(int r, std::function<void(io_op&)> f) : result(r), fill(std::move(f)) {}
  int result;
  std::function<void(io_op&)> fill;
  bool held = false;
  bool answered = false;
  decision on_submit(const io_op&) noexcept override {
    decision d;
    d.hold_until_cancel = !held;
    held = true;
    return d;
  }
  int answer_cancel(io_op& op) noexcept override {
    answered = true;
    if (fill) fill(op);
    return result;
  }
};

struct injecting {
  explicit injecting(fault_injector& f) { io().inject_faults(&f); }
  ~injecting() { io().inject_faults(nullptr); }
};

struct next_turn_won {};
task<next_turn_won> next_turn() {
  co_await yield();
  co_return next_turn_won{};
}

enum class ended { value, error, cancelled };
struct seen {
  ended how = ended::cancelled;
  int code = 0;  // the errno, when it ended with an error
};

// Awaits `op` in a task of its own, recording how it ended; `on_value` receives its value.
template <class Op, class OnValue>
task<> attempt(Op& op, seen& s, OnValue& on_value) {
  try {
    if constexpr (std::is_void_v<quell::detail::await_result_t<Op>>) {
      co_await std::move(op);
      on_value();
    } else {
      on_value(co_await std::move(op));
    }
    s.how = ended::value;
  } catch (const std::system_error& e) {
    s.how = ended::error;
    s.code = e.code().value();
  }
}

// Starts `op`, which the injector holds in the "kernel"; a sibling that wins the next turn cancels
// it; the injector answers the cancel with `result`. Returns how `op` ended for its waiter.
template <class Op, class OnValue>
task<seen> cancel_held(Op op, int result, std::function<void(io_op&)> fill, OnValue on_value) {
  held_op inj(result, std::move(fill));
  seen s;
  {
    injecting on(inj);
    co_await race(attempt(op, s, on_value), next_turn());
  }
  EXPECT_TRUE(inj.answered) << "the operation was not held in the kernel when its cancel came";
  co_return s;
}

// Real kernel: `op` completes as it is submitted (what it needs is there already); its completion
// is held un-reaped until the cancel has gone out and found nothing to stop.
template <class Op, class OnValue>
task<seen> cancel_completed_in_kernel(Op op, OnValue on_value) {
  auto& r = io();
  seen s;
  bool decided = false;
  auto decide = [&]() -> task<next_turn_won> {
    while (r.completions_waiting() == 0) co_await yield();  // op's CQE is posted, not reaped
    decided = true;
    co_return next_turn_won{};  // cancels op: ASYNC_CANCEL goes out in this turn's I/O step
  };
  auto release = [&]() -> task<> {
    while (!decided) co_await yield();
    co_await yield();  // an I/O step has passed: the cancel was submitted
    co_await yield();
    r.hold_completions(false);
  };
  r.hold_completions(true);
  co_await quell::join(race(attempt(op, s, on_value), decide()), release());
  co_return s;
}

// One receive per read, one accept per call: these pin the decisions of operations the kernel
// holds; receive-ahead's reads and accepts never reach it (tests/io/test_receive_ahead.cpp).
tcp_listener one_shot_listener() {
  quell::listen_options o;
  o.accept_queue = 0;
  return tcp_listener::bind(address::parse("127.0.0.1", 0), o);
}

task<std::tuple<tcp_stream, tcp_stream>> connected_pair() {
  auto l = one_shot_listener();
  auto [server, client] = co_await quell::join(l.accept(), tcp_stream::connect(l.local_address()));
  server.set_receive_ahead(false);
  client.set_receive_ahead(false);
  co_return std::tuple<tcp_stream, tcp_stream>(std::move(server), std::move(client));
}

// Writes `text` into the caller's buffer, as the kernel would have.
std::function<void(io_op&)> writes(char* buf, std::string text) {
  return [buf, text](io_op&) { std::memcpy(buf, text.data(), text.size()); };
}

auto ignore = [](auto&&...) {};

// The call after a cancel that kept something: it must find it at once. Bounded, so that a lost
// result fails the test instead of hanging it.
template <class Op>
auto within(Op&& op) {
  return quell::timeout(std::chrono::seconds(5), std::forward<Op>(op));
}

}  // namespace

// ---- read_some -----------------------------------------------------------------------------------

TEST(CancelDecision, AReadStoppedByTheKernelEndsCancelledAndTakesNothing) {
  auto body = []() -> task<> {
    auto [a, b] = co_await connected_pair();
    char buf[16];
    seen s = co_await cancel_held(a.read_some(buf), -ECANCELED, nullptr, ignore);
    EXPECT_EQ(s.how, ended::cancelled);
    EXPECT_EQ(a.buffered(), 0u);
  };
  quell::block_on(body());
}

TEST(CancelDecision, AReadThatReceivedAnywayEndsCancelledAndTheNextReadReturnsTheBytes) {
  auto body = []() -> task<> {
    auto [a, b] = co_await connected_pair();
    char buf[16];
    seen s = co_await cancel_held(a.read_some(buf), 5, writes(buf, "hello"), ignore);
    EXPECT_EQ(s.how, ended::cancelled);
    EXPECT_EQ(a.buffered(), 5u);
    char again[16];
    const std::size_t n = co_await within(a.read_some(again));
    EXPECT_EQ(std::string(again, n), "hello");
  };
  quell::block_on(body());
}

TEST(CancelDecision, AReadThatSawTheEndOfTheStreamAnywayLeavesItForTheNextRead) {
  auto body = []() -> task<> {
    auto [a, b] = co_await connected_pair();
    char buf[16];
    seen s = co_await cancel_held(a.read_some(buf), 0, nullptr, ignore);
    EXPECT_EQ(s.how, ended::cancelled);
    EXPECT_EQ(co_await within(a.read_some(buf)), 0u);  // without a byte from the peer: the kept end
  };
  quell::block_on(body());
}

TEST(CancelDecision, AReadThatFailedAnywayDeliversItsError) {
  auto body = []() -> task<> {
    auto [a, b] = co_await connected_pair();
    char buf[16];
    seen s = co_await cancel_held(a.read_some(buf), -ECONNRESET, nullptr, ignore);
    EXPECT_EQ(s.how, ended::error);
    EXPECT_EQ(s.code, ECONNRESET);
  };
  quell::block_on(body());
}

TEST(CancelDecision, RealKernelAReadWhoseBytesArrivedBeforeItsCancelKeepsThemForTheNextRead) {
  auto body = []() -> task<> {
    auto [a, b] = co_await connected_pair();
    co_await b.write_all("waiting");
    char buf[16];
    bool ran_on = false;
    seen s = co_await cancel_completed_in_kernel(a.read_some(buf), [&](std::size_t) { ran_on = true; });
    EXPECT_EQ(s.how, ended::cancelled);
    EXPECT_FALSE(ran_on);
    EXPECT_EQ(a.buffered(), 7u);  // the kernel had delivered them: kept by the stream, not the socket
    const std::size_t n = co_await within(a.read_some(buf));
    EXPECT_EQ(std::string(buf, n), "waiting");
  };
  quell::block_on(body());
}

// ---- read_exact ----------------------------------------------------------------------------------

TEST(CancelDecision, AReadExactStoppedByTheKernelEndsCancelledAndTakesNothing) {
  auto body = []() -> task<> {
    auto [a, b] = co_await connected_pair();
    char buf[8];
    seen s = co_await cancel_held(a.read_exact(buf), -ECANCELED, nullptr, ignore);
    EXPECT_EQ(s.how, ended::cancelled);
    EXPECT_EQ(a.buffered(), 0u);
  };
  quell::block_on(body());
}

TEST(CancelDecision, AReadExactThatFilledItsBufferAnywayKeepsAllOfItForTheNextRead) {
  auto body = []() -> task<> {
    auto [a, b] = co_await connected_pair();
    char buf[8];
    seen s = co_await cancel_held(a.read_exact(buf), 8, writes(buf, "complete"), ignore);
    EXPECT_EQ(s.how, ended::cancelled);
    EXPECT_EQ(a.buffered(), 8u);
    std::string again(8, '\0');
    co_await within(a.read_exact(again));
    EXPECT_EQ(again, "complete");
  };
  quell::block_on(body());
}

TEST(CancelDecision, AReadExactThatGotPartOfItsBufferAnywayKeepsThatPart) {
  auto body = []() -> task<> {
    auto [a, b] = co_await connected_pair();
    char buf[8];
    seen s = co_await cancel_held(a.read_exact(buf), 3, writes(buf, "par"), ignore);
    EXPECT_EQ(s.how, ended::cancelled);
    EXPECT_EQ(a.buffered(), 3u);
    co_await b.write_all("tial");
    std::string again(7, '\0');
    co_await within(a.read_exact(again));
    EXPECT_EQ(again, "partial");
  };
  quell::block_on(body());
}

TEST(CancelDecision, AReadExactThatFailedAnywayDeliversItsError) {
  auto body = []() -> task<> {
    auto [a, b] = co_await connected_pair();
    char buf[8];
    seen s = co_await cancel_held(a.read_exact(buf), -ECONNRESET, nullptr, ignore);
    EXPECT_EQ(s.how, ended::error);
    EXPECT_EQ(s.code, ECONNRESET);
  };
  quell::block_on(body());
}

// ---- write_all -----------------------------------------------------------------------------------

TEST(CancelDecision, AWriteStoppedByTheKernelEndsCancelledHavingWrittenNothing) {
  auto body = []() -> task<> {
    auto [a, b] = co_await connected_pair();
    std::size_t written = 99;
    seen s = co_await cancel_held(a.write_all("abcdefgh", &written), -ECANCELED, nullptr, ignore);
    EXPECT_EQ(s.how, ended::cancelled);
    EXPECT_EQ(written, 0u);
  };
  quell::block_on(body());
}

TEST(CancelDecision, AWriteThatWentOutAnywayCompletes) {
  auto body = []() -> task<> {
    auto [a, b] = co_await connected_pair();
    std::size_t written = 0;
    bool completed = false;
    seen s = co_await cancel_held(a.write_all("abcdefgh", &written), 8, nullptr, [&] { completed = true; });
    EXPECT_EQ(s.how, ended::value);
    EXPECT_TRUE(completed);
    EXPECT_EQ(written, 8u);
  };
  quell::block_on(body());
}

TEST(CancelDecision, AWriteThatWentOutInPartEndsCancelledAndReportsThePart) {
  auto body = []() -> task<> {
    auto [a, b] = co_await connected_pair();
    std::size_t written = 0;
    seen s = co_await cancel_held(a.write_all("abcdefgh", &written), 3, nullptr, ignore);
    EXPECT_EQ(s.how, ended::cancelled);
    EXPECT_EQ(written, 3u);
  };
  quell::block_on(body());
}

TEST(CancelDecision, AWriteThatFailedAnywayDeliversItsError) {
  auto body = []() -> task<> {
    auto [a, b] = co_await connected_pair();
    seen s = co_await cancel_held(a.write_all("abcdefgh"), -EPIPE, nullptr, ignore);
    EXPECT_EQ(s.how, ended::error);
    EXPECT_EQ(s.code, EPIPE);
  };
  quell::block_on(body());
}

TEST(CancelDecision, RealKernelAWriteThatFitInTheSocketBufferCompletesAlthoughItsCancelWentOut) {
  auto body = []() -> task<> {
    auto [a, b] = co_await connected_pair();
    const std::string data(1000, 'w');
    std::size_t written = 0;
    seen s = co_await cancel_completed_in_kernel(a.write_all(data, &written), [] {});
    EXPECT_EQ(s.how, ended::value);
    EXPECT_EQ(written, data.size());
    std::string got(data.size(), '\0');
    co_await b.read_exact(got);
    EXPECT_EQ(got, data);
  };
  quell::block_on(body());
}

// ---- accept ----------------------------------------------------------------------------------

TEST(CancelDecision, AnAcceptStoppedByTheKernelEndsCancelled) {
  auto body = []() -> task<> {
    auto l = one_shot_listener();
    seen s = co_await cancel_held(l.accept(), -ECANCELED, nullptr, ignore);
    EXPECT_EQ(s.how, ended::cancelled);
  };
  quell::block_on(body());
}

TEST(CancelDecision, AnAcceptThatGotAConnectionAnywayEndsCancelledAndTheNextAcceptReturnsIt) {
  auto body = []() -> task<> {
    auto l = one_shot_listener();
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    seen s = co_await cancel_held(l.accept(), sv[0], nullptr, ignore);
    EXPECT_EQ(s.how, ended::cancelled);
    tcp_stream next = co_await within(l.accept());  // from what the cancelled accept kept
    EXPECT_EQ(next.native_handle(), sv[0]);
    co_await next.close();
    ::close(sv[1]);
  };
  quell::block_on(body());
}

TEST(CancelDecision, AnAcceptThatFailedAnywayDeliversItsError) {
  auto body = []() -> task<> {
    auto l = one_shot_listener();
    seen s = co_await cancel_held(l.accept(), -EMFILE, nullptr, ignore);
    EXPECT_EQ(s.how, ended::error);
    EXPECT_EQ(s.code, EMFILE);
  };
  quell::block_on(body());
}

// ---- connect ---------------------------------------------------------------------------------

TEST(CancelDecision, AConnectStoppedByTheKernelEndsCancelled) {
  auto body = []() -> task<> {
    auto l = tcp_listener::bind(address::parse("127.0.0.1", 0));
    seen s = co_await cancel_held(tcp_stream::connect(l.local_address()), -ECANCELED, nullptr, ignore);
    EXPECT_EQ(s.how, ended::cancelled);
  };
  quell::block_on(body());
}

TEST(CancelDecision, AConnectThatConnectedAnywayDeliversTheStream) {
  auto body = []() -> task<> {
    auto l = tcp_listener::bind(address::parse("127.0.0.1", 0));
    bool got_stream = false;
    seen s = co_await cancel_held(tcp_stream::connect(l.local_address()), 0, nullptr,
                                  [&](tcp_stream t) { got_stream = t.is_open(); });
    EXPECT_EQ(s.how, ended::value);
    EXPECT_TRUE(got_stream);
  };
  quell::block_on(body());
}

TEST(CancelDecision, AConnectThatFailedAnywayDeliversItsError) {
  auto body = []() -> task<> {
    auto l = tcp_listener::bind(address::parse("127.0.0.1", 0));
    seen s = co_await cancel_held(tcp_stream::connect(l.local_address()), -ECONNREFUSED, nullptr, ignore);
    EXPECT_EQ(s.how, ended::error);
    EXPECT_EQ(s.code, ECONNREFUSED);
  };
  quell::block_on(body());
}

TEST(CancelDecision, RealKernelALoopbackConnectThatConnectedBeforeItsCancelDeliversTheStream) {
  auto body = []() -> task<> {
    auto l = tcp_listener::bind(address::parse("127.0.0.1", 0));
    std::uint16_t port = 0;
    seen s = co_await cancel_completed_in_kernel(tcp_stream::connect(l.local_address()),
                                                 [&](tcp_stream t) { port = t.local_address().port(); });
    EXPECT_EQ(s.how, ended::value);
    tcp_stream server = co_await l.accept();
    EXPECT_EQ(server.peer_address().port(), port);
    co_await server.close();
  };
  quell::block_on(body());
}

// ---- datagrams -------------------------------------------------------------------------------

TEST(CancelDecision, AReceiveStoppedByTheKernelEndsCancelled) {
  auto body = []() -> task<> {
    auto rx = quell::udp_socket::bind(address::parse("127.0.0.1", 0));
    char buf[16];
    seen s = co_await cancel_held(rx.recv_from(buf), -ECANCELED, nullptr, ignore);
    EXPECT_EQ(s.how, ended::cancelled);
  };
  quell::block_on(body());
}

TEST(CancelDecision, AReceiveThatGotADatagramAnywayEndsCancelledAndTheNextReceiveReturnsIt) {
  auto body = []() -> task<> {
    auto rx = quell::udp_socket::bind(address::parse("127.0.0.1", 0));
    const address sender = address::parse("127.0.0.1", 4242);
    char buf[16];
    auto arrived = [&](io_op& op) {
      auto& d = static_cast<quell::detail::datagram_op&>(op);
      std::memcpy(buf, "dgram", 5);
      std::memcpy(d.peer.data(), sender.data(), sender.size());
      reinterpret_cast<msghdr*>(d.hdr)->msg_namelen = sender.size();  // what recvmsg reports
    };
    seen s = co_await cancel_held(rx.recv_from(buf), 5, arrived, ignore);
    EXPECT_EQ(s.how, ended::cancelled);
    char again[16];
    quell::datagram d = co_await within(rx.recv_from(again));
    EXPECT_EQ(std::string(again, d.size), "dgram");
    EXPECT_EQ(d.peer.to_string(), "127.0.0.1:4242");
  };
  quell::block_on(body());
}

TEST(CancelDecision, AReceiveThatFailedAnywayDeliversItsError) {
  auto body = []() -> task<> {
    auto rx = quell::udp_socket::bind(address::parse("127.0.0.1", 0));
    char buf[16];
    seen s = co_await cancel_held(rx.recv_from(buf), -ECONNREFUSED, nullptr, ignore);
    EXPECT_EQ(s.how, ended::error);
    EXPECT_EQ(s.code, ECONNREFUSED);
  };
  quell::block_on(body());
}

TEST(CancelDecision, ASendStoppedByTheKernelEndsCancelledAndOneThatWentOutIsReportedSent) {
  auto body = []() -> task<> {
    auto tx = quell::udp_socket::bind(address::parse("127.0.0.1", 0));
    const address to = address::parse("127.0.0.1", 9);
    seen stopped = co_await cancel_held(tx.send_to("dgram", to), -ECANCELED, nullptr, ignore);
    EXPECT_EQ(stopped.how, ended::cancelled);
    std::size_t sent = 0;
    seen went = co_await cancel_held(tx.send_to("dgram", to), 5, nullptr, [&](quell::datagram d) { sent = d.size; });
    EXPECT_EQ(went.how, ended::value);
    EXPECT_EQ(sent, 5u);
    seen failed = co_await cancel_held(tx.send_to("dgram", to), -EMSGSIZE, nullptr, ignore);
    EXPECT_EQ(failed.how, ended::error);
    EXPECT_EQ(failed.code, EMSGSIZE);
  };
  quell::block_on(body());
}

TEST(CancelDecision, RealKernelADatagramReceivedBeforeTheCancelIsReturnedByTheNextReceive) {
  auto body = []() -> task<> {
    auto rx = quell::udp_socket::bind(address::parse("127.0.0.1", 0));
    auto tx = quell::udp_socket::bind(address::parse("127.0.0.1", 0));
    co_await tx.send_to("early", rx.local_address());
    char buf[16];
    seen s = co_await cancel_completed_in_kernel(rx.recv_from(buf), ignore);
    EXPECT_EQ(s.how, ended::cancelled);
    char again[16];
    quell::datagram d = co_await within(rx.recv_from(again));
    EXPECT_EQ(std::string(again, d.size), "early");
    EXPECT_EQ(d.peer.port(), tx.local_address().port());
  };
  quell::block_on(body());
}

// ---- files -------------------------------------------------------------------------------------

TEST(CancelDecision, AnOpenStoppedByTheKernelEndsCancelledOneThatOpenedDeliversTheFileOneThatFailedItsError) {
  auto body = []() -> task<> {
    seen stopped = co_await cancel_held(quell::file::open("/dev/null"), -ECANCELED, nullptr, ignore);
    EXPECT_EQ(stopped.how, ended::cancelled);
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    int delivered = -1;
    seen opened = co_await cancel_held(quell::file::open("/dev/null"), fd, nullptr,
                                       [&](quell::file f) { delivered = f.native_handle(); });
    EXPECT_EQ(opened.how, ended::value);
    EXPECT_EQ(delivered, fd);  // and the file closed it when it went
    seen failed = co_await cancel_held(quell::file::open("/nope"), -ENOENT, nullptr, ignore);
    EXPECT_EQ(failed.how, ended::error);
    EXPECT_EQ(failed.code, ENOENT);
  };
  quell::block_on(body());
}

TEST(CancelDecision, FileReadsWritesAndSyncsThatRanAnywayDeliverTheirResults) {
  auto body = []() -> task<> {
    quell::file f = co_await quell::file::open("/dev/null", O_RDWR);
    char buf[8];
    std::size_t n = 0;
    seen read = co_await cancel_held(f.read_at(buf, 0), 4, writes(buf, "data"), [&](std::size_t r) { n = r; });
    EXPECT_EQ(read.how, ended::value);
    EXPECT_EQ(n, 4u);
    seen wrote = co_await cancel_held(f.write_at("data", 0), 4, nullptr, [&](std::size_t r) { n = r + 1; });
    EXPECT_EQ(wrote.how, ended::value);
    EXPECT_EQ(n, 5u);
    seen synced = co_await cancel_held(f.fsync(), 0, nullptr, ignore);
    EXPECT_EQ(synced.how, ended::value);
    seen stopped = co_await cancel_held(f.read_at(buf, 0), -ECANCELED, nullptr, ignore);
    EXPECT_EQ(stopped.how, ended::cancelled);
    seen failed = co_await cancel_held(f.fsync(), -EIO, nullptr, ignore);
    EXPECT_EQ(failed.how, ended::error);
    EXPECT_EQ(failed.code, EIO);
    co_await f.close();
  };
  quell::block_on(body());
}

// ---- readiness -----------------------------------------------------------------------------------

TEST(CancelDecision, AReadinessWaitStoppedByTheKernelEndsCancelledOneThatFiredDeliversTheEvents) {
  auto body = []() -> task<> {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    seen stopped = co_await cancel_held(quell::wait_readable(p[0]), -ECANCELED, nullptr, ignore);
    EXPECT_EQ(stopped.how, ended::cancelled);
    unsigned events = 0;
    seen fired = co_await cancel_held(quell::wait_readable(p[0]), POLLIN, nullptr, [&](unsigned e) { events = e; });
    EXPECT_EQ(fired.how, ended::value);
    EXPECT_EQ(events, static_cast<unsigned>(POLLIN));
    seen failed = co_await cancel_held(quell::wait_readable(p[0]), -EBADF, nullptr, ignore);
    EXPECT_EQ(failed.how, ended::error);
    EXPECT_EQ(failed.code, EBADF);
    ::close(p[0]);
    ::close(p[1]);
  };
  quell::block_on(body());
}

TEST(CancelDecision, RealKernelAReadinessWaitThatFiredBeforeItsCancelDeliversTheEvents) {
  auto body = []() -> task<> {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    EXPECT_EQ(::write(p[1], "x", 1), 1);
    unsigned events = 0;
    seen s = co_await cancel_completed_in_kernel(quell::wait_readable(p[0]), [&](unsigned e) { events = e; });
    EXPECT_EQ(s.how, ended::value);
    EXPECT_TRUE(events & POLLIN);
    ::close(p[0]);
    ::close(p[1]);
  };
  quell::block_on(body());
}

// ---- signals -------------------------------------------------------------------------------------

TEST(CancelDecision, ASignalWaitStoppedByTheKernelEndsCancelledOneThatGotASignalKeepsItForTheNextWait) {
  const int sig = SIGRTMIN + 5;
  auto body = [&]() -> task<> {
    quell::signal_set sigs{sig};
    seen stopped = co_await cancel_held(sigs.wait(), -ECANCELED, nullptr, ignore);
    EXPECT_EQ(stopped.how, ended::cancelled);
    auto delivered = [&](io_op& op) {
      signalfd_siginfo si{};
      si.ssi_signo = static_cast<std::uint32_t>(sig);
      std::memcpy(static_cast<quell::detail::signal_wait_op&>(op).info, &si, sizeof si);
    };
    seen got = co_await cancel_held(sigs.wait(), static_cast<int>(sizeof(signalfd_siginfo)), delivered, ignore);
    EXPECT_EQ(got.how, ended::cancelled);
    EXPECT_EQ(co_await within(sigs.wait()), sig);  // from what the cancelled wait kept: nothing was sent
    seen failed = co_await cancel_held(sigs.wait(), -EBADF, nullptr, ignore);
    EXPECT_EQ(failed.how, ended::error);
    EXPECT_EQ(failed.code, EBADF);
  };
  quell::block_on(body());
}

TEST(CancelDecision, RealKernelASignalReadBeforeItsWaitWasCancelledIsReturnedByTheNextWait) {
  const int sig = SIGRTMIN + 6;
  auto body = [&]() -> task<> {
    quell::signal_set sigs{sig};
    ::sigqueue(::getpid(), sig, sigval{7});
    seen s = co_await cancel_completed_in_kernel(sigs.wait(), ignore);
    EXPECT_EQ(s.how, ended::cancelled);
    sigset_t pending;
    ::sigpending(&pending);
    EXPECT_FALSE(::sigismember(&pending, sig));  // the kernel had delivered it: the set keeps it
    EXPECT_EQ(co_await within(sigs.wait()), sig);
  };
  quell::block_on(body());
}
