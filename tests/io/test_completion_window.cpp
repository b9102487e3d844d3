// The completion window: an operation whose result the executor has already collected, but whose
// waiter has not resumed yet, is cancelled (a race decided by a branch that ran first in the same
// turn, a deadline, a sibling's failure). "Cancelled" must still mean "it did not happen": what
// the kernel or a peer produced stays where the next call finds it, and nothing is delivered
// twice. Each test repeats the window many times, with a varying number of turns before it, and
// then drains the source, accounting for every byte, connection, datagram, signal and value.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "quell/quell.hpp"
#include "support/net_client.hpp"

using namespace std::chrono_literals;
using quell::address;
using quell::race;
using quell::task;
using quell::tcp_listener;
using quell::tcp_stream;
using quell::yield;
using quell::test::read_to_end;

namespace {

std::uint16_t local_port(int fd) {
  sockaddr_storage me{};
  socklen_t len = sizeof me;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&me), &len);
  return address::from(reinterpret_cast<sockaddr*>(&me), len).port();
}

// One receive per read: these rounds make the kernel complete a read in the step that submits it.
// With receive-ahead the bytes are queued before the read starts and it wins at once; its own
// window (bytes handed to a parked read, which is cancelled before it resumes) is in
// tests/io/test_receive_ahead.cpp and in every cancel_sweep over a stream.
task<std::tuple<tcp_stream, tcp_stream>> connected_pair() {
  auto l = tcp_listener::bind(address::parse("127.0.0.1", 0));
  auto [server, client] = co_await quell::join(l.accept(), tcp_stream::connect(l.local_address()));
  server.set_receive_ahead(false);
  client.set_receive_ahead(false);
  co_return std::tuple<tcp_stream, tcp_stream>(std::move(server), std::move(client));
}

task<> turns(int n) {
  for (int i = 0; i < n; ++i) co_await yield();
}

std::string chunk(int i) {
  std::string s = "<";  // built step by step: g++ 12 warns (-Wrestrict) on "<" + std::string(...)
  s += std::to_string(i);
  s += '>';
  return s;
}

constexpr int rounds = 300;

struct next_turn_won {};
task<next_turn_won> next_turn() {
  co_await yield();
  co_return next_turn_won{};
}

template <class Op>
using value_of = quell::detail::monostate_if_void<quell::detail::await_result_t<Op>>;

// Races `op` against `other` (a task that must win to count), either directly or from inside a
// task of its own (then the cancel reaches the leaf through the task, and no code after the
// task's co_await may run: `ran_on` counts the times it did). Returns op's result if it won.
template <class Op, class Other>
task<std::optional<value_of<Op>>> against(Op op, Other other, bool in_task, int& ran_on) {
  using R = quell::detail::await_result_t<Op>;
  auto inner = [&]() -> task<R> {
    if constexpr (std::is_void_v<R>) {
      co_await std::move(op);
      ++ran_on;
    } else {
      R r = co_await std::move(op);
      ++ran_on;
      co_return r;
    }
  };
  std::optional<value_of<Op>> out;
  auto take = [&](auto& r) {
    if (r.index() != 0) return;
    if constexpr (std::is_void_v<R>) {
      out.emplace();
    } else {
      out.emplace(std::move(std::get<0>(r)));
    }
  };
  if (in_task) {
    auto r = co_await race(inner(), std::move(other));
    take(r);
  } else {
    auto r = co_await race(std::move(op), std::move(other));
    if (r.index() == 0) ++ran_on;
    take(r);
  }
  co_return out;
}

template <class Op>
task<std::optional<value_of<Op>>> against_next_turn(Op op, bool in_task, int& ran_on) {
  return against(std::move(op), next_turn(), in_task, ran_on);
}

// For each leaf: `rounds` rounds of "something arrives, i % 4 turns pass, the operation races the
// next turn", first with the operation raced directly, then inside a task. Each counts how many
// rounds the operation lost and checks that a task never ran on after a lost operation.
struct tally {
  int lost = 0;
  int ran_on = 0;
};

class CompletionWindow : public ::testing::TestWithParam<bool> {
 protected:
  bool in_task() const { return GetParam(); }
};

}  // namespace

INSTANTIATE_TEST_SUITE_P(Leaf, CompletionWindow, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "InsideATask" : "Raced"; });

TEST_P(CompletionWindow, AReadThatLostARaceByOneTurnKeepsItsBytesForTheNextRead) {
  auto body = [&]() -> task<tally> {
    auto [a, b] = co_await connected_pair();
    std::string sent, got;
    tally t;
    for (int i = 0; i < rounds; ++i) {
      const std::string c = chunk(i);
      co_await b.write_all(c);
      sent += c;
      co_await turns(i % 4);
      char buf[64];
      // Data is waiting, so the read completes in the step that submits it; the other branch runs
      // first in the next turn and cancels a read whose completion is already collected. (The
      // next round's read is then served at once from what the stream kept, and wins.)
      auto r = co_await against_next_turn(a.read_some(buf), in_task(), t.ran_on);
      if (r) {
        got.append(buf, *r);
      } else {
        ++t.lost;
      }
    }
    b.shutdown();
    got += co_await read_to_end(a);
    EXPECT_EQ(got, sent);
    co_return t;
  };
  const tally t = quell::block_on(body());
  EXPECT_GT(t.lost, rounds / 4);
  EXPECT_EQ(t.ran_on, rounds - t.lost);
}

TEST_P(CompletionWindow, AReadExactThatLostARaceByOneTurnKeepsAllItsBytes) {
  auto body = [&]() -> task<tally> {
    auto [a, b] = co_await connected_pair();
    std::string sent, got;
    tally t;
    for (int i = 0; i < rounds; ++i) {
      const std::string c = chunk(i);
      co_await b.write_all(c);
      sent += c;
      co_await turns(i % 4);
      char buf[3];  // every chunk is at least 3 bytes: the read completes from what is waiting
      auto r = co_await against_next_turn(a.read_exact(buf), in_task(), t.ran_on);
      if (r) {
        got.append(buf, sizeof buf);
      } else {
        ++t.lost;
      }
    }
    b.shutdown();
    got += co_await read_to_end(a);
    EXPECT_EQ(got, sent);
    co_return t;
  };
  const tally t = quell::block_on(body());
  EXPECT_GT(t.lost, 0);
  EXPECT_EQ(t.ran_on, rounds - t.lost);
}

TEST_P(CompletionWindow, AReadUnderADeadlineThatFiresWithTheDataLosesNoByte) {
  // Virtual time: the deadline and the writer's sleep are due at the same instant, so the
  // deadline cancels a read whose bytes the writer's send delivers in the same kernel step.
  quell::virtual_clock clock;
  auto body = [&]() -> task<> {
    tcp_stream a, b;  // not a structured binding: the lambdas below capture them (clang 14)
    std::tie(a, b) = co_await connected_pair();
    std::string sent, got;
    int timed_out = 0;
    for (int i = 0; i < rounds; ++i) {
      char buf[64];
      const std::string c = chunk(i);
      auto write_later = [&]() -> task<> {
        co_await quell::sleep_for(1ms);
        co_await turns(i % 3);
        co_await b.write_all(c);
      };
      auto read = [&]() -> task<std::size_t> { co_return co_await a.read_some(buf); };
      std::optional<std::size_t> r;
      if (in_task()) {
        std::tie(r, std::ignore) = co_await quell::join(quell::move_on_after(1ms, read()), write_later());
      } else {
        std::tie(r, std::ignore) = co_await quell::join(quell::move_on_after(1ms, a.read_some(buf)), write_later());
      }
      sent += c;
      if (r) {
        got.append(buf, *r);
      } else {
        ++timed_out;
      }
    }
    b.shutdown();
    got += co_await read_to_end(a);
    EXPECT_EQ(got, sent);
    EXPECT_GT(timed_out, 0);
  };
  quell::executor<void> ex{body(), clock};
  ex.run();
}

TEST_P(CompletionWindow, AnAcceptThatLostARaceKeepsItsConnectionForTheNextAccept) {
  auto body = [&]() -> task<tally> {
    auto l = tcp_listener::bind(address::parse("127.0.0.1", 0));
    const address to = l.local_address();
    std::set<std::uint16_t> made, accepted;
    std::vector<int> clients;
    tally t;
    auto take = [&](tcp_stream& s) {
      const std::uint16_t port = s.peer_address().port();
      EXPECT_TRUE(accepted.insert(port).second) << "delivered twice: " << port;
    };
    for (int i = 0; i < rounds; ++i) {
      const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      EXPECT_EQ(::connect(c, to.data(), to.size()), 0);  // in the backlog at once (loopback)
      made.insert(local_port(c));
      clients.push_back(c);
      co_await turns(i % 4);
      auto r = co_await against_next_turn(l.accept(), in_task(), t.ran_on);
      if (r) {
        take(*r);
        co_await r->close();
      } else {
        ++t.lost;
      }
    }
    while (accepted.size() < made.size()) {
      auto s = co_await quell::move_on_after(5s, l.accept());
      if (!s) break;  // a connection is missing: the comparison below says which
      take(*s);
      co_await s->close();
    }
    EXPECT_EQ(accepted, made);
    for (int c : clients) ::close(c);
    co_await l.close();
    co_return t;
  };
  const tally t = quell::block_on(body());
  EXPECT_GT(t.lost, 0);
  EXPECT_EQ(t.ran_on, rounds - t.lost);
}

TEST_P(CompletionWindow, ADatagramThatLostARaceIsReturnedByTheNextReceive) {
  auto body = [&]() -> task<tally> {
    auto rx = quell::udp_socket::bind(address::parse("127.0.0.1", 0));
    auto tx = quell::udp_socket::bind(address::parse("127.0.0.1", 0));
    std::vector<std::string> got;
    tally t;
    for (int i = 0; i < rounds; ++i) {
      co_await tx.send_to(chunk(i), rx.local_address());
      co_await turns(i % 4);
      char buf[32];
      auto r = co_await against_next_turn(rx.recv_from(buf), in_task(), t.ran_on);
      if (r) {
        got.emplace_back(buf, r->size);
        EXPECT_EQ(r->peer.port(), tx.local_address().port());
      } else {
        ++t.lost;
      }
    }
    while (got.size() < static_cast<std::size_t>(rounds)) {
      char buf[32];
      auto d = co_await quell::move_on_after(5s, rx.recv_from(buf));
      if (!d) break;  // a datagram is missing: the comparison below says which
      got.emplace_back(buf, d->size);
      EXPECT_EQ(d->peer.port(), tx.local_address().port());
    }
    std::vector<std::string> sent;
    for (int i = 0; i < rounds; ++i) sent.push_back(chunk(i));
    EXPECT_EQ(got, sent);
    co_return t;
  };
  const tally t = quell::block_on(body());
  EXPECT_GT(t.lost, 0);
  EXPECT_EQ(t.ran_on, rounds - t.lost);
}

TEST_P(CompletionWindow, ASignalThatLostARaceIsReturnedByTheNextWait) {
  // A real-time signal queues: each one sent is one to receive.
  const int sig = SIGRTMIN + 3;
  auto body = [&]() -> task<tally> {
    quell::signal_set sigs{sig};
    int received = 0;
    tally t;
    for (int i = 0; i < rounds; ++i) {
      ::sigqueue(::getpid(), sig, sigval{i});
      co_await turns(i % 4);
      auto r = co_await against_next_turn(sigs.wait(), in_task(), t.ran_on);
      if (r) {
        EXPECT_EQ(*r, sig);
        ++received;
      } else {
        ++t.lost;
      }
    }
    while (received < rounds) {
      auto s = co_await quell::move_on_after(5s, sigs.wait());
      if (!s) break;
      EXPECT_EQ(*s, sig);
      ++received;
    }
    EXPECT_EQ(received, rounds);
    sigset_t pending;
    ::sigpending(&pending);
    EXPECT_FALSE(::sigismember(&pending, sig)) << "a signal is left undelivered";
    co_return t;
  };
  const tally t = quell::block_on(body());
  EXPECT_GT(t.lost, 0);
  EXPECT_EQ(t.ran_on, rounds - t.lost);
}

TEST_P(CompletionWindow, AChannelValueAPermitOrAWakeUpHandedToALoserIsNotTaken) {
  auto body = [&]() -> task<tally> {
    quell::channel<int> ch{1};
    quell::semaphore sem{1};
    quell::event ev;
    std::vector<int> sent, got;
    tally t;
    for (int i = 0; i < rounds; ++i) {
      // The waiter queues first; then a sibling hands it a value (a permit, a wake-up) and ends
      // in the same step, deciding the race before the waiter resumed.
      std::optional<quell::permit> p = i % 3 == 1 ? sem.try_acquire() : std::nullopt;
      if (i % 3 == 2) ev.reset();
      auto hand_over = [&]() -> task<next_turn_won> {
        co_await yield();
        if (i % 3 == 0) {
          co_await ch.send(i);
          sent.push_back(i);
        } else if (i % 3 == 1) {
          p.reset();
        } else {
          ev.set();
        }
        co_return next_turn_won{};
      };
      if (i % 3 == 0) {
        auto r = co_await against(ch.receive(), hand_over(), in_task(), t.ran_on);
        if (r) got.push_back(**r);
        if (!r) ++t.lost;
      } else if (i % 3 == 1) {
        auto r = co_await against(sem.acquire(), hand_over(), in_task(), t.ran_on);
        if (!r) ++t.lost;
        EXPECT_EQ(sem.available(), r ? 0u : 1u);
      } else {
        auto r = co_await against(ev.wait(), hand_over(), in_task(), t.ran_on);
        if (!r) ++t.lost;
        EXPECT_TRUE(ev.is_set());
      }
    }
    while (auto v = co_await quell::move_on_after(1ms, ch.receive())) got.push_back(**v);
    EXPECT_EQ(got, sent);
    EXPECT_EQ(sem.available(), 1u);
    co_return t;
  };
  const tally t = quell::block_on(body());
  EXPECT_GT(t.lost, rounds / 2);
  EXPECT_EQ(t.ran_on, rounds - t.lost);
}

TEST_P(CompletionWindow, AConnectionADatagramAndASignalUnderADeadlineThatFiresWithThemAreNotLost) {
  // As for the read above: on a virtual clock, each round's deadline and the producer's sleep are
  // due at the same instant (the producer then waits i % 3 more turns), so the deadline cancels a
  // wait whose item arrives in the same step, or a step later.
  const int sig = SIGRTMIN + 7;
  quell::virtual_clock clock;
  clock.set_io_grace(1ms);  // the drain below: what is left is in the kernel already
  auto body = [&]() -> task<> {
    auto l = tcp_listener::bind(address::parse("127.0.0.1", 0));
    auto rx = quell::udp_socket::bind(address::parse("127.0.0.1", 0));
    auto tx = quell::udp_socket::bind(address::parse("127.0.0.1", 0));
    quell::signal_set sigs{sig};
    std::vector<int> clients;
    int accepted = 0, received = 0, caught = 0, timed_out = 0;
    auto count = [&](auto& r, int& n) {
      if (r) {
        ++n;
      } else {
        ++timed_out;
      }
    };
    for (int i = 0; i < rounds; ++i) {
      auto produce = [&]() -> task<> {
        co_await quell::sleep_for(1ms);
        co_await turns(i % 3);
        const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const address to = l.local_address();
        EXPECT_EQ(::connect(c, to.data(), to.size()), 0);
        clients.push_back(c);
        co_await tx.send_to("d", rx.local_address());
        ::sigqueue(::getpid(), sig, sigval{i});
      };
      char buf[8];
      auto accept_one = [&]() -> task<tcp_stream> { co_return co_await l.accept(); };
      auto recv_one = [&]() -> task<quell::datagram> { co_return co_await rx.recv_from(buf); };
      auto wait_one = [&]() -> task<int> { co_return co_await sigs.wait(); };
      if (in_task()) {
        auto [c, d, s, p] =
            co_await quell::join(quell::move_on_after(1ms, accept_one()), quell::move_on_after(1ms, recv_one()),
                                 quell::move_on_after(1ms, wait_one()), produce());
        count(c, accepted);
        count(d, received);
        count(s, caught);
      } else {
        auto [c, d, s, p] =
            co_await quell::join(quell::move_on_after(1ms, l.accept()), quell::move_on_after(1ms, rx.recv_from(buf)),
                                 quell::move_on_after(1ms, sigs.wait()), produce());
        count(c, accepted);
        count(d, received);
        count(s, caught);
      }
    }
    while (co_await quell::move_on_after(1s, l.accept())) ++accepted;
    char buf[8];
    while (co_await quell::move_on_after(1s, rx.recv_from(buf))) ++received;
    while (co_await quell::move_on_after(1s, sigs.wait())) ++caught;
    EXPECT_EQ(accepted, rounds);
    EXPECT_EQ(received, rounds);
    EXPECT_EQ(caught, rounds);
    EXPECT_GT(timed_out, 0);
    for (int c : clients) ::close(c);
  };
  quell::executor<void> ex{body(), clock};
  ex.run();
}

// ---- a branch that completes at once after the race was decided --------------------------------

TEST(CompletionWindowAtStart, BytesTakenAtOnceByARaceLoserGoBackInFrontOfTheStream) {
  // Both branches complete while the race starts them: the channel's value wins, and the read,
  // which took its bytes from what an earlier cancelled read kept, gives them back.
  auto body = []() -> task<> {
    auto [a, b] = co_await connected_pair();
    co_await b.write_all("first");
    char buf[64];
    co_await race(a.read_some(buf), yield());  // lost by one turn: "first" is kept in the stream
    EXPECT_EQ(a.buffered(), 5u);
    quell::channel<int> ch{1};
    co_await ch.send(7);
    char small[3];
    auto r = co_await race(ch.receive(), a.read_some(small));
    EXPECT_EQ(r.index(), 0u);
    if (r.index() == 0) {
      EXPECT_EQ(*std::get<0>(r), 7);
    }
    EXPECT_EQ(a.buffered(), 5u);
    co_await b.write_all(" second");
    b.shutdown();
    EXPECT_EQ(co_await read_to_end(a), "first second");
  };
  quell::block_on(body());
}

TEST(CompletionWindowAtStart, AValueAndAConnectionTakenAtOnceByRaceLosersAreGivenBack) {
  auto body = []() -> task<> {
    quell::channel<int> ch{4};
    co_await ch.send(1);
    co_await ch.send(2);
    auto l = tcp_listener::bind(address::parse("127.0.0.1", 0));
    const address to = l.local_address();
    const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(::connect(c, to.data(), to.size()), 0);
    co_await race(l.accept(), yield());  // lost by one turn: the connection waits in the listener
    // ready() wins while starting; the receive and the accept complete at once and are undone.
    auto r = co_await race(quell::ready(0), ch.receive(), l.accept());
    EXPECT_EQ(r.index(), 0u);
    EXPECT_EQ(ch.size(), 2u);
    EXPECT_EQ(*co_await ch.receive(), 1);
    EXPECT_EQ(*co_await ch.receive(), 2);
    auto s = co_await quell::move_on_after(5s, l.accept());
    EXPECT_TRUE(s.has_value()) << "the connection was lost";
    if (s) {
      EXPECT_EQ(s->peer_address().port(), local_port(c));
      co_await s->close();
    }
    ::close(c);
    co_await l.close();
  };
  quell::block_on(body());
}
