// Receive-ahead sockets (quell/detail/receive_ahead.hpp): a multishot receive armed per stream, a
// multishot accept per listener, reads and accepts that wait in user space. Cancelling them is
// synchronous; what the kernel delivered stays queued for the next call; the queue is bounded;
// an exhausted ring only delays; the end of a stream and errors come after the bytes before them.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "quell/quell.hpp"
#include "support/net_client.hpp"

using namespace std::chrono_literals;
using quell::address;
using quell::race;
using quell::task;
using quell::tcp_listener;
using quell::tcp_stream;
using quell::detail::reactor;
using quell::test::open_fds;
using quell::test::read_to_end;

namespace {

tcp_listener local_listener(std::size_t accept_queue = quell::detail::default_accept_bound) {
  quell::listen_options o;
  o.accept_queue = accept_queue;
  return tcp_listener::bind(address::parse("127.0.0.1", 0), o);
}

task<std::tuple<tcp_stream, tcp_stream>> connected_pair(tcp_listener& l) {
  auto [server, client] = co_await quell::join(l.accept(), tcp_stream::connect(l.local_address()));
  co_return std::tuple<tcp_stream, tcp_stream>(std::move(server), std::move(client));
}

std::string pattern(std::size_t n, std::size_t from = 0) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((from + i) * 7 % 251);
  return s;
}

// Reads `s` to its end: how many bytes, and whether they were pattern(65536) repeated, in order.
task<std::pair<std::size_t, bool>> read_pattern_to_end(tcp_stream& s) {
  std::size_t got = 0;
  bool in_order = true;
  std::vector<char> buf(100000);
  for (;;) {
    const std::size_t n = co_await s.read_some(buf);
    if (n == 0) co_return std::pair<std::size_t, bool>(got, in_order);
    for (std::size_t i = 0; i < n && in_order; ++i) {
      if (buf[i] != static_cast<char>(((got + i) % 65536) * 7 % 251)) in_order = false;
    }
    got += n;
  }
}

bool ahead_on() { return reactor::current().ring_ready(); }

}  // namespace

TEST(ReceiveAhead, ACancelledReadEndsAtOnceWithoutASystemCallAndTheBytesGoToTheNextRead) {
  auto body = []() -> task<> {
    tcp_listener l = local_listener(0);  // one accept per call: the stream's multishot is the only one
    tcp_stream a, b;                     // (not a structured binding: clang 14 cannot capture those)
    std::tie(a, b) = co_await connected_pair(l);
    if (!ahead_on()) co_return;  // (this kernel: logged; the one-shot path is tested elsewhere)
    reactor& io = reactor::current();
    char buf[16];
    // Armed by a first read that waits: the multishot is in the kernel from then on.
    auto first = co_await race(a.read_some(buf), quell::sleep_for(5ms));
    EXPECT_EQ(first.index(), 1u);
    EXPECT_EQ(io.background_in_flight(), 1u);
    // A parked read cancelled: the race's loser ends in the same turn, no io_uring_enter.
    auto parked = [&]() -> task<int> {
      co_await a.read_some(buf);
      co_return 1;
    };
    auto decide = [&]() -> task<int> {
      co_await quell::yield();
      co_return 2;
    };
    const std::uint64_t enters = io.enters();
    const int r = co_await race(parked(), decide());  // (a race of one type yields the winner's value)
    EXPECT_EQ(r, 2);
    EXPECT_EQ(io.enters(), enters);
    EXPECT_EQ(io.in_flight(), 0u);
    // Bytes that arrive with nobody reading are queued, and the next read takes them.
    co_await b.write_all("hello");
    co_await quell::sleep_for(5ms);
    EXPECT_EQ(a.buffered(), 5u);
    std::size_t n = co_await a.read_some(buf);
    EXPECT_EQ(std::string(buf, n), "hello");
    co_await a.close();
    co_await b.close();
  };
  quell::block_on(body());
}

// The window after receive-ahead handed bytes to a parked read and before that read resumed: a
// cancel there keeps them, in front of what came after.
TEST(ReceiveAhead, BytesHandedToAReadThatIsCancelledBeforeItResumesAreReadNext) {
  auto body = []() -> task<> {
    tcp_listener l = local_listener();
    tcp_stream a, b;  // (not a structured binding: clang 14 cannot capture those)
    std::tie(a, b) = co_await connected_pair(l);
    if (!ahead_on()) co_return;
    reactor& io = reactor::current();
    char buf[4];
    std::string got;
    int lost = 0;
    for (int round = 0; round < 50; ++round) {
      const std::string msg = pattern(6, static_cast<std::size_t>(round) * 6);
      auto reader = [&]() -> task<std::size_t> { co_return co_await a.read_some(buf); };
      // Decides in the turn the read's bytes were handed over: the read has them, not yet resumed.
      auto cut = [&]() -> task<bool> {
        while (io.parked > 0) co_await quell::yield();
        co_return true;
      };
      auto sender = [&]() -> task<> { co_await b.write_all(msg); };
      auto [r, sent] = co_await quell::join(race(reader(), cut()), sender());
      (void)sent;
      if (r.index() == 0) {
        got.append(buf, std::get<0>(r));
      } else {
        ++lost;
      }
    }
    b.shutdown();
    got += co_await read_to_end(a);
    EXPECT_EQ(got, pattern(300));
    EXPECT_GT(lost, 0);
    co_await a.close();
    co_await b.close();
  };
  quell::block_on(body());
}

TEST(ReceiveAhead, AMegabyteUnderRandomCancelsArrivesExactlyInOrder) {
  auto body = []() -> task<> {
    tcp_listener l = local_listener();
    tcp_stream a, b;  // (not a structured binding: clang 14 cannot capture those)
    std::tie(a, b) = co_await connected_pair(l);
    constexpr std::size_t total = 1 << 20;
    const std::string data = pattern(total);
    std::mt19937 rng(20261207);
    std::string got;
    got.reserve(total);
    auto writer = [&]() -> task<> {
      std::size_t off = 0;
      while (off < total) {
        const std::size_t n = std::min<std::size_t>(total - off, 1 + rng() % 9000);
        co_await b.write_all(std::string_view(data).substr(off, n));
        off += n;
        if (rng() % 4 == 0) co_await quell::yield();
      }
      b.shutdown();
    };
    auto reader = [&]() -> task<> {
      std::vector<char> buf(70000);
      for (;;) {
        const std::size_t want = 1 + rng() % buf.size();
        const int how = static_cast<int>(rng() % 3);
        if (how == 0) {
          const std::size_t n = co_await a.read_some(std::span<char>(buf.data(), want));
          if (n == 0) co_return;
          got.append(buf.data(), n);
        } else if (how == 1) {
          // read_some raced against a turn or two: cancelled parked, or in its window, or won.
          const int turns = static_cast<int>(rng() % 3);
          auto r = co_await race(a.read_some(std::span<char>(buf.data(), want)), [&]() -> task<int> {
            for (int i = 0; i < turns; ++i) co_await quell::yield();
            co_return 0;
          }());
          if (r.index() == 0) {
            if (std::get<0>(r) == 0) co_return;
            got.append(buf.data(), std::get<0>(r));
          }
        } else {
          // read_exact raced likewise: a cancelled one keeps its part for the next read.
          const std::size_t exact = std::min<std::size_t>(want, 3000);
          auto r = co_await race(a.read_exact(std::span<char>(buf.data(), exact)), [&]() -> task<int> {
            co_await quell::yield();
            co_return 0;
          }());
          if (r.index() == 0) got.append(buf.data(), exact);
        }
      }
    };
    co_await quell::join(writer(), reader());
    EXPECT_EQ(got.size(), total);
    EXPECT_TRUE(got == data) << "the byte stream differs";
    co_await a.close();
    co_await b.close();
  };
  quell::block_on(body());
}

// A peer sends 10 MB to a socket nobody reads: the process keeps at most the bound (plus a
// buffer with the kernel's cap; plus one wake-up's buffers without it); reading drains all.
TEST(ReceiveAhead, ASocketNobodyReadsKeepsAtMostItsBoundAndReadingDrainsEveryByte) {
  for (const bool kernel_cap : {true, false}) {
    auto body = [&]() -> task<> {
      tcp_listener l = local_listener();
      tcp_stream a, b;  // (not a structured binding: clang 14 cannot capture those)
      std::tie(a, b) = co_await connected_pair(l);
      if (!ahead_on()) co_return;
      reactor& io = reactor::current();
      if (!kernel_cap) io.receive_cap = reactor::tri::no;  // the bound as older kernels get it
      constexpr std::size_t bound = 32 * 1024;
      a.set_receive_bound(bound);
      char one;
      auto first = co_await race(a.read_some(std::span<char>(&one, 1)), quell::sleep_for(1ms));  // arms it
      EXPECT_EQ(first.index(), 1u);
      constexpr std::size_t total = 10 << 20;
      const int peer = b.release();  // a blocking sender on its own thread
      std::atomic<bool> sent{false};
      std::thread sender([&] {
        const std::string chunk = pattern(65536);
        std::size_t off = 0;
        while (off < total) {
          const std::size_t at = off % chunk.size();
          const ssize_t n = ::send(peer, chunk.data() + at, std::min(chunk.size() - at, total - off), MSG_NOSIGNAL);
          if (n <= 0) break;
          off += static_cast<std::size_t>(n);
        }
        sent = off == total;
        ::shutdown(peer, SHUT_WR);
      });
      std::size_t most = 0;
      for (int i = 0; i < 60; ++i) {  // 300 ms of the peer pushing (kernel buffers fill meanwhile)
        co_await quell::sleep_for(5ms);
        most = std::max(most, a.buffered());
      }
      const std::size_t slack =
          kernel_cap && io.receive_cap == reactor::tri::yes ? io.buffer_size() : 32 * io.buffer_size();
      EXPECT_LE(most, bound + slack) << (kernel_cap ? "with" : "without") << " the kernel's length cap";
      EXPECT_GE(most, bound / 2);
      const auto [got, in_order] = co_await read_pattern_to_end(a);
      sender.join();
      ::close(peer);
      EXPECT_TRUE(sent.load());
      EXPECT_EQ(got, total);
      EXPECT_TRUE(in_order);
      co_await a.close();
    };
    quell::block_on(body());
  }
}

// A waiting read_exact of 1 MiB lets the receive run past the bound (its bytes go straight to it,
// not to the queue). Cancelled half-way, its 256 KiB go back to the queue; the receive stops at
// the bound from then on, however much the peer sends, and every byte is read in order after.
TEST(ReceiveAhead, ALargeWaitingReadRaisesTheCapOnlyWhileItWaits) {
  auto body = [&]() -> task<> {
    tcp_listener l = local_listener();
    tcp_stream a, b;
    std::tie(a, b) = co_await connected_pair(l);
    if (!ahead_on()) co_return;
    reactor& io = reactor::current();
    constexpr std::size_t bound = 32 * 1024, first = 256 * 1024, total = 4 << 20;
    a.set_receive_bound(bound);
    const int peer = b.release();
    std::atomic<bool> go{false}, sent{false};
    std::thread sender([&] {
      const std::string chunk = pattern(65536);
      std::size_t off = 0;
      while (off < total) {
        if (off == first) {
          while (!go) std::this_thread::sleep_for(1ms);
        }
        const std::size_t at = off % chunk.size();
        const std::size_t want = std::min({chunk.size() - at, total - off, off < first ? first - off : total});
        const ssize_t n = ::send(peer, chunk.data() + at, want, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<std::size_t>(n);
      }
      sent = off == total;
      ::shutdown(peer, SHUT_WR);
    });
    std::vector<char> big(1 << 20);
    auto read_all = [&]() -> task<int> {
      co_await a.read_exact(big);
      co_return 1;
    };
    const std::size_t before = io.background_in_flight();  // (a's receive is armed by its first read)
    auto r = co_await race(read_all(), quell::sleep_for(200ms));
    EXPECT_EQ(r.index(), 1u);
    EXPECT_EQ(a.buffered(), first) << "the cancelled read's bytes are queued again";
    // The peer sends nothing more yet: only the read's cancel can have ended the raised receive
    // (the queue is above half its bound, so it is not armed again).
    co_await quell::sleep_for(5ms);
    EXPECT_EQ(io.background_in_flight(), before) << "the raised receive outlived its read";
    go = true;
    std::size_t most = 0;
    for (int i = 0; i < 40; ++i) {  // 200 ms of the peer pushing
      co_await quell::sleep_for(5ms);
      most = std::max(most, a.buffered());
    }
    EXPECT_LE(most, first + bound + 4 * io.buffer_size()) << "the receive ran on past the bound";
    const auto [got, in_order] = co_await read_pattern_to_end(a);
    sender.join();
    ::close(peer);
    EXPECT_TRUE(sent.load());
    EXPECT_EQ(got, total);
    EXPECT_TRUE(in_order);
    co_await a.close();
    co_await l.close();
  };
  quell::block_on(body());
}

// 1,000 sockets, a ring of 16 small buffers: the ring runs dry again and again; every byte still
// arrives and no read fails.
TEST(ReceiveAhead, AThousandSocketsOnASmallRingGetEveryByteAndNoReadFails) {
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur < 4096 && lim.rlim_max >= 4096) {
    lim.rlim_cur = 4096;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  auto body = []() -> task<> {
    quell::receive_ring_options ring;
    ring.buffer_size = 512;
    ring.buffers = 16;
    quell::set_receive_ring(ring);
    constexpr int sockets = 1000;
    constexpr std::size_t each = 3000;
    tcp_listener l = local_listener(256);
    std::vector<tcp_stream> readers, writers;
    for (int i = 0; i < sockets; ++i) {
      tcp_stream a, b;  // (not a structured binding: clang 14 cannot capture those)
      std::tie(a, b) = co_await connected_pair(l);
      readers.push_back(std::move(a));
      writers.push_back(std::move(b));
    }
    int failures = 0, complete = 0;
    auto read_one = [&](int i) -> task<> {
      try {
        std::string got;
        char buf[1000];
        while (got.size() < each) {
          const std::size_t n = co_await readers[i].read_some(buf);
          if (n == 0) break;
          got.append(buf, n);
        }
        if (got == pattern(each, static_cast<std::size_t>(i))) ++complete;
      } catch (const std::exception&) {
        ++failures;
      }
    };
    // Every socket has its bytes before the first read arms its receive: the 1,000 receives are
    // armed in one io_uring_enter and find 3 MB between them, far more than the ring's 8 KiB.
    for (int i = 0; i < sockets; ++i) {
      const std::string p = pattern(each, static_cast<std::size_t>(i));
      EXPECT_EQ(::send(writers[i].native_handle(), p.data(), p.size(), MSG_NOSIGNAL), static_cast<ssize_t>(each));
    }
    reactor& io = reactor::current();
    const std::uint64_t dry0 = io.ring_ran_dry;
    auto all = [&](quell::scope& s) -> task<> {
      for (int i = 0; i < sockets; ++i) s.spawn(read_one(i));
      co_return;
    };
    co_await quell::with_scope(all);
    EXPECT_EQ(failures, 0);
    EXPECT_EQ(complete, sockets);
    if (io.ring_ready()) {
      EXPECT_GT(io.ring_ran_dry, dry0) << "the ring never ran dry: the test tests nothing";
    }
    for (auto& s : readers) co_await s.close();
    for (auto& s : writers) co_await s.close();
  };
  quell::block_on(body());
}

TEST(ReceiveAhead, TheEndOfTheStreamAndAResetComeAfterTheBytesBeforeThem) {
  auto body = []() -> task<> {
    tcp_listener l = local_listener();
    {
      // Bytes, then the end, sent back to back (the order the kernel must keep).
      tcp_stream a, b;  // (not a structured binding: clang 14 cannot capture those)
      std::tie(a, b) = co_await connected_pair(l);
      char buf[64];
      auto armed = co_await race(a.read_some(buf), quell::sleep_for(1ms));
      EXPECT_EQ(armed.index(), 1u);
      co_await b.write_all("last words");
      b.shutdown();
      co_await quell::sleep_for(5ms);  // both arrive while nobody reads
      EXPECT_EQ(a.buffered(), 10u);
      std::size_t n = co_await a.read_some(std::span<char>(buf, 4));
      EXPECT_EQ(std::string(buf, n), "last");
      n = co_await a.read_some(buf);
      EXPECT_EQ(std::string(buf, n), " words");
      EXPECT_EQ(co_await a.read_some(buf), 0u);
      EXPECT_EQ(co_await a.read_some(buf), 0u);  // the end stays the end
      co_await a.close();
      co_await b.close();
    }
    {
      // Bytes, then a reset (SO_LINGER 0): the bytes first, then ECONNRESET once, then the end.
      tcp_stream a, b;  // (not a structured binding: clang 14 cannot capture those)
      std::tie(a, b) = co_await connected_pair(l);
      char buf[64];
      auto armed = co_await race(a.read_some(buf), quell::sleep_for(1ms));
      EXPECT_EQ(armed.index(), 1u);
      co_await b.write_all("partial");
      co_await quell::sleep_for(5ms);
      const int fd = b.release();
      linger lg{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      ::close(fd);
      co_await quell::sleep_for(5ms);
      // The reset is known and not reported yet: handing the descriptor over would lose it.
      EXPECT_THROW((void)a.release(), std::logic_error);
      std::size_t n = co_await a.read_some(buf);
      EXPECT_EQ(std::string(buf, n), "partial");
      int err = 0;
      try {
        co_await a.read_some(buf);
      } catch (const std::system_error& e) {
        err = e.code().value();
      }
      EXPECT_EQ(err, ECONNRESET);
      EXPECT_EQ(co_await a.read_some(buf), 0u);
      co_await a.close();
    }
    {
      // read_exact across the end: it keeps the part that came, and says where it ended.
      tcp_stream a, b;  // (not a structured binding: clang 14 cannot capture those)
      std::tie(a, b) = co_await connected_pair(l);
      co_await b.write_all("abc");
      b.shutdown();
      char four[4];
      bool eos = false;
      try {
        co_await a.read_exact(four);
      } catch (const quell::end_of_stream&) {
        eos = true;
      }
      EXPECT_TRUE(eos);
      char buf[8];
      std::size_t n = co_await a.read_some(buf);
      EXPECT_EQ(std::string(buf, n), "abc");
      EXPECT_EQ(co_await a.read_some(buf), 0u);
      co_await a.close();
      co_await b.close();
    }
  };
  quell::block_on(body());
}

TEST(ReceiveAhead, ConnectionsAcceptedWhileAcceptIsCancelledAreReturnedByTheNextAccept) {
  auto body = []() -> task<> {
    tcp_listener l = local_listener();
    const address at = l.local_address();
    reactor& io = reactor::current();
    std::vector<int> clients;
    int accepted = 0;
    for (int round = 0; round < 40; ++round) {
      // The accept races a turn or two while a client connects: cancelled parked, cancelled with
      // the connection handed to it, or won.
      const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      auto turns = [&](int k) -> task<int> {
        for (int i = 0; i < k; ++i) co_await quell::yield();
        co_return 0;
      };
      EXPECT_EQ(::connect(c, at.data(), at.size()), 0);
      clients.push_back(c);
      auto r = co_await race(l.accept(), turns(round % 3));
      if (r.index() == 0) ++accepted;
    }
    // Every connection made is accepted exactly once.
    while (accepted < 40) {
      tcp_stream s = co_await quell::timeout(5s, l.accept());
      ++accepted;
    }
    auto extra = co_await race(l.accept(), quell::sleep_for(20ms));
    EXPECT_EQ(extra.index(), 1u);
    EXPECT_EQ(accepted, 40);
    EXPECT_EQ(io.in_flight(), 0u);
    for (int c : clients) ::close(c);
    co_await l.close();
  };
  quell::block_on(body());
}

TEST(ReceiveAhead, ClosingAListenerClosesTheConnectionsItQueuedAndLeaksNoDescriptor) {
  const std::size_t before = open_fds();
  std::vector<int> clients;
  auto body = [&]() -> task<> {
    tcp_listener l = local_listener(4);
    const address at = l.local_address();
    auto armed = co_await race(l.accept(), quell::sleep_for(1ms));  // arms the multishot accept
    EXPECT_EQ(armed.index(), 1u);
    for (int i = 0; i < 10; ++i) {  // more than its queue of 4: the kernel's backlog holds the rest
      const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      EXPECT_EQ(::connect(c, at.data(), at.size()), 0);
      clients.push_back(c);
    }
    co_await quell::sleep_for(10ms);  // the multishot takes its share, then stops
    co_await l.close();
  };
  quell::block_on(body());
  // Each client sees its connection end: an end of stream or a reset, never silence.
  for (int c : clients) {
    char x;
    pollfd p{c, POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 2000), 1);
    const ssize_t n = ::recv(c, &x, 1, MSG_DONTWAIT);
    EXPECT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET)) << n << " " << std::strerror(errno);
    ::close(c);
  }
  EXPECT_EQ(open_fds(), before);
}

// A listener's queue is bounded; above it the kernel's backlog holds the rest, and accept()
// takes them all in order of arrival as the queue drains.
TEST(ReceiveAhead, AListenerTakesAtMostItsQueueAheadAndEveryConnectionIsAcceptedOnce) {
  auto body = []() -> task<> {
    tcp_listener l = local_listener(3);
    const address at = l.local_address();
    auto armed = co_await race(l.accept(), quell::sleep_for(1ms));
    EXPECT_EQ(armed.index(), 1u);
    std::vector<tcp_stream> clients;
    for (int i = 0; i < 12; ++i) clients.push_back(co_await tcp_stream::connect(at));
    co_await quell::sleep_for(10ms);
    std::vector<std::uint16_t> ports;
    for (int i = 0; i < 12; ++i) {
      tcp_stream s = co_await quell::timeout(5s, l.accept());
      ports.push_back(s.peer_address().port());
      co_await s.close();
    }
    std::vector<std::uint16_t> expected;
    for (auto& c : clients) expected.push_back(c.local_address().port());
    std::sort(ports.begin(), ports.end());
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(ports, expected);
    for (auto& c : clients) co_await c.close();
    co_await l.close();
  };
  quell::block_on(body());
}

TEST(ReceiveAhead, TurningItOffMidStreamKeepsEveryByteInOrder) {
  auto body = []() -> task<> {
    tcp_listener l = local_listener(0);
    tcp_stream a, b;  // (not a structured binding: clang 14 cannot capture those)
    std::tie(a, b) = co_await connected_pair(l);
    reactor& io = reactor::current();
    co_await b.write_all("one,");
    char buf[64];
    std::string got;
    got.append(buf, co_await a.read_some(std::span<char>(buf, 2)));
    // Armed now; turned off with bytes queued and more on the way.
    co_await b.write_all("two,");
    auto parked = [&]() -> task<> { got.append(buf, co_await a.read_some(std::span<char>(buf, 64))); };
    auto turn_off = [&]() -> task<> {
      a.set_receive_ahead(false);
      co_await b.write_all("three");
      b.shutdown();
    };
    co_await quell::join(parked(), turn_off());
    got += co_await read_to_end(a);
    EXPECT_EQ(got, "one,two,three");
    EXPECT_EQ(io.background_in_flight(), 0u);
    co_await a.close();
    co_await b.close();
  };
  quell::block_on(body());
}

TEST(ReceiveAhead, AnExecutorWithItTurnedOffReadsOneReceivePerRead) {
  auto body = []() -> task<> {
    quell::receive_ring_options off;
    off.receive_ahead = false;
    quell::set_receive_ring(off);
    tcp_listener l = local_listener();
    tcp_stream a, b;  // (not a structured binding: clang 14 cannot capture those)
    std::tie(a, b) = co_await connected_pair(l);
    co_await b.write_all("plain");
    char buf[8];
    std::size_t n = co_await a.read_some(buf);
    EXPECT_EQ(std::string(buf, n), "plain");
    EXPECT_EQ(reactor::current().background_in_flight(), 0u);
    EXPECT_THROW(quell::set_receive_ring({}), std::logic_error);  // set up already
    co_await a.close();
    co_await b.close();
  };
  quell::block_on(body());
  quell::receive_ring_options bad;
  bad.buffers = 1000;
  auto misuse = [&]() -> task<> {
    EXPECT_THROW(quell::set_receive_ring(bad), std::invalid_argument);
    co_return;
  };
  quell::block_on(misuse());
  EXPECT_THROW(quell::set_receive_ring({}), std::logic_error);  // outside an executor
}

// A stream that outlives its executor: the executor ends its multishot before it returns, what
// arrived stays with the stream, and the next executor reads on.
TEST(ReceiveAhead, AStreamOutlivesItsExecutorAndReadsOnInTheNext) {
  tcp_listener l;
  tcp_stream a, b;
  auto first = [&]() -> task<> {
    l = local_listener();
    std::tie(a, b) = co_await connected_pair(l);
    co_await b.write_all("kept");
    char buf[2];
    std::size_t n = co_await a.read_some(buf);  // arms it; the rest is queued
    EXPECT_EQ(std::string(buf, n), "ke");
  };
  quell::block_on(first());
  auto second = [&]() -> task<> {
    co_await b.write_all("!");
    b.shutdown();
    EXPECT_EQ(co_await read_to_end(a), "pt!");
    co_await a.close();
    co_await b.close();
    co_await l.close();
  };
  quell::block_on(second());
}

// A receive that ended at its length cap waits to be armed again at the next flush: an executor
// that ends then still ends it properly (the stream reads on in the next executor), and a close()
// then releases the descriptor at once.
TEST(ReceiveAhead, AReceiveWaitingToBeArmedAgainEndsWithItsExecutorAndClosesAtOnce) {
  tcp_listener l;
  tcp_stream a, b;
  const std::string bulk = pattern(64 * 1024 + 10);
  auto first = [&]() -> task<> {
    l = local_listener(0);
    std::tie(a, b) = co_await connected_pair(l);
    co_await b.write_all(bulk);
    std::string got(64 * 1024, '\0');
    co_await a.read_exact(got);  // exactly the bound: the kernel's cap ends the multishot here
    EXPECT_TRUE(got == bulk.substr(0, got.size()));
  };
  quell::block_on(first());
  auto second = [&]() -> task<> {
    b.shutdown();
    const std::string rest = co_await quell::timeout(5s, read_to_end(a));
    EXPECT_EQ(rest, bulk.substr(64 * 1024));
    // Armed again, ended at the end of the stream; now once more up to the cap, then close().
    tcp_stream c, d;
    std::tie(c, d) = co_await connected_pair(l);
    co_await d.write_all(bulk);
    std::string got(64 * 1024, '\0');
    co_await c.read_exact(got);
    const int fd = c.native_handle();
    co_await c.close();
    EXPECT_EQ(::fcntl(fd, F_GETFD), -1) << "the descriptor is still open after close()";
    co_await a.close();
    co_await b.close();
    co_await d.close();
    co_await l.close();
  };
  quell::block_on(second());
}

// A socket dropped between two poll_once() calls, while a read waits on its queue: the read
// ends in the executor's next turn (not inside the drop, where no executor runs), with an error.
TEST(ReceiveAhead, ASocketDroppedBetweenTurnsEndsTheWaitingReadInTheNextTurn) {
  tcp_listener l;
  tcp_stream a, b;
  bool waiting = false;
  bool ended = false;
  bool on_executor = false;
  auto body = [&]() -> task<> {
    l = local_listener();
    std::tie(a, b) = co_await connected_pair(l);
    if (!ahead_on()) {
      ended = on_executor = true;  // one receive per read: the kernel's read is another test's
      co_return;
    }
    char buf[4];
    waiting = true;
    try {
      (void)co_await a.read_some(buf);
    } catch (const std::system_error&) {
    }
    ended = true;
    on_executor = quell::detail::this_thread().current != nullptr;
  };
  quell::executor ex{body()};
  for (int i = 0; i < 10000 && !(waiting && ex.reactor_if_any()->parked == 1); ++i) ex.poll_once();
  if (waiting) {
    ASSERT_EQ(ex.reactor_if_any()->parked, 1u);
    a = tcp_stream{};  // no executor runs here
    EXPECT_FALSE(ended) << "the read resumed inside the drop";
  }
  ex.run();
  EXPECT_TRUE(ended);
  EXPECT_TRUE(on_executor);
}

// The multishot is no task's I/O: a task that waits for something nobody will do is still
// reported stuck, not left hanging, while a socket has receive-ahead armed.
TEST(ReceiveAhead, AnArmedSocketDoesNotHideATaskThatCanNeverFinish) {
  tcp_listener l;
  tcp_stream a, b;
  quell::event never;
  auto body = [&]() -> task<> {
    l = local_listener();
    std::tie(a, b) = co_await connected_pair(l);
    char buf[4];
    auto armed = co_await race(a.read_some(buf), quell::sleep_for(1ms));
    EXPECT_EQ(armed.index(), 1u);
    co_await never.wait();
  };
  EXPECT_THROW(quell::block_on(body()), quell::stuck_error);
}

// The reactor under mass timeouts: 10,000 reads over 1,000 sockets (half reading one receive per
// read, half with receive-ahead), each under a timeout that expires at the same virtual moment
// as writes to a third of the sockets. Thousands of cancels (ASYNC_CANCEL for the one-shot reads,
// more than the submission queue holds) meet completions in one step. Every read ends exactly
// once, and every byte written is read exactly once: by a read that completed, or afterwards.
TEST(ReactorStress, TenThousandTimeoutsExpiringTogetherOverAThousandSocketsEndEveryReadOnce) {
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur < 4096 && lim.rlim_max >= 4096) {
    lim.rlim_cur = 4096;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  constexpr int sockets = 1000;
  constexpr int reads = 10000;
  quell::virtual_clock clock;
  clock.set_io_grace(2ms);
  std::vector<int> ends(reads, 0);
  std::uint64_t written = 0, read_during = 0, read_after = 0;
  int completed = 0, timed_out = 0;
  auto body = [&]() -> task<> {
    tcp_listener l = local_listener();
    std::vector<tcp_stream> rd, wr;
    for (int i = 0; i < sockets; ++i) {
      tcp_stream a, b;
      std::tie(a, b) = co_await connected_pair(l);
      if (i % 2 == 0) a.set_receive_ahead(false);
      rd.push_back(std::move(a));
      wr.push_back(std::move(b));
    }
    auto one_read = [&](int k) -> task<> {
      auto mark = [&ends, k] { ++ends[k]; };
      co_await quell::defer(mark);
      char buf[8];
      // Most expire with the writes; some a moment later, once the bytes may have come.
      const quell::duration limit = k % 7 == 0 ? 50ms + 10us : 50ms;
      auto r = co_await quell::move_on_after(limit, rd[k % sockets].read_some(buf));
      if (r) {
        ++completed;
        read_during += *r;
      } else {
        ++timed_out;
      }
    };
    auto writer = [&]() -> task<> {
      co_await quell::sleep_for(50ms);  // the same moment as every timeout
      for (int i = 0; i < sockets; i += 3) {
        co_await wr[i].write_all("0123456789");
        written += 10;
      }
    };
    auto all = [&](quell::scope& s) -> task<> {
      s.spawn(writer());  // its timer first: the writes go out in the step of the cancels, before them
      for (int k = 0; k < reads; ++k) s.spawn(one_read(k));
      co_return;
    };
    co_await quell::with_scope(all);
    for (auto& w : wr) w.shutdown();
    for (auto& r : rd) read_after += (co_await read_to_end(r)).size();
    for (auto& r : rd) co_await r.close();
    for (auto& w : wr) co_await w.close();
  };
  quell::executor ex{body(), clock};
  ex.run();
  EXPECT_EQ(std::count(ends.begin(), ends.end(), 1), reads);
  EXPECT_EQ(completed + timed_out, reads);
  EXPECT_GT(timed_out, reads / 2);
  EXPECT_EQ(read_during + read_after, written);
  std::printf("[ stress   ] %d reads completed, %d timed out; %llu bytes read by them, %llu afterwards\n", completed,
              timed_out, static_cast<unsigned long long>(read_during), static_cast<unsigned long long>(read_after));
}
