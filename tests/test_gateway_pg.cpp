// The gateway with its PostgreSQL backend, end to end: a throw-away cluster
// (tests/support/pg_cluster.hpp), quell::http in front, quell's client and curl as clients. Real
// time throughout: the server's statements run in real time.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "gateway.hpp"
#include "pg_backend.hpp"
#include "quell/http.hpp"
#include "quell/pg.hpp"
#include "quell/quell.hpp"
#include "support/pg_cluster.hpp"

using namespace std::chrono_literals;
namespace http = quell::http;
namespace pg = quell::pg;
using quell::task;
using quell::test::pg_cluster::cluster;

namespace {

#define REQUIRE_SERVER()                                                     \
  do {                                                                       \
    if (!cluster::skip_reason.empty()) GTEST_SKIP() << cluster::skip_reason; \
    ASSERT_TRUE(cluster::up) << "the test cluster did not start";            \
  } while (0)

struct pg_stack {
  explicit pg_stack(std::size_t permits)
      : backend(cluster::conninfo, permits, 2s),
        app(backend, permits),
        srv(quell::address::parse("127.0.0.1", 0), app.handler()) {}

  template <class Fn>
  void run(Fn client_side) {
    auto body = [&]() -> task<void> {
      auto all = [&](quell::scope& s) -> task<void> {
        auto server = s.spawn(srv.run());
        co_await client_side(srv.local_address());
        srv.shutdown(0s);
        co_await server;
      };
      co_await quell::with_scope(all);
    };
    quell::block_on(body());
  }

  task<void> settle() { co_await app.idle().wait(); }

  gateway::pg_backend backend;
  gateway::app app;
  http::server srv;
};

// How many of the gateway's pg_sleep statements the server is running, as another session sees it.
task<int> sleeping_queries(pg::connection& observer) {
  auto r = co_await observer.query(
      "select count(*) from pg_stat_activity where state = 'active' and query like 'select pg_sleep%' and pid <> "
      "pg_backend_pid()");
  co_return std::stoi(std::string(r.at(0, 0)));
}

// Polls until no such statement runs; returns how long that took.
task<std::chrono::milliseconds> until_no_sleeping_query(pg::connection& observer) {
  const auto t0 = std::chrono::steady_clock::now();
  while (co_await sleeping_queries(observer) != 0) co_await quell::sleep_for(10ms);
  co_return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
}

}  // namespace

TEST(GatewayPg, AClientDisconnectMidQueryStopsTheStatementReturnsThePermitAndReusesTheConnection) {
  REQUIRE_SERVER();
  pg_stack g(2);
  g.run([&](quell::address a) -> task<void> {
    auto observer = co_await pg::connection::connect(cluster::conninfo);
    auto c = co_await http::client::connect(a);
    // The client gives up once the statement runs on the server (not after a fixed time: on a
    // loaded machine, opening the pool's first connection can take longer than any guess).
    auto give_up_when_running = [&](quell::scope& s) -> task<void> {
      auto request = [&]() -> task<void> { co_await c.get("/report?seconds=30"); };
      auto pending = s.spawn(request);
      int running = 0;
      for (int i = 0; i < 1000 && (running = co_await sleeping_queries(observer)) != 1; ++i)
        co_await quell::sleep_for(10ms);
      EXPECT_EQ(running, 1) << "the statement should be running on the server";
      pending.cancel();  // request() ends cancelled and closes the connection: the disconnect
    };
    co_await quell::with_scope(give_up_when_running);
    EXPECT_FALSE(c.usable());
    const auto gone_within = co_await until_no_sleeping_query(observer);
    EXPECT_LT(gone_within, 1000ms);
    co_await g.settle();
    EXPECT_EQ(g.app.permits_available(), 2u);
    auto c2 = co_await http::client::connect(a);
    auto r2 = co_await c2.get("/report?seconds=0.01");
    EXPECT_EQ(r2.status, 200) << r2.body;
    co_await c2.close();
    observer.close();
  });
  EXPECT_EQ(g.backend.stats().cancels_sent, 1u);
  EXPECT_EQ(g.backend.stats().cancels_acknowledged, 1u);
  EXPECT_EQ(g.backend.stats().cancels_timed_out, 0u);
  EXPECT_EQ(g.backend.pool().opened(), 1u) << "the cancelled query's connection should be reused";
  EXPECT_EQ(g.srv.stats().cancelled_by_disconnect, 1u);
}

TEST(GatewayPg, AQueryThatFinishesFirstIsDeliveredAndNothingIsCancelled) {
  REQUIRE_SERVER();
  pg_stack g(2);
  g.run([&](quell::address a) -> task<void> {
    auto c = co_await http::client::connect(a);
    auto r = co_await c.get("/report?seconds=0.05");
    EXPECT_EQ(r.status, 200);
    EXPECT_NE(r.body.find("slept 50 ms in PostgreSQL"), std::string::npos) << r.body;
    co_await c.close();
  });
  EXPECT_EQ(g.backend.stats().cancels_sent, 0u);
  EXPECT_EQ(g.app.stats().reports_cancelled, 0u);
  EXPECT_EQ(g.app.stats().reports_done, 1u);
}

TEST(GatewayPg, CurlGivingUpMidQueryStopsTheStatement) {
  REQUIRE_SERVER();
  if (std::system("command -v curl >/dev/null 2>&1") != 0) GTEST_SKIP() << "curl is not installed";
  pg_stack g(1);
  g.run([&](quell::address a) -> task<void> {
    auto observer = co_await pg::connection::connect(cluster::conninfo);
    {
      // Open the pool's connection first, so the statement starts well within curl's patience.
      auto warm = co_await http::client::connect(a);
      EXPECT_EQ((co_await warm.get("/report?seconds=0")).status, 200);
      co_await warm.close();
    }
    std::atomic<bool> done{false};
    int status = -1;
    const std::string cmd = "curl -sS --max-time 1.5 'http://" + a.to_string() + "/report?seconds=30' >/dev/null 2>&1";
    std::thread curl([&] {
      status = std::system(cmd.c_str());
      done = true;
    });
    bool seen_running = false;
    while (!done) {
      if (!seen_running && co_await sleeping_queries(observer) == 1) seen_running = true;
      co_await quell::sleep_for(10ms);
    }
    curl.join();
    EXPECT_NE(status, 0);
    EXPECT_TRUE(seen_running) << "the statement never ran while curl waited";
    const auto gone_within = co_await until_no_sleeping_query(observer);
    EXPECT_LT(gone_within, 1000ms);
    co_await g.settle();
    EXPECT_EQ(g.app.permits_available(), 1u);
    observer.close();
  });
  EXPECT_EQ(g.backend.stats().cancels_acknowledged, 1u);
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new cluster);  // owned by gtest
  return RUN_ALL_TESTS();
}

TEST(GatewayPg, AfterAPostgresRestartWithAnIdlePoolTheNextRequestsSucceed) {
  REQUIRE_SERVER();
  pg_stack g(8);
  g.run([&](quell::address a) -> task<void> {
    auto eight = [&]() -> task<int> {
      int ok = 0;
      auto all = [&](quell::scope& s) -> task<void> {
        for (int i = 0; i < 8; ++i)
          s.spawn([&]() -> task<void> {
            auto c = co_await http::client::connect(a);
            auto r = co_await c.get("/report?seconds=0.2");  // all eight at once: eight connections
            if (r.status == 200) ++ok;
            co_await c.close();
          });
        co_return;
      };
      co_await quell::with_scope(all);
      co_return ok;
    };
    EXPECT_EQ(co_await eight(), 8);
    EXPECT_EQ(g.backend.pool().idle(), 8u);
    EXPECT_TRUE(cluster::restart());  // blocks this thread for the restart: nothing else runs
    EXPECT_EQ(co_await eight(), 8);   // none fails on a connection the restart closed
  });
  EXPECT_EQ(g.backend.pool().closed(), 8u);
  EXPECT_EQ(g.app.stats().reports_failed, 0u);
}
