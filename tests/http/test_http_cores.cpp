// quell::http::server with server_options::every_core on a two-core runtime: connections spread
// over both cores' listeners (SO_REUSEPORT), a shutdown from another thread that lets requests on
// every core finish, a grace period that ends by cancelling them on every core and awaiting their
// cleanup, a client disconnect that cancels its handler on the core serving it, and a core that
// cannot bind. Each core's figures are read on that core. ThreadSanitizer runs this file.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#include "quell/http.hpp"
#include "quell/quell.hpp"

using namespace std::chrono_literals;
namespace http = quell::http;
using quell::task;

namespace {

const quell::address loopback = quell::address::parse("127.0.0.1", 0);

http::server_options every_core() {
  http::server_options o;
  o.every_core = true;
  return o;
}

// Runs `srv` on every core of `rt` and `client_side()` on core 0 beside it, then shuts the server
// down (grace 0; a shutdown the client side started keeps its own grace) and waits for run().
template <class Fn>
void serve_on_every_core(quell::runtime& rt, http::server& srv, Fn client_side) {
  auto root = [&]() -> task<void> {
    auto both = [&](quell::scope& s) -> task<void> {
      s.spawn(srv.run());
      co_await client_side();
      srv.shutdown(0s);
    };
    co_await quell::with_scope(both);
  };
  rt.run(root());
}

// Sends one request on a new connection and returns it; the response is not read.
task<quell::tcp_stream> send_request(quell::address to) {
  quell::tcp_stream c = co_await quell::tcp_stream::connect(to);
  co_await c.write_all("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  co_return c;
}

// Waits (on the calling core) until `counter` reaches `n`, which another core drives.
task<void> until(const std::atomic<int>& counter, int n) {
  while (counter.load() < n) co_await quell::yield();
}

}  // namespace

TEST(HttpCores, ConnectionsAreSpreadOverEveryCoreAndTheTotalsAreExact) {
  quell::runtime rt{2};
  std::atomic<int> handled_on[2] = {0, 0};
  auto handler = [&](http::request&) -> task<http::response> {
    ++handled_on[quell::this_core()];
    co_return http::response::text(200, std::to_string(quell::this_core()));
  };
  http::server srv{loopback, handler, every_core()};
  int requests = 0;
  int answered_by[2] = {0, 0};
  http::server_stats during;
  serve_on_every_core(rt, srv, [&]() -> task<void> {
    // The kernel hashes each connection's addresses and ports; core 1's listener exists once its
    // part of run() has started. Until both cores answered (a bound for a broken spread).
    while ((answered_by[0] == 0 || answered_by[1] == 0) && requests < 5000) {
      auto c = co_await http::client::connect(srv.local_address());
      auto r = co_await c.get("/");
      EXPECT_EQ(r.status, 200);
      ++requests;
      ++answered_by[r.body == "1" ? 1 : 0];
      co_await c.close();
    }
    during = co_await srv.total_stats();  // each core's share read on that core
  });
  EXPECT_GT(answered_by[0], 0);
  EXPECT_GT(answered_by[1], 0);
  EXPECT_EQ(handled_on[0].load(), answered_by[0]);
  EXPECT_EQ(handled_on[1].load(), answered_by[1]);
  EXPECT_EQ(during.requests_handled, static_cast<std::uint64_t>(requests));
  const http::server_stats after = rt.run(srv.total_stats());
  EXPECT_EQ(after.requests_handled, static_cast<std::uint64_t>(requests));
  EXPECT_EQ(after.connections_accepted, static_cast<std::uint64_t>(requests));
  EXPECT_EQ(after.connections_open, 0u);
  EXPECT_EQ(after.requests_in_flight, 0u);
  // The server's own figures are the home core's share.
  EXPECT_EQ(srv.stats().requests_handled, static_cast<std::uint64_t>(answered_by[0]));
}

TEST(HttpCores, AShutdownFromAnotherThreadLetsTheRequestsInFlightOnEveryCoreFinish) {
  quell::runtime rt{2};
  quell::shared_event release;
  std::atomic<int> in_flight_on[2] = {0, 0};
  std::atomic<int> in_flight{0};
  auto handler = [&](http::request&) -> task<http::response> {
    ++in_flight_on[quell::this_core()];
    ++in_flight;
    co_await release.wait();
    co_return http::response::text(200, "done");
  };
  http::server srv{loopback, handler, every_core()};
  const quell::address addr = srv.local_address();
  int started = 0;
  std::atomic<int> answered{0};
  serve_on_every_core(rt, srv, [&]() -> task<void> {
    auto one = [&]() -> task<void> {
      auto c = co_await http::client::connect(addr);
      auto r = co_await c.get("/");
      EXPECT_EQ(r.status, 200);
      EXPECT_FALSE(r.keep_alive);  // answered while draining
      ++answered;
    };
    auto clients = [&](quell::scope& s) -> task<void> {
      while ((in_flight_on[0] == 0 || in_flight_on[1] == 0) && started < 5000) {
        s.spawn(one);
        ++started;
        co_await until(in_flight, started);
      }
      std::thread stopper([&] { srv.shutdown(1h); });
      stopper.join();
      EXPECT_TRUE(srv.shutting_down());
      // Every core has stopped accepting once nothing listens on the port any more.
      for (;;) {
        try {
          auto probe = co_await quell::tcp_stream::connect(addr);
          co_await probe.close();
          co_await quell::sleep_for(1ms);
        } catch (const std::system_error&) {
          break;  // refused
        }
      }
      release.set();
    };
    co_await quell::with_scope(clients);
  });
  EXPECT_GT(in_flight_on[0].load(), 0);
  EXPECT_GT(in_flight_on[1].load(), 0);
  EXPECT_EQ(answered.load(), started);
  const http::server_stats after = rt.run(srv.total_stats());
  EXPECT_EQ(after.requests_handled, static_cast<std::uint64_t>(started));
  EXPECT_EQ(after.requests_in_flight, 0u);
  EXPECT_EQ(after.connections_open, 0u);
}

TEST(HttpCores, TheEndOfTheGracePeriodCancelsTheRequestsOnEveryCoreAndAwaitsTheirCleanup) {
  quell::runtime rt{2};
  std::atomic<int> in_flight_on[2] = {0, 0};
  std::atomic<int> cleaned_on[2] = {0, 0};
  std::atomic<int> in_flight{0};
  auto handler = [&](http::request&) -> task<http::response> {
    const unsigned core = quell::this_core();
    ++in_flight_on[core];
    ++in_flight;
    // An asynchronous cleanup: run() must wait for it on each core.
    auto cleanup = [&, core]() -> task<void> {
      co_await quell::sleep_for(5ms);
      ++cleaned_on[core];
    };
    co_await quell::on_cancel(quell::sleep_for(1h), cleanup);
    co_return http::response::text(200, "never");
  };
  http::server srv{loopback, handler, every_core()};
  const quell::address addr = srv.local_address();
  int started = 0;
  std::atomic<int> unanswered{0};
  serve_on_every_core(rt, srv, [&]() -> task<void> {
    auto one = [&]() -> task<void> {
      auto c = co_await http::client::connect(addr);
      try {
        (void)co_await c.get("/");
      } catch (const std::exception&) {
        ++unanswered;  // the connection closed without a response
      }
    };
    auto clients = [&](quell::scope& s) -> task<void> {
      while ((in_flight_on[0] == 0 || in_flight_on[1] == 0) && started < 5000) {
        s.spawn(one);
        ++started;
        co_await until(in_flight, started);
      }
      srv.shutdown(20ms);
    };
    co_await quell::with_scope(clients);
  });
  EXPECT_EQ(unanswered.load(), started);
  EXPECT_GT(cleaned_on[0].load(), 0);
  EXPECT_GT(cleaned_on[1].load(), 0);
  EXPECT_EQ(cleaned_on[0].load(), in_flight_on[0].load());
  EXPECT_EQ(cleaned_on[1].load(), in_flight_on[1].load());
  const http::server_stats after = rt.run(srv.total_stats());
  EXPECT_EQ(after.requests_handled, static_cast<std::uint64_t>(started));
  EXPECT_EQ(after.requests_in_flight, 0u);
  EXPECT_EQ(after.connections_open, 0u);
}

TEST(HttpCores, AClientThatDisconnectsCancelsItsHandlerOnTheCoreServingIt) {
  quell::runtime rt{2};
  std::atomic<int> in_flight_on[2] = {0, 0};
  std::atomic<int> disconnected_on[2] = {0, 0};
  std::atomic<int> in_flight{0};
  std::atomic<int> cancelled{0};
  auto handler = [&](http::request&) -> task<http::response> {
    const unsigned core = quell::this_core();
    ++in_flight_on[core];
    ++in_flight;
    auto hook = [&, core] {
      auto why = quell::this_task::cancel_reason();
      if (why && why->kind() == quell::cancel_kind::peer_disconnected) ++disconnected_on[core];
      ++cancelled;
    };
    co_await quell::on_cancel(quell::sleep_for(1h), hook);
    co_return http::response::text(200, "never");
  };
  http::server srv{loopback, handler, every_core()};
  const quell::address addr = srv.local_address();
  int started = 0;
  http::server_stats during;
  serve_on_every_core(rt, srv, [&]() -> task<void> {
    while ((in_flight_on[0] == 0 || in_flight_on[1] == 0) && started < 5000) {
      quell::tcp_stream c = co_await send_request(addr);
      ++started;
      co_await until(in_flight, started);
      co_await c.close();  // gone while its handler runs
      co_await until(cancelled, started);
    }
    during = co_await srv.total_stats();
  });
  EXPECT_GT(disconnected_on[0].load(), 0);
  EXPECT_GT(disconnected_on[1].load(), 0);
  EXPECT_EQ(disconnected_on[0].load(), in_flight_on[0].load());
  EXPECT_EQ(disconnected_on[1].load(), in_flight_on[1].load());
  EXPECT_EQ(during.cancelled_by_disconnect, static_cast<std::uint64_t>(started));
}

TEST(HttpCores, ACoreThatCannotBindFailsRunWithTheReasonAfterTheOthersStopped) {
  quell::runtime rt{2};
  auto handler = [](http::request&) -> task<http::response> { co_return http::response::text(200, "ok"); };
  // A listener without reuse_port: core 1 cannot bind the same port beside it.
  http::server srv{quell::tcp_listener::bind(loopback), handler, every_core()};
  try {
    rt.run(srv.run());
    FAIL() << "run() returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EADDRINUSE);
    const std::string what = e.what();
    EXPECT_NE(what.find("on core 1"), std::string::npos) << what;
    EXPECT_NE(what.find("reuse_port"), std::string::npos) << what;
  }
  // The home core's server stopped too: run() may not be running any more.
  EXPECT_EQ(rt.run(srv.total_stats()).connections_open, 0u);
}

TEST(HttpCores, CancellingRunCancelsTheHandlersOnEveryCore) {
  quell::runtime rt{2};
  std::atomic<int> in_flight_on[2] = {0, 0};
  std::atomic<int> cancelled_on[2] = {0, 0};
  std::atomic<int> in_flight{0};
  auto handler = [&](http::request&) -> task<http::response> {
    const unsigned core = quell::this_core();
    ++in_flight_on[core];
    ++in_flight;
    auto hook = [&, core] { ++cancelled_on[core]; };
    co_await quell::on_cancel(quell::sleep_for(1h), hook);
    co_return http::response::text(200, "never");
  };
  http::server srv{loopback, handler, every_core()};
  const quell::address addr = srv.local_address();
  std::vector<quell::tcp_stream> conns;
  auto root = [&]() -> task<void> {
    auto body = [&](quell::scope& s) -> task<void> {
      auto server = s.spawn(srv.run());
      int started = 0;
      while ((in_flight_on[0] == 0 || in_flight_on[1] == 0) && started < 5000) {
        conns.push_back(co_await send_request(addr));
        ++started;
        co_await until(in_flight, started);
      }
      server.cancel();
    };
    co_await quell::with_scope(body);
    for (auto& c : conns) co_await c.close();
  };
  rt.run(root());
  EXPECT_GT(cancelled_on[0].load(), 0);
  EXPECT_GT(cancelled_on[1].load(), 0);
  EXPECT_EQ(cancelled_on[0].load(), in_flight_on[0].load());
  EXPECT_EQ(cancelled_on[1].load(), in_flight_on[1].load());
  EXPECT_EQ(rt.run(srv.total_stats()).connections_open, 0u);
}
