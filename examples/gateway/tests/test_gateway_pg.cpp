// The gateway with its PostgreSQL backend, end to end: a throw-away cluster
// (tests/support/pg_cluster.hpp), quell::http in front, quell's client and curl as clients. Real
// time throughout: the server's statements run in real time.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gateway.hpp"
#include "pg_backend.hpp"
#include "quell/http.hpp"
#include "quell/pg.hpp"
#include "quell/quell.hpp"
#include "support/pg_cluster.hpp"

using namespace std::chrono_literals;
namespace http = quell::http;
namespace pg = quell::pg;
using gateway::connection_on;
using quell::task;
using quell::test::pg_cluster::cluster;

namespace {

#define REQUIRE_SERVER()                                                     \
  do {                                                                       \
    if (!cluster::skip_reason.empty()) GTEST_SKIP() << cluster::skip_reason; \
    ASSERT_TRUE(cluster::up) << "the test cluster did not start";            \
  } while (0)

http::server_options on_every_core() {
  http::server_options so;
  so.every_core = true;
  return so;
}

// Runs `srv` beside `client_side` on one executor (cores = 1) or a runtime of `cores` threaded
// cores, then shuts it down; returns every core's server figures.
template <class Fn>
http::server_stats serve(http::server& srv, unsigned cores, Fn client_side) {
  http::server_stats served;
  auto body = [&]() -> task<void> {
    auto all = [&](quell::scope& s) -> task<void> {
      auto server = s.spawn(srv.run());
      co_await client_side(srv.local_address());
      srv.shutdown(0s);
      co_await server;
    };
    co_await quell::with_scope(all);
    served = co_await srv.total_stats();
  };
  if (cores == 1) {
    quell::block_on(body());
  } else {
    quell::runtime rt{cores};
    rt.run(body());
  }
  return served;
}

// One shared pool (on core 0, reached from core 1 through quell::on when cores = 2).
struct pg_stack {
  explicit pg_stack(std::size_t permits)
      : backend(cluster::conninfo, permits, 2s),
        app(backend, permits),
        srv(quell::address::parse("127.0.0.1", 0), app.handler(), on_every_core()) {}

  template <class Fn>
  void run(Fn client_side) {
    served = serve(srv, cores, client_side);
  }

  task<void> settle() { co_await app.idle(); }

  gateway::pg_backend backend;
  gateway::app app;
  http::server srv;
  unsigned cores = 1;
  http::server_stats served;
};

class GatewayPg : public ::testing::TestWithParam<unsigned> {};
INSTANTIATE_TEST_SUITE_P(Cores, GatewayPg, ::testing::Values(1u, 2u), [](const ::testing::TestParamInfo<unsigned>& i) {
  return i.param == 1 ? std::string("one_core") : std::to_string(i.param) + "_cores";
});

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

// Asks for a 30 s report on `c` and gives up once its statement runs on the server (not after a
// fixed time: on a loaded machine, opening the pool's first connection can take longer than any
// guess): request() ends cancelled and closes the connection, which is the disconnect.
task<void> give_up_once_running(http::client& c, pg::connection& observer) {
  auto body = [&](quell::scope& s) -> task<void> {
    auto request = [&]() -> task<void> { co_await c.get("/report?seconds=30"); };
    auto pending = s.spawn(request);
    int running = 0;
    for (int i = 0; i < 1000 && (running = co_await sleeping_queries(observer)) != 1; ++i)
      co_await quell::sleep_for(10ms);
    EXPECT_EQ(running, 1) << "the statement should be running on the server";
    pending.cancel();
  };
  co_await quell::with_scope(body);
}

}  // namespace

TEST_P(GatewayPg, AClientDisconnectMidQueryStopsTheStatementReturnsThePermitAndReusesTheConnection) {
  REQUIRE_SERVER();
  pg_stack g(2);
  g.cores = GetParam();
  g.run([&](quell::address a) -> task<void> {
    auto observer = co_await pg::connection::connect(cluster::conninfo);
    auto c = co_await http::client::connect(a);
    co_await give_up_once_running(c, observer);
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
  EXPECT_EQ(g.served.cancelled_by_disconnect, 1u);
}

TEST_P(GatewayPg, AQueryThatFinishesFirstIsDeliveredAndNothingIsCancelled) {
  REQUIRE_SERVER();
  pg_stack g(2);
  g.cores = GetParam();
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

TEST(GatewayPgCurl, CurlGivingUpMidQueryStopsTheStatement) {
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

TEST_P(GatewayPg, AfterAPostgresRestartWithAnIdlePoolTheNextRequestsSucceed) {
  REQUIRE_SERVER();
  pg_stack g(8);
  g.cores = GetParam();
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

// A pool per core: a client that disconnects on either core stops its statement through that
// core's own pool, and that core's next request reuses the connection. Two threaded cores.
TEST(GatewayPgCores, WithAPoolPerCoreADisconnectOnEachCoreStopsItsStatementAndItsConnectionIsReused) {
  REQUIRE_SERVER();
  // Pools connect lazily and hold nothing in flight once run() has returned: created and
  // destroyed here, each used only by its core while the runtime runs.
  gateway::pg_backend on0(cluster::conninfo, 1, 2s), on1(cluster::conninfo, 1, 2s);
  gateway::app_options ao;
  ao.permits = 2;
  ao.max_seconds = 3600;
  gateway::app app(std::vector<gateway::backend*>{&on0, &on1}, ao);
  http::server srv(quell::address::parse("127.0.0.1", 0), app.handler(), on_every_core());
  const http::server_stats served = serve(srv, 2, [&](quell::address a) -> task<void> {
    auto observer = co_await pg::connection::connect(cluster::conninfo);
    for (unsigned core = 0; core < 2; ++core) {
      auto c = co_await connection_on(a, core);
      co_await give_up_once_running(c, observer);
      EXPECT_LT(co_await until_no_sleeping_query(observer), 1000ms);
      co_await app.idle();
      auto again = co_await connection_on(a, core);
      auto r = co_await again.get("/report?seconds=0.01");
      EXPECT_EQ(r.status, 200) << r.body;
      EXPECT_EQ(r.header("x-core"), std::to_string(core));
      co_await again.close();
    }
    EXPECT_EQ(app.permits_available(), 2u);
    observer.close();
  });
  for (gateway::pg_backend* b : {&on0, &on1}) {
    EXPECT_EQ(b->stats().cancels_sent, 1u);
    EXPECT_EQ(b->stats().cancels_acknowledged, 1u);
    EXPECT_EQ(b->pool().opened(), 1u) << "the cancelled query's connection should be reused on its core";
  }
  EXPECT_EQ(served.cancelled_by_disconnect, 2u);
}
