// Sockets on io_uring: round trips, two-phase cancellation, cancel-safety, close, bad input.
// Real sockets on 127.0.0.1 / ::1 / Unix paths only.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <system_error>
#include <tuple>
#include <vector>

#include "quell/quell.hpp"

using namespace std::chrono_literals;
using quell::address;
using quell::executor;
using quell::race;
using quell::sleep_for;
using quell::task;
using quell::tcp_listener;
using quell::tcp_stream;

namespace {

// Inside a task: this executor's reactor.
quell::detail::reactor& io() { return quell::detail::reactor::current(); }

// From the test body, between poll_once() calls.
template <class E>
quell::detail::reactor& io(E& ex) {
  return *ex.reactor_if_any();
}

// Polls until exactly `n` operations are in the kernel.
template <class E>
void poll_until_in_flight(E& ex, std::size_t n) {
  for (int i = 0; i < 10000; ++i) {
    if (ex.reactor_if_any() && ex.reactor_if_any()->in_flight() == n) return;
    ex.poll_once();
  }
  FAIL() << "never reached " << n << " operations in flight";
}

// A connected pair over loopback (server side first).
task<std::tuple<tcp_stream, tcp_stream>> connected_pair(tcp_listener& l) {
  auto [server, client] = co_await quell::join(l.accept(), tcp_stream::connect(l.local_address()));
  co_return std::tuple<tcp_stream, tcp_stream>(std::move(server), std::move(client));
}

tcp_listener local_listener() { return tcp_listener::bind(address::parse("127.0.0.1", 0)); }

task<std::string> read_string(tcp_stream& s, std::size_t n) {
  std::string out(n, '\0');
  co_await s.read_exact(out);
  co_return out;
}

int system_errno(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::system_error& e) {
    return e.code().value();
  }
  return 0;
}

}  // namespace

TEST(Net, EchoRoundTripOverIpv4Ipv6AndUnix) {
  const std::string unix_path = "/tmp/quell-test-" + std::to_string(::getpid()) + ".sock";
  ::unlink(unix_path.c_str());
  for (const address& where :
       {address::parse("127.0.0.1", 0), address::parse("::1", 0), address::unix_path(unix_path)}) {
    auto body = [&]() -> task<std::string> {
      tcp_listener l = tcp_listener::bind(where);
      auto echo = [&]() -> task<> {
        tcp_stream c = co_await l.accept();
        char buf[64];
        for (;;) {
          std::size_t n = co_await c.read_some(buf);
          if (n == 0) break;
          co_await c.write_all(std::string_view(buf, n));
        }
        co_await c.close();
      };
      auto client = [&]() -> task<std::string> {
        tcp_stream c = co_await tcp_stream::connect(l.local_address());
        co_await c.write_all("hello, quell");
        std::string got = co_await read_string(c, 12);
        c.shutdown();
        co_await c.close();
        co_return got;
      };
      auto [done, got] = co_await quell::join(echo(), client());
      co_await l.close();
      co_return got;
    };
    EXPECT_EQ(quell::block_on(body()), "hello, quell") << where.to_string();
  }
  ::unlink(unix_path.c_str());
}

TEST(Net, ManyConcurrentConnectionsEachGetTheirOwnEcho) {
  constexpr int connections = 50;
  constexpr int rounds = 20;
  auto body = [&]() -> task<int> {
    tcp_listener l = local_listener();
    auto serve_one = [](tcp_stream c) -> task<> {
      char buf[64];
      for (;;) {
        std::size_t n = co_await c.read_some(buf);
        if (n == 0) break;
        co_await c.write_all(std::string_view(buf, n));
      }
      co_await c.close();
    };
    auto server = [&]() -> task<> {
      std::vector<task<>> handlers;
      for (int i = 0; i < connections; ++i) handlers.push_back(serve_one(co_await l.accept()));
      co_await quell::join(std::move(handlers));
    };
    auto client = [&](int id) -> task<int> {
      tcp_stream c = co_await tcp_stream::connect(l.local_address());
      int ok = 0;
      for (int r = 0; r < rounds; ++r) {
        std::string msg = "client " + std::to_string(id) + " round " + std::to_string(r) + ";";
        co_await c.write_all(msg);
        if (co_await read_string(c, msg.size()) == msg) ++ok;
      }
      c.shutdown();
      co_await c.close();
      co_return ok;
    };
    std::vector<task<int>> clients;
    for (int i = 0; i < connections; ++i) clients.push_back(client(i));
    auto [served, results] = co_await quell::join(server(), quell::join(std::move(clients)));
    int total = 0;
    for (int r : results) total += r;
    co_await l.close();
    co_return total;
  };
  EXPECT_EQ(quell::block_on(body()), connections * rounds);
}

TEST(Net, ACancelledReadIsOutOfTheKernelBeforeTheRaceReturnsAndTakesNoBytes) {
  auto body = [&]() -> task<std::string> {
    tcp_listener l = local_listener();
    tcp_stream a, b;
    std::tie(a, b) = co_await connected_pair(l);
    std::string after;
    {
      char buf[16];
      auto r = co_await race(a.read_some(buf), [&]() -> task<std::size_t> {
        co_await sleep_for(5ms);
        co_return 999;
      }());
      EXPECT_EQ(r, 999u);
      // The read's final CQE was reaped before the race returned: nothing of it is in the kernel.
      EXPECT_EQ(io().in_flight(), 0u);
    }
    co_await b.write_all("later");
    after = co_await read_string(a, 5);
    co_return after;
  };
  EXPECT_EQ(quell::block_on(body()), "later");
}

TEST(Net, AReadStartedAndCancelledInTheSameTurnCostsNoSystemCall) {
  auto body = [&]() -> task<> {
    tcp_listener l = local_listener();
    tcp_stream a, b;
    std::tie(a, b) = co_await connected_pair(l);
    const auto enters = io().enters();
    char buf[16];
    auto r = co_await race(a.read_some(buf), quell::ready(std::size_t{7}));
    EXPECT_EQ(r, 7u);
    EXPECT_EQ(io().enters(), enters);
    EXPECT_EQ(io().in_flight(), 0u);
  };
  quell::block_on(body());
}

TEST(Net, BytesAReadReceivedWhileItsCancelWasInFlightGoToTheNextRead) {
  // Deterministic: the recv completes in the kernel, its completion is held un-reaped, then the
  // read is cancelled; the cancel finds nothing to cancel and the bytes must not be lost.
  quell::event go;
  tcp_stream a, b;
  std::string first, second;
  bool reader_ran_on = false;
  auto reader = [&]() -> task<> {
    tcp_listener l = local_listener();
    std::tie(a, b) = co_await connected_pair(l);
    a.set_receive_ahead(false);  // a read of its own in the kernel (receive-ahead: test_receive_ahead.cpp)
    char buf[16];
    co_await race(
        [&]() -> task<> {
          std::size_t n = co_await a.read_some(buf);
          reader_ran_on = true;  // must not happen: the race was decided by `go`
          first.assign(buf, n);
        }(),
        go.wait());
    EXPECT_EQ(a.buffered(), 5u);
    second = co_await read_string(a, 5);
  };
  executor ex{reader()};
  poll_until_in_flight(ex, 1);  // connected; the read is in the kernel
  ASSERT_EQ(io(ex).in_flight(), 1u);
  io(ex).hold_completions(true);
  ASSERT_EQ(::send(b.native_handle(), "bytes", 5, 0), 5);
  ex.poll_once();  // the recv completes in the kernel; its CQE waits un-reaped
  go.set();
  ex.poll_once();  // the race cancels the read: ASYNC_CANCEL goes out, finds nothing
  io(ex).hold_completions(false);
  ex.run();
  EXPECT_FALSE(reader_ran_on);
  EXPECT_EQ(second, "bytes");
}

TEST(Net, AConnectionAcceptedByACancelledAcceptIsDeliveredByTheNextAccept) {
  quell::event go;
  tcp_listener l;
  int accepted_later = -1;
  auto server = [&]() -> task<> {
    l = local_listener();
    auto r = co_await race(
        [&]() -> task<int> {
          tcp_stream s = co_await l.accept();
          co_return 1;
        }(),
        [&]() -> task<int> {
          co_await go.wait();
          co_return 2;
        }());
    EXPECT_EQ(r, 2);
    tcp_stream s = co_await l.accept();
    accepted_later = s.native_handle() >= 0 ? 1 : 0;
    co_await s.close();
  };
  executor ex{server()};
  poll_until_in_flight(ex, 1);
  ASSERT_EQ(io(ex).in_flight(), 1u);
  io(ex).hold_completions(true);
  const int c = ::socket(AF_INET, SOCK_STREAM, 0);
  const address to = l.local_address();
  ASSERT_EQ(::connect(c, to.data(), to.size()), 0);
  ex.poll_once();
  go.set();
  ex.poll_once();
  io(ex).hold_completions(false);
  ex.run();
  ::close(c);
  EXPECT_EQ(accepted_later, 1);
}

TEST(Net, RaceOfAcceptAgainstAShortSleepLosesNoConnection) {
  constexpr int clients = 200;
  auto body = [&]() -> task<int> {
    tcp_listener l = local_listener();
    int delivered = 0, timeouts = 0;
    auto server = [&]() -> task<> {
      std::vector<tcp_stream> keep;
      while (delivered < clients) {
        auto r = co_await race(
            [&]() -> task<bool> {
              keep.push_back(co_await l.accept());
              co_return true;
            }(),
            [&]() -> task<bool> {
              co_await sleep_for(1ms);
              co_return false;
            }());
        r ? ++delivered : ++timeouts;
      }
      for (auto& s : keep) co_await s.close();
    };
    auto connector = [&]() -> task<> {
      for (int i = 0; i < clients; ++i) {
        tcp_stream c = co_await tcp_stream::connect(l.local_address());
        co_await c.close();
        if (i % 3 == 0) co_await sleep_for(std::chrono::microseconds(300 + (i * 37) % 900));
      }
    };
    co_await quell::join(server(), connector());
    EXPECT_GT(timeouts, 0);  // the race really did cancel accepts along the way
    co_await l.close();
    co_return delivered;
  };
  EXPECT_EQ(quell::block_on(body()), clients);
}

TEST(Net, CloseCancelsAPendingReadAndAReusedFdNeverSeesItsCompletion) {
  auto body = [&]() -> task<> {
    tcp_listener l = local_listener();
    tcp_stream a, b;
    std::tie(a, b) = co_await connected_pair(l);
    const int old_fd = a.native_handle();
    int err = 0;
    auto reader = [&]() -> task<> {
      char buf[8];
      try {
        co_await a.read_some(buf);
      } catch (const std::system_error& e) {
        err = e.code().value();
      }
    };
    auto closer = [&]() -> task<> {
      co_await quell::yield();
      co_await a.close();
      EXPECT_EQ(io().in_flight(), 0u);  // close waited for the read to leave the kernel
    };
    co_await quell::join(reader(), closer());
    EXPECT_EQ(err, ECANCELED);
    // The next connection very likely reuses the number; whatever it gets is its own.
    tcp_stream c, d;
    std::tie(c, d) = co_await connected_pair(l);
    (void)old_fd;  // usually reused by c or d; either way each side must see only its own bytes
    co_await d.write_all("fresh");
    EXPECT_EQ(co_await read_string(c, 5), "fresh");
    co_await c.write_all("back");
    EXPECT_EQ(co_await read_string(d, 4), "back");
  };
  quell::block_on(body());
}

TEST(Net, AStreamDestroyedWithAReadPendingEndsThatReadWithAnErrorNotACrash) {
  auto body = [&]() -> task<int> {
    tcp_listener l = local_listener();
    tcp_stream a, b;
    std::tie(a, b) = co_await connected_pair(l);
    auto owner = std::make_unique<tcp_stream>(std::move(a));
    int err = 0;
    auto reader = [&]() -> task<> {
      char buf[8];
      try {
        co_await owner->read_some(buf);
      } catch (const std::system_error& e) {
        err = e.code().value();
      }
    };
    auto dropper = [&]() -> task<> {
      co_await quell::yield();
      co_await quell::yield();
      owner.reset();
    };
    co_await quell::join(reader(), dropper());
    co_return err;
  };
  EXPECT_EQ(quell::block_on(body()), ECANCELED);
}

TEST(Net, ACancelledWriteAllReportsHowManyBytesWentOut) {
  auto body = [&]() -> task<> {
    tcp_listener l = local_listener();
    tcp_stream a, b;
    std::tie(a, b) = co_await connected_pair(l);
    // More than the socket buffers hold, with nobody reading: the write blocks part-way.
    std::string big(16 << 20, 'x');
    std::size_t written = 12345;
    co_await race(a.write_all(big, &written), [&]() -> task<> { co_await sleep_for(20ms); }());
    EXPECT_GT(written, 0u);
    EXPECT_LT(written, big.size());
    // Exactly that many bytes arrive at the peer.
    a.shutdown();
    std::size_t received = 0;
    std::vector<char> buf(1 << 16);
    for (;;) {
      std::size_t n = co_await b.read_some(buf);
      if (n == 0) break;
      received += n;
    }
    EXPECT_EQ(received, written);
  };
  quell::block_on(body());
}

TEST(Net, CancelledConnectAndAcceptLeaveNothingInTheKernel) {
  auto body = [&]() -> task<> {
    tcp_listener l = local_listener();
    auto r = co_await race(l.accept(), [&]() -> task<tcp_stream> {
      co_await sleep_for(2ms);
      co_return tcp_stream{};
    }());
    EXPECT_FALSE(r.is_open());
    EXPECT_EQ(io().in_flight(), 0u);
    // A listener with a full accept queue leaves further connects hanging in SYN-SENT.
    tcp_listener full = tcp_listener::bind(address::parse("127.0.0.1", 0), 0);
    std::vector<tcp_stream> filled;
    bool hung = false;
    for (int i = 0; i < 8 && !hung; ++i) {
      auto c = co_await race(tcp_stream::connect(full.local_address()), [&]() -> task<tcp_stream> {
        co_await sleep_for(50ms);
        co_return tcp_stream{};
      }());
      if (c.is_open()) {
        filled.push_back(std::move(c));
      } else {
        hung = true;
      }
      EXPECT_EQ(io().in_flight(), 0u);
    }
    EXPECT_TRUE(hung);
    for (auto& s : filled) co_await s.close();
    co_await full.close();
    co_await l.close();
  };
  quell::block_on(body());
}

TEST(Net, BadInputGivesASystemErrorWithTheErrno) {
  auto body = [&]() -> task<> {
    // Connecting to a port nobody listens on.
    tcp_listener l = local_listener();
    const address gone = l.local_address();
    co_await l.close();
    int err = 0;
    try {
      co_await tcp_stream::connect(gone);
    } catch (const std::system_error& e) {
      err = e.code().value();
      EXPECT_NE(std::string(e.what()).find(gone.to_string()), std::string::npos) << e.what();
    }
    EXPECT_EQ(err, ECONNREFUSED);
    // Binding a port in use.
    tcp_listener used = local_listener();
    EXPECT_EQ(system_errno([&] { tcp_listener::bind(used.local_address()); }), EADDRINUSE);
    // Reading a closed stream.
    tcp_stream a, b;
    std::tie(a, b) = co_await connected_pair(used);
    co_await a.close();
    char buf[4];
    err = 0;
    try {
      co_await a.read_some(buf);
    } catch (const std::system_error& e) {
      err = e.code().value();
    }
    EXPECT_EQ(err, EBADF);
    // An invalid descriptor.
    tcp_stream bogus(1 << 20);
    err = 0;
    try {
      co_await bogus.read_some(buf);
    } catch (const std::system_error& e) {
      err = e.code().value();
    }
    EXPECT_EQ(err, EBADF);
    // A peer that went away: reads see the end, read_exact says so.
    co_await b.close();
    tcp_stream c, d;
    std::tie(c, d) = co_await connected_pair(used);
    co_await d.close();
    EXPECT_EQ(co_await c.read_some(buf), 0u);
    bool eos = false;
    try {
      co_await c.read_exact(buf);
    } catch (const quell::end_of_stream&) {
      eos = true;
    }
    EXPECT_TRUE(eos);
    co_await used.close();
  };
  quell::block_on(body());
  EXPECT_THROW(address::parse("not-an-ip", 1), std::invalid_argument);
  EXPECT_THROW(address::unix_path(std::string(200, 'x')), std::invalid_argument);
}

TEST(Net, UdpRoundTripAndACancelledReceiveKeepsItsDatagram) {
  auto body = [&]() -> task<std::string> {
    auto a = quell::udp_socket::bind(address::parse("127.0.0.1", 0));
    auto b = quell::udp_socket::bind(address::parse("127.0.0.1", 0));
    co_await a.send_to("ping", b.local_address());
    char buf[16];
    quell::datagram d = co_await b.recv_from(buf);
    EXPECT_EQ(std::string(buf, d.size), "ping");
    EXPECT_EQ(d.peer.port(), a.local_address().port());
    auto r = co_await race(b.recv_from(buf), [&]() -> task<quell::datagram> {
      co_await sleep_for(2ms);
      co_return quell::datagram{};
    }());
    EXPECT_EQ(r.size, 0u);
    co_await a.send_to("pong", b.local_address());
    d = co_await b.recv_from(buf);
    co_await a.close();
    co_await b.close();
    co_return std::string(buf, d.size);
  };
  EXPECT_EQ(quell::block_on(body()), "pong");
}

TEST(Net, DestroyingTheExecutorDrainsAReadInTheKernelBeforeFreeingItsFrame) {
  tcp_listener l;
  tcp_stream a, b;
  bool cleaned = false;
  {
    auto body = [&]() -> task<> {
      l = local_listener();
      std::tie(a, b) = co_await connected_pair(l);
      std::vector<char> buf(64);  // lives in the frame the kernel writes into
      co_await quell::on_cancel(a.read_some(buf), [&] { cleaned = true; });
    };
    executor ex{body()};
    poll_until_in_flight(ex, 1);
    for (int i = 0; i < 10; ++i) ex.poll_once();
    EXPECT_EQ(io(ex).in_flight(), 1u);
  }  // destroyed here: graceful cancel, the read's CQE is awaited, then frames are freed
  EXPECT_TRUE(cleaned);
}

TEST(Net, IoOutsideAnExecutorIsALogicError) {
  tcp_listener l = local_listener();
  EXPECT_THROW(
      {
        auto op = l.accept();
        (void)op.await_ready();
      },
      std::logic_error);
}

TEST(Net, ReusePortListenersShareOnePortAndTheKernelSpreadsConnectionsOverThem) {
  quell::listen_options shared;
  shared.reuse_port = true;
  tcp_listener a = tcp_listener::bind(address::parse("127.0.0.1", 0), shared);
  tcp_listener b = tcp_listener::bind(a.local_address(), shared);
  EXPECT_EQ(a.local_address().port(), b.local_address().port());
  // Without reuse_port on both, the port is taken.
  try {
    (void)tcp_listener::bind(a.local_address());
    ADD_FAILURE() << "bound beside reuse_port listeners without reuse_port";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EADDRINUSE);
  }
  tcp_listener plain = tcp_listener::bind(address::parse("127.0.0.1", 0));
  EXPECT_THROW((void)tcp_listener::bind(plain.local_address(), shared), std::system_error);
  EXPECT_THROW((void)tcp_listener::bind(address::unix_path("/tmp/quell-reuse-port-test.sock"), shared),
               std::invalid_argument);
  // The kernel gives each listener its share: both accept within a few dozen connections.
  int accepted_a = 0, accepted_b = 0;
  auto body = [&]() -> task<> {
    std::vector<tcp_stream> clients;
    for (int i = 0; i < 200 && (accepted_a == 0 || accepted_b == 0); ++i) {
      clients.push_back(co_await tcp_stream::connect(a.local_address()));
      auto take = [](tcp_listener& l, int which) -> task<int> {
        tcp_stream s = co_await l.accept();
        co_await s.close();
        co_return which;
      };
      const int which = co_await race(take(a, 0), take(b, 1));  // the other accept is cancelled
      (which == 0 ? accepted_a : accepted_b) += 1;
    }
    for (auto& c : clients) co_await c.close();
    co_await a.close();
    co_await b.close();
  };
  executor ex{body()};
  ex.run();
  EXPECT_GT(accepted_a, 0);
  EXPECT_GT(accepted_b, 0);
}

TEST(Net, ReleaseGivesTheDescriptorUpOnlyWhenNothingWouldBeLost) {
  auto body = [&]() -> task<> {
    tcp_listener l = local_listener();
    tcp_stream client = co_await tcp_stream::connect(l.local_address());
    tcp_stream server = co_await l.accept();
    {
      // Receive-ahead armed (after a first read): its multishot is in the kernel, so no release.
      tcp_stream probe = co_await tcp_stream::connect(l.local_address());
      tcp_stream probed = co_await l.accept();
      co_await probe.write_all("x");
      char x;
      co_await probed.read_exact(std::span<char>(&x, 1));
      try {
        (void)probed.release();
        ADD_FAILURE() << "released a stream with receive-ahead armed";
      } catch (const std::logic_error& e) {
        EXPECT_NE(std::string(e.what()).find("set_receive_ahead(false)"), std::string::npos) << e.what();
      }
      EXPECT_TRUE(probed.is_open());
      co_await probed.close();
      co_await probe.close();
    }
    // A stream meant to be handed over reads one receive per read.
    server.set_receive_ahead(false);
    // A read_exact cancelled after two of its four bytes came keeps them: releasing would lose them.
    co_await client.write_all("ab");
    auto partial = [&]() -> task<> {
      char four[4];
      co_await server.read_exact(four);
    };
    co_await race(partial(), sleep_for(20ms));
    EXPECT_EQ(server.buffered(), 2u);
    EXPECT_THROW((void)server.release(), std::logic_error);
    EXPECT_TRUE(server.is_open());
    char kept[2];
    co_await server.read_exact(kept);
    EXPECT_EQ(std::string(kept, 2), "ab");
    char one = 0;
    // Nothing kept, nothing in flight: the descriptor moves to a new stream, which works.
    const int fd = server.release();
    EXPECT_GE(fd, 0);
    EXPECT_FALSE(server.is_open());
    EXPECT_THROW((void)server.release(), std::system_error);  // closed now
    tcp_stream adopted(fd);
    co_await client.write_all("c");
    co_await adopted.read_exact(std::span<char>(&one, 1));
    EXPECT_EQ(one, 'c');
    // A read in flight: releasing would pull the descriptor from under the kernel.
    auto reader = [&]() -> task<> {
      char buf[8];
      co_await adopted.read_some(buf);
    };
    auto releaser = [&]() -> task<> {
      co_await quell::yield();  // the read is submitted
      EXPECT_THROW((void)adopted.release(), std::logic_error);
      co_await client.write_all("d");
    };
    co_await quell::join(reader(), releaser());
    co_await adopted.close();
    co_await client.close();
    co_await l.close();
  };
  executor ex{body()};
  ex.run();
}
