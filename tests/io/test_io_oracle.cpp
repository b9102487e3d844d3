// The io_uring race oracle: 10,000 operations of mixed kinds on real sockets and timers, each
// started and then cancelled at a random moment (the same turn, or one or two turns later, by
// which time the kernel may have it or may have completed it). Every operation must end exactly
// once, and nothing the kernel produced may be lost or delivered twice: every byte written to the
// TCP stream is read exactly once and in order, every connection made is accepted exactly once,
// every datagram sent is received exactly once. Runs in every configuration, ASan included.
#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "quell/quell.hpp"

using namespace std::chrono_literals;
using quell::task;

namespace {

struct record {
  int ends = 0;  // incremented by the operation's async cleanup, which runs on every exit
};

// Races `op` (wrapped in a task that records its end) against a trigger that fires after `turns`
// scheduling turns; returns once the loser has finished, as race does.
task<int> yields(int turns) {
  for (int i = 0; i < turns; ++i) co_await quell::yield();
  co_return 1;
}

struct oracle {
  std::mt19937 rng{20261126};
  quell::tcp_stream writer, reader;
  quell::tcp_listener listener;
  quell::udp_socket udp_a, udp_b;
  std::uint8_t next_write = 0, next_read = 0;
  std::uint64_t bytes_written = 0, bytes_read = 0;
  int connects = 0, accepts = 0, sent = 0, received = 0;
  int completed = 0, cancelled = 0;
  std::vector<quell::tcp_stream> clients;
  std::string failure;
  quell::detail::fault_injector* faults = nullptr;  // the faulted variant
  bool one_shot = false;  // reads and accepts of their own in the kernel, instead of receive-ahead

  void fail(const std::string& why) {
    if (failure.empty()) failure = why;
  }

  void take_bytes(const char* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      if (static_cast<std::uint8_t>(p[i]) != next_read)
        fail("byte out of order at offset " + std::to_string(bytes_read + i));
      ++next_read;
    }
    bytes_read += n;
  }

  task<int> read_op(record& rec) {
    auto mark = [&rec] { ++rec.ends; };
    co_await quell::defer(mark);
    char buf[48];
    std::size_t n = co_await reader.read_some(buf);
    if (n == 0) fail("unexpected end of stream");
    take_bytes(buf, n);
    co_return 0;
  }
  task<int> accept_op(record& rec) {
    auto mark = [&rec] { ++rec.ends; };
    co_await quell::defer(mark);
    quell::tcp_stream s = co_await listener.accept();
    ++accepts;
    co_return 0;
  }
  task<int> recv_op(record& rec) {
    auto mark = [&rec] { ++rec.ends; };
    co_await quell::defer(mark);
    char buf[16];
    quell::datagram d = co_await udp_b.recv_from(buf);
    if (d.size != 4) fail("datagram of size " + std::to_string(d.size));
    ++received;
    co_return 0;
  }
  task<int> timer_op(record& rec, quell::duration d) {
    auto mark = [&rec] { ++rec.ends; };
    co_await quell::defer(mark);
    co_await quell::sleep_for(d);
    co_return 0;
  }

  task<> one(int i) {
    record rec;
    const int kind = static_cast<int>(rng() % 4);
    const int turns = static_cast<int>(rng() % 3);
    switch (kind) {
      case 0: {
        if (rng() % 2) {
          std::string chunk(1 + rng() % 32, '\0');
          for (char& c : chunk) c = static_cast<char>(next_write++);
          co_await writer.write_all(chunk);
          bytes_written += chunk.size();
        }
        auto r = co_await quell::race(read_op(rec), yields(turns));
        (r == 0 ? completed : cancelled)++;
        break;
      }
      case 1: {
        if (rng() % 2) {
          // connect opts out of transient retries (a retried connect would fail): no faults on it
          quell::detail::reactor::current().inject_faults(nullptr);
          clients.push_back(co_await quell::tcp_stream::connect(listener.local_address()));
          quell::detail::reactor::current().inject_faults(faults);
          ++connects;
        }
        auto r = co_await quell::race(accept_op(rec), yields(turns));
        (r == 0 ? completed : cancelled)++;
        break;
      }
      case 2: {
        if (rng() % 2) {
          co_await udp_a.send_to("ping", udp_b.local_address());
          ++sent;
        }
        auto r = co_await quell::race(recv_op(rec), yields(turns));
        (r == 0 ? completed : cancelled)++;
        break;
      }
      default: {
        auto r = co_await quell::race(timer_op(rec, std::chrono::microseconds(rng() % 200)), yields(turns));
        (r == 0 ? completed : cancelled)++;
        break;
      }
    }
    if (rec.ends != 1) fail("operation " + std::to_string(i) + " ended " + std::to_string(rec.ends) + " times");
  }

  task<> run(int ops) {
    quell::listen_options lo;
    if (one_shot) lo.accept_queue = 0;
    listener = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0), lo);
    std::tie(writer, reader) =
        co_await quell::join(quell::tcp_stream::connect(listener.local_address()), listener.accept());
    if (one_shot) reader.set_receive_ahead(false);
    udp_a = quell::udp_socket::bind(quell::address::parse("127.0.0.1", 0));
    udp_b = quell::udp_socket::bind(quell::address::parse("127.0.0.1", 0));
    if (faults) quell::detail::reactor::current().inject_faults(faults);
    for (int i = 0; i < ops && failure.empty(); ++i) co_await one(i);

    // Drain: what the kernel still holds must all arrive, exactly once.
    writer.shutdown();
    for (;;) {
      char buf[256];
      std::size_t n = co_await reader.read_some(buf);
      if (n == 0) break;
      take_bytes(buf, n);
    }
    while (accepts < connects) {
      auto s = co_await quell::timeout(5s, listener.accept());
      ++accepts;
    }
    while (received < sent) {
      char buf[16];
      co_await quell::timeout(5s, udp_b.recv_from(buf));
      ++received;
    }
    quell::detail::reactor::current().inject_faults(nullptr);
  }
};

}  // namespace

class IoOracle : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(Reads, IoOracle, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "OneShot" : "ReceiveAhead"; });

TEST_P(IoOracle, TenThousandOperationsCancelledAtRandomMomentsEachEndOnceAndLoseNothing) {
  oracle o;
  o.one_shot = GetParam();
  quell::block_on(o.run(10000));
  EXPECT_EQ(o.failure, "");
  EXPECT_EQ(o.completed + o.cancelled, 10000);
  EXPECT_EQ(o.bytes_read, o.bytes_written);
  EXPECT_EQ(o.accepts, o.connects);
  EXPECT_EQ(o.received, o.sent);
  // Both outcomes must actually occur, or the oracle tested nothing.
  EXPECT_GT(o.completed, 500);
  EXPECT_GT(o.cancelled, 500);
  std::printf("[ oracle   ] %d completed, %d cancelled; %llu bytes, %d connections, %d datagrams\n", o.completed,
              o.cancelled, static_cast<unsigned long long>(o.bytes_written), o.connects, o.sent);
}

// The same oracle with the reactor's fault injection on: transient failures (retried), short
// reads and writes, and a "full" submission queue, at random. Nothing may be lost or duplicated.
// Reads and accepts of their own, so that the faults reach them too.
TEST(IoOracleFaults, UnderInjectedFaultsNothingIsLostOrDeliveredTwice) {
  struct random_faults : quell::detail::fault_injector {
    std::mt19937 rng{7};
    int injected = 0;
    decision on_submit(const quell::detail::io_op&) noexcept override {
      decision d;
      const unsigned r = rng() % 100;
      if (r < 10) {
        d.fake_result = r < 5 ? -EINTR : -EAGAIN;
      } else if (r < 40) {
        d.max_len = 1 + rng() % 8;
      } else if (r < 45) {
        d.sq_full = true;
      } else {
        return d;
      }
      ++injected;
      return d;
    }
  } faults;
  oracle o;
  o.faults = &faults;
  o.one_shot = true;
  quell::block_on(o.run(3000));
  EXPECT_EQ(o.failure, "");
  EXPECT_EQ(o.completed + o.cancelled, 3000);
  EXPECT_EQ(o.bytes_read, o.bytes_written);
  EXPECT_EQ(o.accepts, o.connects);
  EXPECT_EQ(o.received, o.sent);
  EXPECT_GT(faults.injected, 300);
  std::printf("[ oracle   ] with %d injected faults: %d completed, %d cancelled; %llu bytes\n", faults.injected,
              o.completed, o.cancelled, static_cast<unsigned long long>(o.bytes_written));
}
