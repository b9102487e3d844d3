// quell::pg against a real PostgreSQL server: a throw-away cluster (tests/support/pg_cluster.hpp)
// created once for this test process and stopped at the end.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "quell/pg.hpp"
#include "quell/quell.hpp"
#include "support/pg_cluster.hpp"

using namespace std::chrono_literals;
namespace pg = quell::pg;
using quell::task;

namespace {

using quell::test::pg_cluster::cluster;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Whether backend `pid` is running a statement, as another connection sees it.
task<bool> is_active(pg::connection& observer, int pid) {
  auto r = co_await observer.query("select count(*) from pg_stat_activity where pid = $1 and state = 'active'", pid);
  co_return r.at(0, 0) == "1";
}

}  // namespace

TEST(Pg, ConnectsAndRunsQueriesWithParameters) {
  REQUIRE_SERVER();
  auto body = [&]() -> task<> {
    auto c = co_await pg::connection::connect(cluster::conninfo);
    EXPECT_TRUE(c.idle());
    EXPECT_GT(c.backend_pid(), 0);

    auto r = co_await c.query("select 1 + 1 as two, 'x'::text as s, null::int as n");
    EXPECT_EQ(r.rows(), 1u);
    EXPECT_EQ(r.columns(), 3u);
    EXPECT_EQ(r.column_name(0), "two");
    EXPECT_EQ(r.at(0, 0), "2");
    EXPECT_EQ(r.at(0, 1), "x");
    EXPECT_TRUE(r.is_null(0, 2));
    EXPECT_EQ(r.get(0, 2), std::nullopt);
    EXPECT_EQ(r.command_status(), "SELECT 1");

    const std::string text = "it's \"quoted\"; -- not SQL";
    auto p = co_await c.query("select $1::int + $2::int, $3::text, $4::text is null, $5::float8 * 2", 40, 2L, text,
                              std::nullopt, 1.25);
    EXPECT_EQ(p.at(0, 0), "42");
    EXPECT_EQ(p.at(0, 1), text);  // parameters travel out of band: no quoting, no injection
    EXPECT_EQ(p.at(0, 2), "t");
    EXPECT_EQ(p.at(0, 3), "2.5");

    co_await c.query("create temp table t (id int primary key, name text)");
    auto ins = co_await c.query("insert into t values (1, 'a'), (2, 'b'), (3, null)");
    EXPECT_EQ(ins.rows_affected(), 3u);
    EXPECT_EQ(ins.command_status(), "INSERT 0 3");
    auto sel = co_await c.query("select id, name from t where id >= $1 order by id", 2);
    EXPECT_EQ(sel.rows(), 2u);
    EXPECT_EQ(sel.at(1, 0), "3");
    EXPECT_TRUE(sel.is_null(1, 1));
  };
  quell::block_on(body());
}

TEST(Pg, AServerErrorCarriesItsSqlstateAndTheConnectionStaysUsable) {
  REQUIRE_SERVER();
  auto expect_sqlstate = [](pg::connection& c, std::string sql, std::string state) -> task<> {
    try {
      co_await c.query(std::move(sql));
      ADD_FAILURE() << "no error";
    } catch (const pg::error& e) {
      EXPECT_EQ(e.sqlstate(), state) << e.what();
      EXPECT_NE(std::string(e.what()).find("ERROR"), std::string::npos) << e.what();
    }
  };
  auto body = [&]() -> task<> {
    auto c = co_await pg::connection::connect(cluster::conninfo);
    co_await expect_sqlstate(c, "selec 1", "42601");                      // syntax_error
    co_await expect_sqlstate(c, "select 1/0", "22012");                   // division_by_zero
    co_await expect_sqlstate(c, "select * from no_such_table", "42P01");  // undefined_table
    EXPECT_FALSE(c.broken());
    EXPECT_TRUE(c.idle());
    auto r = co_await c.query("select 7");
    EXPECT_EQ(r.at(0, 0), "7");
  };
  quell::block_on(body());
}

TEST(Pg, AHostNameIsResolvedByQuellAndPassedToLibpqAsHostaddr) {
  REQUIRE_SERVER();
  std::string info = cluster::conninfo;
  info.replace(info.find("host=127.0.0.1"), 14, "host=localhost");
  auto body = [&]() -> task<> {
    const auto opened = quell::detail::resolve_stats_for_testing().channels_opened;
    // localhost (from /etc/hosts) may also be ::1, where nothing listens: libpq tries each
    // address it was given, in order.
    auto c = co_await pg::connection::connect(info);
    EXPECT_EQ(quell::detail::resolve_stats_for_testing().channels_opened, opened + 1);
    auto r = co_await c.query("select 1");
    EXPECT_EQ(r.at(0, 0), "1");
  };
  quell::block_on(body());
}

TEST(Pg, ARefusedPortOrAMalformedConninfoIsAClearError) {
  REQUIRE_SERVER();
  auto body = [&]() -> task<> {
    const int port = quell::test::pg_cluster::free_port();
    try {
      co_await pg::connection::connect("host=127.0.0.1 port=" + std::to_string(port) + " user=postgres");
      ADD_FAILURE() << "connected to a closed port";
    } catch (const pg::error& e) {
      EXPECT_NE(std::string(e.what()).find("Connection refused"), std::string::npos) << e.what();
      EXPECT_EQ(e.sqlstate(), "");
    }
    try {
      co_await pg::connection::connect("host=127.0.0.1 no_such_option=1");
      ADD_FAILURE() << "accepted a malformed conninfo";
    } catch (const pg::error& e) {
      EXPECT_NE(std::string(e.what()).find("invalid connection option"), std::string::npos) << e.what();
    }
    try {
      co_await pg::connection::connect(cluster::conninfo + " dbname=no_such_database");
      ADD_FAILURE() << "connected to a missing database";
    } catch (const pg::error& e) {
      EXPECT_NE(std::string(e.what()).find("no_such_database"), std::string::npos) << e.what();
    }
  };
  quell::block_on(body());
}

TEST(Pg, ACancelledConnectClosesTheHalfOpenConnection) {
  REQUIRE_SERVER();
  // A listener that never answers: the TCP handshake completes (backlog), libpq sends its startup
  // packet and waits for a reply that never comes.
  const int l = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(l, 4), 0);
  socklen_t len = sizeof a;
  ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len);
  const std::string info =
      "host=127.0.0.1 port=" + std::to_string(ntohs(a.sin_port)) + " user=postgres sslmode=disable gssencmode=disable";

  auto body = [&]() -> task<bool> {
    auto c = co_await quell::move_on_after(200ms, pg::connection::connect(info));
    co_return c.has_value();
  };
  EXPECT_FALSE(quell::block_on(body()));

  // The client end is closed: the peer reads the startup packet, then end of file.
  const int s = ::accept(l, nullptr, nullptr);
  ASSERT_GE(s, 0);
  timeval tv{2, 0};
  ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[512];
  ssize_t n;
  std::size_t total = 0;
  while ((n = ::read(s, buf, sizeof buf)) > 0) total += static_cast<std::size_t>(n);
  EXPECT_EQ(n, 0) << "the half-open connection was not closed";
  EXPECT_GT(total, 0u);  // libpq did get as far as the startup packet
  ::close(s);
  ::close(l);
}

TEST(Pg, CancellingARunningQueryStopsItOnTheServerOnceAndTheConnectionIsReused) {
  REQUIRE_SERVER();
  auto body = [&]() -> task<> {
    auto c = co_await pg::connection::connect(cluster::conninfo);
    auto observer = co_await pg::connection::connect(cluster::conninfo);
    const int pid = c.backend_pid();

    bool seen_running = false;
    auto watch = [&]() -> task<> {
      co_await quell::sleep_for(300ms);
      seen_running = co_await is_active(observer, pid);
    };
    const auto t0 = std::chrono::steady_clock::now();
    auto [r, ignored] = co_await quell::join(quell::move_on_after(600ms, c.query("select pg_sleep(30)")), watch());
    (void)ignored;
    const double took = seconds_since(t0);
    EXPECT_TRUE(seen_running) << "the statement was not running on the server before the cancel";
    EXPECT_FALSE(r.has_value());
    // The deadline fired at 0.6 s; the cancel was confirmed by the server well within 1 s after.
    EXPECT_LT(took, 0.6 + 1.0);
    EXPECT_FALSE(co_await is_active(observer, pid));  // gone from pg_stat_activity
    EXPECT_EQ(c.cancels_sent(), 1u);
    EXPECT_EQ(c.cancels_confirmed(), 1u);
    EXPECT_EQ(c.cancels_timed_out(), 0u);
    EXPECT_FALSE(c.broken());
    EXPECT_TRUE(c.idle());

    auto next = co_await c.query("select $1::int * 2", 21);
    EXPECT_EQ(next.at(0, 0), "42");
    EXPECT_EQ(c.backend_pid(), pid);  // the same session, reused
    EXPECT_EQ(c.cancels_sent(), 1u);
  };
  quell::block_on(body());
}

TEST(Pg, AQueryWhoseResultArrivedBeforeTheCancelLandedDeliversIt) {
  REQUIRE_SERVER();
  auto body = [&]() -> task<> {
    auto c = co_await pg::connection::connect(cluster::conninfo);
    quell::cancel_source src;
    std::string got;
    auto query = [&]() -> task<> {
      auto r = co_await quell::with_cancellation(src.token(), c.query("select 42"));
      got = std::string(r.at(0, 0));
    };
    // Runs right after the query parked on its socket, before the executor looks at the socket
    // again: the server answers meanwhile, then the cancel reaches the query. The answer is
    // already complete in the socket, so the server ignores the cancel (its backend is idle)
    // and the result is delivered.
    auto cancel_late = [&]() -> task<> {
      // Blocks the executor's thread until the answer is in the socket (poll(2) consumes
      // nothing), plus a margin for the rest of it: the server sends it in one piece.
      pollfd p{PQsocket(c.native_handle()), POLLIN, 0};
      EXPECT_EQ(::poll(&p, 1, 5000), 1);
      std::this_thread::sleep_for(50ms);
      src.cancel();
      co_return;
    };
    co_await quell::join(query(), cancel_late());
    EXPECT_EQ(got, "42");
    EXPECT_EQ(c.cancels_sent(), 1u);  // sent while the answer sat unread in the socket
    EXPECT_FALSE(c.broken());
    EXPECT_TRUE(c.idle());
    // No stale cancel hits the next statement.
    auto r = co_await c.query("select pg_sleep(0.3), 43");
    EXPECT_EQ(r.at(0, 1), "43");
  };
  quell::block_on(body());
}

TEST(Pg, AQueryCancelledBeforeItStartsSendsNothing) {
  REQUIRE_SERVER();
  auto body = [&]() -> task<> {
    auto c = co_await pg::connection::connect(cluster::conninfo);
    quell::cancel_source src;
    src.cancel();
    auto query = [&]() -> task<> {
      co_await quell::with_cancellation(src.token(), c.query("select pg_sleep(30)"));
      ADD_FAILURE() << "the query ran";
    };
    auto r = co_await quell::move_on_after(5s, query());  // ends cancelled at once, not after 5 s
    (void)r;
    EXPECT_EQ(c.cancels_sent(), 0u);
    EXPECT_TRUE(c.idle());
    auto one = co_await c.query("select 1");
    EXPECT_EQ(one.at(0, 0), "1");
  };
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(quell::block_on(body()), quell::cancelled_error);
  EXPECT_LT(seconds_since(t0), 1.0);
}

TEST(Pg, ACancelTheServerDoesNotConfirmInTimeClosesTheConnectionAndThePoolReplacesIt) {
  REQUIRE_SERVER();
  auto body = [&]() -> task<> {
    pg::pool pool{cluster::conninfo, 1, {.cancel_timeout = 400ms}};
    auto bystander = co_await pg::connection::connect(cluster::conninfo);
    {
      auto l = co_await pool.acquire();
      const int pid = l->backend_pid();
      // The cancel goes to the server for real but names the idle bystander, which ignores it.
      l->redirect_cancels_for_testing(bystander);
      const auto t0 = std::chrono::steady_clock::now();
      auto r = co_await quell::move_on_after(200ms, l->query("select pg_sleep(30)"));
      const double took = seconds_since(t0);
      EXPECT_FALSE(r.has_value());
      EXPECT_GE(took, 0.2 + 0.4 - 0.05);  // it waited for the confirmation, for cancel_timeout
      EXPECT_LT(took, 0.2 + 0.4 + 1.0);
      EXPECT_EQ(l->cancels_sent(), 1u);
      EXPECT_EQ(l->cancels_timed_out(), 1u);
      EXPECT_TRUE(l->broken());
      EXPECT_FALSE(l->is_open());
      // Its statement is not ours to wait for any more; end it so the server is clean.
      co_await bystander.query("select pg_terminate_backend($1)", pid);
      l.release();
      EXPECT_EQ(pool.closed(), 1u);
      EXPECT_EQ(pool.available(), 1u);
      EXPECT_EQ(pool.idle(), 0u);

      auto fresh = co_await pool.acquire();
      EXPECT_NE(fresh->backend_pid(), pid);
      EXPECT_EQ(pool.opened(), 2u);
      auto one = co_await fresh->query("select 1");
      EXPECT_EQ(one.at(0, 0), "1");
    }
    auto b = co_await bystander.query("select 2");  // the misdirected cancel did not hurt it
    EXPECT_EQ(b.at(0, 0), "2");
  };
  quell::block_on(body());
}

TEST(Pg, AForcedCancelDoesNotWaitForTheServerAndClosesTheConnection) {
  REQUIRE_SERVER();
  auto open = [&]() -> task<pg::connection> { co_return co_await pg::connection::connect(cluster::conninfo); };
  pg::connection c = quell::block_on(open());
  pg::connection observer = quell::block_on(open());
  const int pid = c.backend_pid();

  auto sleeper = [&]() -> task<> { co_await c.query("select pg_sleep(30)"); };
  quell::executor ex{sleeper()};
  ex.poll_once();  // sent; parked on the socket
  EXPECT_TRUE(c.busy());
  std::this_thread::sleep_for(100ms);
  ex.poll_once();
  const auto t0 = std::chrono::steady_clock::now();
  ex.force_cancel();  // a second Ctrl-C: no waiting for the server's confirmation
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_LT(seconds_since(t0), 0.5);
  EXPECT_EQ(c.cancels_sent(), 1u);  // still told to stop, but not waited for
  EXPECT_EQ(c.cancels_confirmed(), 0u);
  EXPECT_TRUE(c.broken());
  EXPECT_FALSE(c.is_open());
  EXPECT_THROW(quell::block_on(c.query("select 1")), pg::error);

  // The backend goes away (the cancel, or the closed client noticed through
  // client_connection_check_interval).
  auto gone = [&]() -> task<bool> {
    for (int i = 0; i < 40; ++i) {
      auto r = co_await observer.query("select count(*) from pg_stat_activity where pid = $1", pid);
      if (r.at(0, 0) == "0") co_return true;
      co_await quell::sleep_for(100ms);
    }
    co_return false;
  };
  EXPECT_TRUE(quell::block_on(gone()));
}

TEST(PgPool, AReleasedConnectionIsReusedByTheNextAcquire) {
  REQUIRE_SERVER();
  auto body = [&]() -> task<> {
    pg::pool pool{cluster::conninfo, 2};
    int pid = 0;
    {
      auto l = co_await pool.acquire();
      EXPECT_EQ(pool.available(), 1u);
      pid = l->backend_pid();
      co_await l->query("select 1");
    }
    EXPECT_EQ(pool.available(), 2u);
    EXPECT_EQ(pool.idle(), 1u);
    auto first = co_await pool.acquire();
    pg::lease l = std::move(first);  // a moved lease has one owner: given back once
    EXPECT_FALSE(first);
    EXPECT_EQ(l->backend_pid(), pid);
    EXPECT_EQ(pool.opened(), 1u);
    // A lease returned inside a transaction is closed, never handed out dirty.
    co_await l->query("begin");
    l.release();
    EXPECT_EQ(pool.closed(), 1u);
    EXPECT_EQ(pool.idle(), 0u);
    auto l2 = co_await pool.acquire();
    EXPECT_NE(l2->backend_pid(), pid);
  };
  quell::block_on(body());
}

TEST(PgPool, AConnectionWhoseQueryWasCancelledGoesBackCleanAndIsReused) {
  REQUIRE_SERVER();
  auto body = [&]() -> task<> {
    pg::pool pool{cluster::conninfo, 1};
    int pid = 0;
    {
      auto l = co_await pool.acquire();
      pid = l->backend_pid();
      auto r = co_await quell::move_on_after(200ms, l->query("select pg_sleep(30)"));
      EXPECT_FALSE(r.has_value());
    }
    EXPECT_EQ(pool.idle(), 1u);
    EXPECT_EQ(pool.closed(), 0u);
    auto l = co_await pool.acquire();
    EXPECT_EQ(l->backend_pid(), pid);
    auto r = co_await l->query("select 'clean'");
    EXPECT_EQ(r.at(0, 0), "clean");
  };
  quell::block_on(body());
}

TEST(PgPool, WaitersAreServedFirstComeFirstServed) {
  REQUIRE_SERVER();
  auto body = [&]() -> task<> {
    pg::pool pool{cluster::conninfo, 1};
    auto held = co_await pool.acquire();
    std::vector<int> order;
    auto waiter = [&](int i) -> task<> {
      auto l = co_await pool.acquire();
      order.push_back(i);
      co_await l->query("select 1");
    };
    auto scope_body = [&](quell::scope& s) -> task<> {
      for (int i = 1; i <= 3; ++i) s.spawn([&waiter, i] { return waiter(i); });
      EXPECT_EQ(pool.waiting(), 3u);
      held.release();
      co_return;
    };
    co_await quell::with_scope(scope_body);
    EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
    EXPECT_EQ(pool.opened(), 1u);
  };
  quell::block_on(body());
}

TEST(PgPool, ACancelledWaiterTakesNothing) {
  REQUIRE_SERVER();
  auto body = [&]() -> task<> {
    pg::pool pool{cluster::conninfo, 1};
    auto held = co_await pool.acquire();
    const int pid = held->backend_pid();
    auto r = co_await quell::move_on_after(50ms, pool.acquire());
    EXPECT_FALSE(r.has_value());
    EXPECT_EQ(pool.waiting(), 0u);
    EXPECT_EQ(pool.available(), 0u);
    held.release();
    EXPECT_EQ(pool.available(), 1u);
    auto again = co_await pool.acquire();
    EXPECT_EQ(again->backend_pid(), pid);
    EXPECT_EQ(pool.opened(), 1u);
  };
  quell::block_on(body());
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new cluster);  // owned by gtest
  return RUN_ALL_TESTS();
}

TEST(Pg, AfterAServerRestartTheIdlePoolHandsOutOnlyLiveConnections) {
  REQUIRE_SERVER();
  auto body = [&]() -> task<> {
    pg::pool pool{cluster::conninfo, 4};
    {
      std::vector<pg::lease> held;
      for (int i = 0; i < 4; ++i) held.push_back(co_await pool.acquire());
      for (auto& l : held) co_await l->query("select 1");
    }
    EXPECT_EQ(pool.idle(), 4u);
    EXPECT_TRUE(cluster::restart());  // blocking, on purpose: nothing else runs in this test
    // Every idle connection was closed by the server; each request still succeeds.
    for (int i = 0; i < 4; ++i) {
      auto l = co_await pool.acquire();
      auto r = co_await l->query("select 1");
      EXPECT_EQ(r.at(0, 0), "1");
    }
    EXPECT_EQ(pool.closed(), 4u);
    EXPECT_EQ(pool.opened(), 5u);  // four before; one since, reused by the three after it
  };
  quell::block_on(body());
}

TEST(Pg, WhileTheServerIsDownAcquireBacksOffAndSucceedsOnceItIsBack) {
  REQUIRE_SERVER();
  ASSERT_TRUE(cluster::stop());
  // The server comes back after a second, started from another thread (pg_ctl blocks).
  std::thread starter([] {
    std::this_thread::sleep_for(1s);
    cluster::start();
  });
  auto body = [&]() -> task<double> {
    pg::pool pool{cluster::conninfo, 1, {}, {.reconnect_window = 30s, .max_backoff = 200ms}};
    const auto t0 = std::chrono::steady_clock::now();
    auto l = co_await pool.acquire();
    auto r = co_await l->query("select 1");
    EXPECT_EQ(r.at(0, 0), "1");
    co_return seconds_since(t0);
  };
  const double took = quell::block_on(body());
  starter.join();
  EXPECT_GE(took, 0.9);  // it waited for the server rather than failing
}

TEST(Pg, WhileTheServerIsDownAcquireFailsOnlyAfterTheReconnectWindowWithTheLastError) {
  REQUIRE_SERVER();
  ASSERT_TRUE(cluster::stop());
  auto body = [&]() -> task<> {
    pg::pool pool{cluster::conninfo, 1, {}, {.reconnect_window = 500ms, .max_backoff = 200ms}};
    const auto t0 = std::chrono::steady_clock::now();
    try {
      co_await pool.acquire();
      ADD_FAILURE() << "connected to a stopped server";
    } catch (const pg::error& e) {
      EXPECT_NE(std::string(e.what()).find("127.0.0.1"), std::string::npos) << e.what();
    }
    EXPECT_GE(seconds_since(t0), 0.3);  // not at once: a few attempts, spaced
    EXPECT_EQ(pool.available(), 1u);  // the slot came back
  };
  quell::block_on(body());
  ASSERT_TRUE(cluster::start());
}
