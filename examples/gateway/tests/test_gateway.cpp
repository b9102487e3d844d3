// The gateway (examples/gateway) end to end on loopback: quell::http in front, the embedded job
// service behind, real sockets everywhere; quell's HTTP client and curl as clients. Timing goes
// through the virtual clock except with curl and in the soak, whose peers run in real time.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gateway.hpp"
#include "job_backend.hpp"
#include "job_service.hpp"
#include "quell/http.hpp"
#include "quell/quell.hpp"
#include "support/net_client.hpp"

using namespace std::chrono_literals;
namespace http = quell::http;
using gateway::connection_on;
using quell::task;
using quell::test::curl_run;
using quell::test::exchange;
using quell::test::have_curl;
using quell::test::open_fds;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// The HTTP server of every stack serves on every core of the runtime it runs in.
http::server_options on_every_core(http::server_options so) {
  so.every_core = true;
  return so;
}

// The whole gateway in one object: job service, its client, the app, the HTTP server. With
// `cores` = 2, run() runs it on a runtime of two cores (lockstep on a virtual clock, threads on a
// real one): the service and the shared backend on core 0, the HTTP server on both.
struct stack {
  explicit stack(std::size_t permits, quell::duration cancel_timeout = 1s, std::size_t pool = 8,
                 const std::function<void(gateway::app_options&)>& tweak = {}, http::server_options so = {})
      : svc(gateway::job_service::bind()),
        backend(options(svc.local_address(), pool, cancel_timeout)),
        app(backend, app_options(permits, tweak)),
        srv(quell::address::parse("127.0.0.1", 0), app.handler(), on_every_core(so)) {}

  gateway::app_options app_options(std::size_t permits, const std::function<void(gateway::app_options&)>& tweak) {
    gateway::app_options o;
    o.permits = permits;
    o.max_seconds = 3600;
    // Called on the core of the request: with two threaded cores, concurrently.
    o.trace = [this](const std::string& l) {
      std::lock_guard<std::mutex> lock(m);
      if (keep_trace) trace.push_back(l);
      if (on_trace) on_trace(l);
    };
    o.log = [this](const std::string& l) {
      std::lock_guard<std::mutex> lock(m);
      log.push_back(l);
    };
    if (tweak) tweak(o);
    return o;
  }

  static gateway::job_backend_options options(quell::address a, std::size_t pool, quell::duration ct) {
    gateway::job_backend_options o;
    o.service = a;
    o.pool_size = pool;
    o.cancel_timeout = ct;
    return o;
  }

  // Runs the service and the server around `client_side`, then shuts both down; `served` has
  // the server's figures, every core's, afterwards.
  template <class Fn>
  void run(quell::clock_source& clock, Fn client_side) {
    auto body = [&]() -> task<void> {
      auto all = [&](quell::scope& s) -> task<void> {
        auto service = s.spawn([this] { return svc.serve(); });
        auto server = s.spawn(srv.run());
        co_await client_side(srv.local_address());
        srv.shutdown(0s);
        co_await server;
        service.cancel();
      };
      co_await quell::with_scope(all);
      served = co_await srv.total_stats();
    };
    if (cores == 1) {
      quell::executor ex{body(), clock};
      ex.run();
      return;
    }
    quell::runtime_options o;
    o.cores = cores;
    if (clock.is_virtual()) {
      o.one_thread = true;
      o.clock = &clock;
    }
    quell::runtime rt{o};
    rt.run(body());
  }

  // Waits until no report is being handled, on any core.
  task<void> settle() { co_await app.idle(); }

  std::size_t trace_index(const std::string& part) const {
    for (std::size_t i = 0; i < trace.size(); ++i)
      if (contains(trace[i], part)) return i;
    return trace.size();
  }

  gateway::job_service svc;
  gateway::job_backend backend;
  gateway::app app;
  http::server srv;
  unsigned cores = 1;
  http::server_stats served;
  std::mutex m;  // trace, log, on_trace
  std::vector<std::string> trace;
  std::vector<std::string> log;
  bool keep_trace = true;
  std::function<void(const std::string&)> on_trace;
};

// The scenarios run on one executor and on a runtime of two cores.
class Gateway : public ::testing::TestWithParam<unsigned> {};
INSTANTIATE_TEST_SUITE_P(Cores, Gateway, ::testing::Values(1u, 2u), [](const ::testing::TestParamInfo<unsigned>& i) {
  return i.param == 1 ? std::string("one_core") : std::to_string(i.param) + "_cores";
});

}  // namespace

TEST_P(Gateway, AReportIsAnsweredWithTheBackendsResultAndNothingIsCancelled) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  stack g(2);
  g.cores = GetParam();
  g.run(clock, [&](quell::address a) -> task<void> {
    auto c = co_await http::client::connect(a);
    auto r = co_await c.get("/report?seconds=0.5");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "{\"result\":\"report after 500 ms\"}\n");
    co_await c.close();
  });
  EXPECT_EQ(g.backend.stats().cancels_sent, 0u);
  EXPECT_EQ(g.app.stats().reports_done, 1u);
  EXPECT_EQ(g.app.stats().reports_cancelled, 0u);
  EXPECT_EQ(g.app.permits_available(), 2u);
}

TEST_P(Gateway, AClientDisconnectCancelsTheJobAndThePermitReturnsOnlyAfterTheBackendAcknowledged) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  stack g(2);
  std::optional<std::uint64_t> acked_when_released;
  g.on_trace = [&](const std::string& l) {
    if (contains(l, "ended cancelled")) acked_when_released = g.backend.stats().cancels_acknowledged;
  };
  g.cores = GetParam();
  g.run(clock, [&](quell::address a) -> task<void> {
    auto c = co_await http::client::connect(a);
    auto r = co_await quell::move_on_after(1s, c.get("/report?seconds=10"));
    EXPECT_FALSE(r);
    co_await c.close();
    co_await g.settle();
    EXPECT_EQ(g.app.permits_available(), 2u);
    EXPECT_EQ(g.svc.jobs_running(), 0u);
    // The next request reuses the backend connection the cancelled job left clean.
    auto c2 = co_await http::client::connect(a);
    auto r2 = co_await c2.get("/report?seconds=0.1");
    EXPECT_EQ(r2.status, 200);
    co_await c2.close();
  });
  EXPECT_EQ(g.backend.stats().cancels_sent, 1u);
  EXPECT_EQ(g.backend.stats().cancels_acknowledged, 1u);
  EXPECT_EQ(g.backend.stats().cancels_timed_out, 0u);
  EXPECT_EQ(acked_when_released, 1u) << "the permit came back before the backend's acknowledgement";
  EXPECT_EQ(g.backend.connections_opened(), 1u);
  EXPECT_EQ(g.svc.jobs_cancelled(), 1u);
  EXPECT_EQ(g.served.cancelled_by_disconnect, 1u);
  EXPECT_LT(g.trace_index("cancelled (peer disconnected)"),
            g.trace_index("ended cancelled (the backend confirmed the cancel); permit released, 2/2 free"));
}

TEST_P(Gateway, AWaiterQueuedForThePermitGetsItOnlyOnceTheDisconnectedRequestsCancelIsConfirmed) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  stack g(1);
  g.cores = GetParam();
  g.run(clock, [&](quell::address a) -> task<void> {
    auto first = co_await http::client::connect(a);
    auto second = co_await http::client::connect(a);
    auto give_up = [&]() -> task<void> {
      co_await quell::move_on_after(1s, first.get("/report?seconds=10"));
      co_await first.close();
    };
    auto both = [&](quell::scope& s) -> task<void> {
      s.spawn(give_up);
      co_await quell::sleep_for(100ms);  // the first holds the only permit
      auto r = co_await second.get("/report?seconds=0.5");
      EXPECT_EQ(r.status, 200);
      EXPECT_EQ(std::chrono::duration_cast<std::chrono::milliseconds>(clock.now().time_since_epoch()).count(), 1500);
    };
    co_await quell::with_scope(both);
    co_await second.close();
  });
  EXPECT_LT(g.trace_index("#1 ended cancelled"), g.trace_index("#2 permit taken"));
  EXPECT_EQ(g.backend.stats().cancels_acknowledged, 1u);
}

TEST_P(Gateway, ABackendIgnoringTheCancelTimesOutClosesThatConnectionAndStillReturnsThePermit) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  stack g(2, /*cancel_timeout=*/2s);
  g.svc.set_ignore_cancels(true);
  g.cores = GetParam();
  g.run(clock, [&](quell::address a) -> task<void> {
    auto c = co_await http::client::connect(a);
    co_await quell::move_on_after(1s, c.get("/report?seconds=10"));
    co_await c.close();
    const auto gone = clock.now();
    co_await g.settle();
    EXPECT_EQ(std::chrono::duration_cast<std::chrono::milliseconds>(clock.now() - gone).count(), 2000);
    EXPECT_EQ(g.app.permits_available(), 2u);
    while (g.svc.jobs_running() != 0) co_await quell::sleep_for(1ms);  // it saw the connection close
    g.svc.set_ignore_cancels(false);
    auto c2 = co_await http::client::connect(a);
    auto r2 = co_await c2.get("/report?seconds=0.1");
    EXPECT_EQ(r2.status, 200);
    co_await c2.close();
  });
  EXPECT_EQ(g.backend.stats().cancels_sent, 1u);
  EXPECT_EQ(g.backend.stats().cancels_timed_out, 1u);
  EXPECT_EQ(g.backend.stats().cancels_acknowledged, 0u);
  EXPECT_EQ(g.backend.connections_closed(), 1u);
  EXPECT_EQ(g.backend.connections_opened(), 2u);
}

TEST_P(Gateway, ADeadlineCutsTheJobAndAnswers504AfterTheBackendConfirmed) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  stack g(2);
  g.cores = GetParam();
  g.run(clock, [&](quell::address a) -> task<void> {
    auto c = co_await http::client::connect(a);
    auto r = co_await c.get("/report?seconds=10&timeout=0.5");
    EXPECT_EQ(r.status, 504);
    EXPECT_EQ(std::chrono::duration_cast<std::chrono::milliseconds>(clock.now().time_since_epoch()).count(), 500);
    co_await c.close();
  });
  EXPECT_EQ(g.backend.stats().cancels_acknowledged, 1u);
  EXPECT_EQ(g.app.stats().reports_timed_out, 1u);
  EXPECT_EQ(g.svc.jobs_running(), 0u);
}

TEST_P(Gateway, StatsRoutesAndBadParameters) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  stack g(3);
  g.cores = GetParam();
  g.run(clock, [&](quell::address a) -> task<void> {
    auto c = co_await http::client::connect(a);
    EXPECT_EQ((co_await c.get("/report?seconds=abc")).status, 400);
    EXPECT_EQ((co_await c.get("/report?seconds=-1")).status, 400);
    EXPECT_EQ((co_await c.get("/report?seconds=1&timeout=x")).status, 400);
    EXPECT_EQ((co_await c.get("/report")).status, 400);
    EXPECT_EQ((co_await c.get("/nope")).status, 404);
    EXPECT_EQ((co_await c.request("POST", "/report?seconds=1")).status, 405);
    auto s = co_await c.get("/stats");
    EXPECT_EQ(s.status, 200);
    EXPECT_EQ(s.header("content-type"), "application/json");
    EXPECT_TRUE(contains(s.body, "\"in_flight\":0,\"permits\":3,\"permits_available\":3,")) << s.body;
    EXPECT_TRUE(contains(s.body, "\"cancels_sent\":0,\"cancels_acknowledged\":0,\"cancels_timed_out\":0")) << s.body;
    co_await c.close();
  });
}

TEST_P(Gateway, DebugTasksShowsARequestWhoseBackendCancelIsInFlightAndMetricsCountIt) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  stack g(1);
  g.svc.set_ignore_cancels(true);  // the cancel stays in flight for the whole cancel timeout (1 s)
  g.cores = GetParam();
  g.run(clock, [&](quell::address a) -> task<void> {
    auto c = co_await http::client::connect(a);
    auto r = co_await quell::move_on_after(300ms, c.get("/report?seconds=10"));
    EXPECT_FALSE(r);
    co_await c.close();
    co_await quell::sleep_for(200ms);
    auto d = co_await http::client::connect(a);
    auto text = co_await d.get("/debug/tasks");
    EXPECT_EQ(text.status, 200);
    EXPECT_TRUE(contains(text.body, "- report (gateway.cpp:")) << text.body;
    EXPECT_TRUE(contains(text.body, " cancelling, waiting on on_cancel > `run_job`\n")) << text.body;
    EXPECT_TRUE(contains(text.body, "cancel: graceful (peer disconnected), 200 ms ago\n")) << text.body;
    EXPECT_TRUE(contains(text.body, "waiting on on_cancel (hook running) > ")) << text.body;
    auto json = co_await d.get("/debug/tasks?format=json");
    EXPECT_EQ(json.status, 200);
    EXPECT_EQ(json.header("content-type"), "application/json");
    EXPECT_TRUE(contains(json.body, "\"function\":\"report\"")) << json.body;
    EXPECT_TRUE(contains(json.body, "\"reason\":\"peer disconnected\",\"age_ns\":200000000}")) << json.body;
    auto m = co_await d.get("/metrics");
    EXPECT_EQ(m.status, 200);
    EXPECT_EQ(m.header("content-type"), "text/plain; version=0.0.4");
    EXPECT_TRUE(contains(m.body, "# TYPE quell_cancel_latency_seconds histogram\n")) << m.body;
    EXPECT_TRUE(contains(m.body, "quell_tasks_alive{core=\"0\"} ")) << m.body;
    if (GetParam() == 2) EXPECT_TRUE(contains(m.body, "quell_turns_total{core=\"1\"} ")) << m.body;
    co_await d.close();
    co_await g.settle();
  });
  g.svc.set_ignore_cancels(false);
  EXPECT_EQ(g.backend.stats().cancels_timed_out, 1u);
}

TEST_P(Gateway, AFullQueueAndATooLongWaitAre503WithRetryAfterAndHoldNothing) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  stack g(1, 1s, 8, [](gateway::app_options& o) {
    o.max_waiting = 1;
    o.max_wait = 2s;
    o.max_seconds = 20;
  });
  g.cores = GetParam();
  g.run(clock, [&](quell::address a) -> task<void> {
    auto running = co_await http::client::connect(a);
    auto waiting = co_await http::client::connect(a);
    auto third = co_await http::client::connect(a);
    auto all = [&](quell::scope& s) -> task<void> {
      auto r1 = s.spawn(running.get("/report?seconds=10"));
      co_await quell::sleep_for(100ms);
      auto r2 = s.spawn(waiting.get("/report?seconds=1"));
      co_await quell::sleep_for(100ms);
      EXPECT_EQ(g.app.stats().waiting, 1u);
      auto full = co_await third.get("/report?seconds=1");  // at once: the queue is full
      EXPECT_EQ(full.status, 503);
      EXPECT_EQ(full.header("retry-after"), "1");
      EXPECT_TRUE(contains(full.body, "too many requests are waiting")) << full.body;
      EXPECT_EQ(std::chrono::duration_cast<std::chrono::milliseconds>(clock.now().time_since_epoch()).count(), 200);
      auto late = co_await r2;  // waited max_wait (2 s) behind the 10 s job
      EXPECT_EQ(late.status, 503);
      EXPECT_TRUE(contains(late.body, "waited too long")) << late.body;
      EXPECT_EQ(std::chrono::duration_cast<std::chrono::milliseconds>(clock.now().time_since_epoch()).count(), 2100);
      EXPECT_EQ((co_await r1).status, 200);
      EXPECT_EQ((co_await third.get("/report?seconds=21")).status, 400);  // over max_seconds
    };
    co_await quell::with_scope(all);
    co_await running.close();
    co_await waiting.close();
    co_await third.close();
  });
  EXPECT_EQ(g.app.stats().reports_refused, 2u);
  EXPECT_EQ(g.app.stats().waiting, 0u);
  EXPECT_EQ(g.app.permits_available(), 1u);
}

TEST_P(Gateway, OnceAdmissionStopsWaitersAndNewReportsAre503AtOnce) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  stack g(1);
  g.cores = GetParam();
  g.run(clock, [&](quell::address a) -> task<void> {
    auto running = co_await http::client::connect(a);
    auto waiting = co_await http::client::connect(a);
    auto all = [&](quell::scope& s) -> task<void> {
      auto r1 = s.spawn(running.get("/report?seconds=1"));
      co_await quell::sleep_for(100ms);
      auto r2 = s.spawn(waiting.get("/report?seconds=1"));
      co_await quell::sleep_for(100ms);
      g.app.stop_admitting();
      auto refused = co_await r2;
      EXPECT_EQ(refused.status, 503);
      EXPECT_TRUE(contains(refused.body, "shutting down")) << refused.body;
      EXPECT_EQ(std::chrono::duration_cast<std::chrono::milliseconds>(clock.now().time_since_epoch()).count(), 200);
      EXPECT_EQ((co_await r1).status, 200);  // what already ran finishes
      EXPECT_EQ((co_await waiting.get("/report?seconds=1")).status, 503);
    };
    co_await quell::with_scope(all);
    co_await running.close();
    co_await waiting.close();
  });
}

TEST(GatewayErrors, ABackendFailureIs502WithARequestIdAndItsDetailGoesOnlyToTheLog) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  // A backend address nobody listens on: connecting fails with the address in the message.
  quell::address nowhere;
  {
    auto l = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
    nowhere = l.local_address();
  }
  gateway::job_backend_options bo;
  bo.service = nowhere;
  gateway::job_backend backend(bo);
  std::vector<std::string> log;
  gateway::app_options ao;
  ao.permits = 1;
  ao.log = [&](const std::string& l) { log.push_back(l); };
  gateway::app app(backend, ao);
  http::server srv(quell::address::parse("127.0.0.1", 0), app.handler());
  const std::string where = nowhere.to_string();
  auto body = [&]() -> task<void> {
    auto all = [&](quell::scope& s) -> task<void> {
      auto server = s.spawn(srv.run());
      auto c = co_await http::client::connect(srv.local_address());
      auto r = co_await c.get("/report?seconds=1");
      EXPECT_EQ(r.status, 502);
      EXPECT_FALSE(contains(r.body, where)) << r.body;
      EXPECT_TRUE(contains(r.body, "\"request\":\"#1\"")) << r.body;
      EXPECT_EQ(r.header("x-request-id"), "1");
      co_await c.close();
      srv.shutdown(0s);
      co_await server;
    };
    co_await quell::with_scope(all);
  };
  quell::executor ex{body(), clock};
  ex.run();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_TRUE(contains(log[0], "#1")) << log[0];
  EXPECT_TRUE(contains(log[0], where)) << log[0];
}

TEST_P(Gateway, BadInputGetsA4xxOrAClosedConnectionAndNeverKeepsAPermit) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  stack g(2);
  g.cores = GetParam();
  g.run(clock, [&](quell::address a) -> task<void> {
    const std::vector<std::string> bad = {
        "GET /report?seconds=1 HTTP/1.1 junk\r\n\r\n",                                   // request line
        "GET /report?seconds=1 HTTP/1.1\r\nX: " + std::string(20000, 'a') + "\r\n\r\n",  // 431
        "POST /report?seconds=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",   // chunk size
        "GET /report?seconds=1 HTTP/1.1\r\nHost: x",                                     // cut short
        std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11),                 // a TLS hello
    };
    for (const auto& b : bad) {
      std::string got = co_await exchange(a, b, true);
      EXPECT_TRUE(got.empty() || got.rfind("HTTP/1.1 4", 0) == 0) << got;
    }
    std::mt19937 rng(7);
    for (int i = 0; i < 50; ++i) {
      std::string junk(1 + rng() % 500, '\0');
      for (auto& ch : junk) ch = static_cast<char>(rng());
      std::string got = co_await exchange(a, "GET /report?seconds=0.1 HTTP/1.1\r\n" + junk, true);
      EXPECT_TRUE(got.empty() || got.rfind("HTTP/1.1 ", 0) == 0) << got;
    }
    // A client sending its request one byte per second is cut by the header timeout (10 s).
    auto slow = co_await quell::tcp_stream::connect(a);
    const std::string req = "GET /report?seconds=1 HTTP/1.1\r\nHost: x\r\n\r\n";
    std::string got;
    auto drip = [&]() -> task<void> {
      try {
        for (std::size_t i = 0; i < 12; ++i) {  // past the 10 s header timeout, never finishing
          co_await slow.write_all(std::string_view(&req[i], 1));
          co_await quell::sleep_for(1s);
        }
      } catch (const std::system_error&) {  // the server may have closed by now
      }
    };
    co_await drip();
    char buf[512];
    std::size_t n = co_await slow.read_some(buf);
    got.assign(buf, n);
    EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 408") << got;
    co_await slow.close();
    EXPECT_EQ(g.app.permits_available(), 2u);
    EXPECT_EQ(g.app.stats().in_flight, 0u);
    // And the gateway still serves.
    auto c = co_await http::client::connect(a);
    EXPECT_EQ((co_await c.get("/report?seconds=0.1")).status, 200);
    co_await c.close();
  });
  EXPECT_EQ(g.app.permits_available(), 2u);
  EXPECT_EQ(g.svc.jobs_running(), 0u);
}

// ---- across cores ----

// The seed's use case across cores: a request served on one core holds the only permit and its
// client goes away; a request served on the other core waits for the permit and gets it only
// after the backend (on core 0) acknowledged the first one's cancel. Both ways round: when the
// request that goes away is on core 1, its job runs on core 0 through on() and the cancel
// crosses cores to reach it. Lockstep on a virtual clock.
TEST(GatewayCores, AWaiterOnOneCoreGetsThePermitOnlyOnceTheCancelOfARequestOnTheOtherCoreWasAcknowledged) {
  for (unsigned gone_core : {1u, 0u}) {
    SCOPED_TRACE("the client that goes away is served on core " + std::to_string(gone_core));
    const unsigned wait_core = 1 - gone_core;
    quell::virtual_clock clock;
    clock.set_io_grace(20ms);
    stack g(1);
    g.cores = 2;
    g.run(clock, [&](quell::address a) -> task<void> {
      auto first = co_await connection_on(a, gone_core);
      auto second = co_await connection_on(a, wait_core);
      const auto t0 = clock.now();
      auto give_up = [&]() -> task<void> {
        co_await quell::move_on_after(1s, first.get("/report?seconds=10"));
        co_await first.close();
      };
      auto wait_for_it = [&]() -> task<void> {
        co_await quell::sleep_for(100ms);  // the first holds the only permit
        auto r = co_await second.get("/report?seconds=0.5");
        EXPECT_EQ(r.status, 200);
        EXPECT_EQ(r.header("x-core"), std::to_string(wait_core));
        EXPECT_EQ(std::chrono::duration_cast<std::chrono::milliseconds>(clock.now() - t0).count(), 1500);
      };
      co_await quell::join(give_up(), wait_for_it());
      co_await second.close();
    });
    const std::string gone = "[core " + std::to_string(gone_core) + "] #1 ";
    const std::string waits = "[core " + std::to_string(wait_core) + "] #2 ";
    const std::size_t cancelled = g.trace_index(gone + "ended cancelled (the backend confirmed the cancel)");
    const std::size_t waiting = g.trace_index(waits + "GET /report?seconds=0.5");
    const std::size_t taken = g.trace_index(waits + "permit taken");
    ASSERT_LT(cancelled, g.trace.size());
    EXPECT_LT(waiting, cancelled);  // it was waiting before the cancel
    EXPECT_LT(cancelled, taken);    // and got the permit only after the acknowledgement
    EXPECT_EQ(g.backend.stats().cancels_acknowledged, 1u);
    EXPECT_EQ(g.app.permits_available(), 1u);
    EXPECT_EQ(g.served.cancelled_by_disconnect, 1u);
    EXPECT_EQ(g.svc.jobs_running(), 0u);
  }
}

// A shutdown (from another thread, as a signal watcher would) while a report runs on each of two
// threaded cores: both finish within the grace and are answered with Connection: close, and
// nothing is held afterwards.
TEST(GatewayCores, AShutdownWithReportsInFlightOnEveryCoreLetsThemFinishAndHoldsNothing) {
  const std::size_t fds_before = open_fds();
  {
    stack g(4);
    g.cores = 2;
    g.run(quell::steady_clock_source::instance(), [&](quell::address a) -> task<void> {
      auto on0 = co_await connection_on(a, 0);
      auto on1 = co_await connection_on(a, 1);
      auto report = [&](http::client& c) -> task<void> {
        auto r = co_await c.get("/report?seconds=0.3");
        EXPECT_EQ(r.status, 200) << r.body;
        EXPECT_FALSE(r.keep_alive);
      };
      auto stop_when_both_run = [&]() -> task<void> {
        while (g.app.permits_available() != 2) co_await quell::sleep_for(1ms);
        std::thread stopper([&] {
          g.app.stop_admitting();
          g.srv.shutdown(10s);
        });
        stopper.join();
      };
      co_await quell::join(report(on0), report(on1), stop_when_both_run());
      co_await on0.close();
      co_await on1.close();
    });
    EXPECT_EQ(g.app.stats().reports_done, 2u);
    EXPECT_EQ(g.app.stats().in_flight, 0u);
    EXPECT_EQ(g.app.permits_available(), 4u);
    EXPECT_EQ(g.served.requests_in_flight, 0u);
    EXPECT_EQ(g.served.connections_open, 0u);
    EXPECT_EQ(g.svc.jobs_running(), 0u);
  }
  EXPECT_EQ(open_fds(), fds_before);
}

// One backend per core: each core's jobs go through its own connections, on its own core.
TEST(GatewayCores, WithABackendPerCoreEachCoresJobsUseItsOwnConnections) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  auto svc = gateway::job_service::bind();
  gateway::job_backend_options bo;
  bo.service = svc.local_address();
  bo.pool_size = 2;
  gateway::job_backend b0(bo), b1(bo);
  gateway::app_options ao;
  ao.permits = 2;
  gateway::app app(std::vector<gateway::backend*>{&b0, &b1}, ao);
  http::server srv(quell::address::parse("127.0.0.1", 0), app.handler(), on_every_core({}));
  auto body = [&]() -> task<void> {
    auto all = [&](quell::scope& s) -> task<void> {
      auto service = s.spawn([&] { return svc.serve(); });
      auto server = s.spawn(srv.run());
      for (unsigned core = 0; core < 2; ++core) {
        auto c = co_await connection_on(srv.local_address(), core);
        for (int i = 0; i < 3; ++i) {
          auto r = co_await c.get("/report?seconds=0.1");
          EXPECT_EQ(r.status, 200);
          EXPECT_EQ(r.header("x-core"), std::to_string(core));
        }
        // And one that its client gives up: the cancel goes through the same core's backend.
        co_await quell::move_on_after(50ms, c.get("/report?seconds=10"));
        co_await c.close();
        co_await app.idle();
      }
      srv.shutdown(0s);
      co_await server;
      service.cancel();
    };
    co_await quell::with_scope(all);
  };
  quell::runtime_options o;
  o.cores = 2;
  o.one_thread = true;
  o.clock = &clock;
  quell::runtime rt{o};
  rt.run(body());
  for (gateway::job_backend* b : {&b0, &b1}) {
    EXPECT_EQ(b->connections_opened(), 1u);  // three jobs and a cancelled one, one connection
    EXPECT_EQ(b->stats().cancels_acknowledged, 1u);
  }
  EXPECT_EQ(app.stats().reports_done, 6u);
  EXPECT_EQ(app.stats().reports_cancelled, 2u);
  EXPECT_EQ(app.permits_available(), 2u);
}

// The soaks run on one executor and on two threaded cores (ThreadSanitizer runs the latter).
class GatewaySoak : public ::testing::TestWithParam<unsigned> {};
INSTANTIATE_TEST_SUITE_P(Cores, GatewaySoak, ::testing::Values(1u, 2u),
                         [](const ::testing::TestParamInfo<unsigned>& i) {
                           return i.param == 1 ? std::string("one_core") : std::to_string(i.param) + "_cores";
                         });

// ---- curl ----

TEST(GatewayCurl, CurlGivingUpMidReportCancelsTheJobReturnsThePermitAndTheNextCurlIsServed) {
  if (!have_curl()) GTEST_SKIP() << "curl is not installed";
  stack g(2);
  std::string second_output;
  g.run(quell::steady_clock_source::instance(), [&](quell::address a) -> task<void> {
    const std::string base = "http://" + a.to_string();
    {
      // A second of patience: enough for the job to reach the backend even on a loaded machine.
      curl_run gives_up("--max-time 1 '" + base + "/report?seconds=30'");
      while (!gives_up.done) co_await quell::sleep_for(5ms);
      EXPECT_NE(gives_up.status, 0);
    }
    for (int i = 0; i < 400 && g.app.stats().in_flight != 0; ++i) co_await quell::sleep_for(5ms);
    EXPECT_EQ(g.app.permits_available(), 2u);
    curl_run ok("'" + base + "/report?seconds=0.05'");
    while (!ok.done) co_await quell::sleep_for(5ms);
    EXPECT_EQ(ok.status, 0);
    second_output = ok.output;
  });
  EXPECT_EQ(second_output, "{\"result\":\"report after 50 ms\"}\n");
  EXPECT_EQ(g.backend.stats().cancels_acknowledged, 1u);
  EXPECT_EQ(g.svc.jobs_running(), 0u);
  EXPECT_EQ(g.backend.connections_opened(), 1u);
}

// ---- soak ----

TEST_P(GatewaySoak, FiveThousandRequestsWithThirtyPercentDisconnectsLeaveNothingBehind) {
  const std::size_t fds_before = open_fds();
  constexpr int clients = 50, per_client = 100;
  constexpr std::size_t permits = 16;
  int answered = 0, abandoned = 0;
  {
    stack g(permits, 1s, permits);
    g.keep_trace = false;  // 5,000 requests
    g.cores = GetParam();
    g.run(quell::steady_clock_source::instance(), [&](quell::address a) -> task<void> {
      auto one_client = [&](int seed) -> task<void> {
        std::mt19937 rng(static_cast<unsigned>(seed));
        std::optional<http::client> c;
        for (int i = 0; i < per_client; ++i) {
          if (!c || !c->usable()) {
            if (c) co_await c->close();
            c.emplace(co_await http::client::connect(a));
          }
          const int job_ms = static_cast<int>(rng() % 40);
          const std::string target =
              "/report?seconds=0." + std::string(job_ms < 10 ? "00" : "0") + std::to_string(job_ms);
          if (rng() % 100 < 30) {
            // Disconnect at a random moment: while queued for a permit, while the job runs, or
            // (rarely) after the answer came.
            const auto after = std::chrono::milliseconds(rng() % 40);
            auto r = co_await quell::move_on_after(after, c->get(target));
            if (!r) {
              ++abandoned;
              co_await c->close();
              c.reset();
              continue;
            }
            EXPECT_EQ(r->status, 200);
            ++answered;
          } else {
            auto r = co_await c->get(target);
            EXPECT_EQ(r.status, 200) << r.body;
            ++answered;
          }
        }
        if (c) co_await c->close();
      };
      auto all = [&](quell::scope& s) -> task<void> {
        for (int i = 0; i < clients; ++i) s.spawn([&one_client, i] { return one_client(i + 1); });
        co_return;
      };
      co_await quell::with_scope(all);
      co_await g.settle();
      while (g.svc.jobs_running() != 0) co_await quell::sleep_for(1ms);
    });
    EXPECT_EQ(answered + abandoned, clients * per_client);
    EXPECT_GT(abandoned, clients * per_client / 10);
    EXPECT_EQ(g.app.permits_available(), permits);
    EXPECT_EQ(g.app.stats().in_flight, 0u);
    EXPECT_EQ(g.svc.jobs_running(), 0u);
    EXPECT_EQ(g.backend.stats().cancels_timed_out, 0u);
    EXPECT_EQ(g.served.connections_open, 0u);
    EXPECT_EQ(g.served.requests_in_flight, 0u);
    std::printf(
        "soak: %d answered, %d abandoned; cancels sent %llu, acknowledged %llu; %llu handlers cancelled by "
        "disconnect\n",
        answered, abandoned, static_cast<unsigned long long>(g.backend.stats().cancels_sent),
        static_cast<unsigned long long>(g.backend.stats().cancels_acknowledged),
        static_cast<unsigned long long>(g.served.cancelled_by_disconnect));
  }
  EXPECT_EQ(open_fds(), fds_before);
}

TEST_P(GatewaySoak, HostileClientsBesideNormalOnesLeaveNothingBehind) {
  // Everything a hostile client or an overload does, at once, beside normal clients that
  // sometimes give up: smuggling attempts, slowloris, request bodies over the memory budget, more
  // requests than the queue holds, more connections than the cap. Each must get an answer or a
  // closed connection, never two answers, and nothing may be left: permits, waiters, connections,
  // jobs, descriptors.
  const std::size_t fds_before = open_fds();
  constexpr std::size_t permits = 4;
  http::server_options so;
  so.max_connections = 48;
  so.header_timeout = 300ms;
  so.max_buffered_body_bytes = 64 * 1024;
  so.shed_log_interval = 1h;
  int normal_ok = 0, normal_busy = 0, normal_gone = 0, attacks_answered = 0, slow_cut = 0, bodies_ok = 0,
      bodies_shed = 0;
  const std::string smuggled = "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::vector<std::string> attacks = {
      "GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
      "GET /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + smuggled,
      "GET /hello HTTP/1.1\r\nHost: x\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
      "GET /hello HTTP/1.1\nHost: x\nContent-Length: 0\n\n" + smuggled,
      "GET /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX\r\n0\r\n\r\n" + smuggled,
      "GET  /hello HTTP/1.1\r\nHost: x\r\n\r\n" + smuggled,
      "GET /\r\n",
  };
  auto count_answers = [](const std::string& got) {
    std::size_t n = got.rfind("HTTP/1.1 ", 0) == 0 ? 1 : 0;
    for (auto at = got.find("\r\nHTTP/1.1 "); at != std::string::npos; at = got.find("\r\nHTTP/1.1 ", at + 1)) ++n;
    return n;
  };
  {
    stack g(
        permits, 1s, permits,
        [](gateway::app_options& o) {
          o.max_waiting = 8;
          o.max_wait = 500ms;
          o.max_seconds = 1;
        },
        so);
    g.keep_trace = false;
    g.cores = GetParam();
    g.run(quell::steady_clock_source::instance(), [&](quell::address a) -> task<void> {
      auto normal = [&](int seed) -> task<void> {
        std::mt19937 rng(static_cast<unsigned>(seed));
        for (int i = 0; i < 20; ++i) {
          auto c = co_await http::client::connect(a);
          const std::string target = "/report?seconds=0.0" + std::to_string(rng() % 10);
          auto r = co_await quell::move_on_after(std::chrono::milliseconds(rng() % 100 < 30 ? rng() % 30 : 5000),
                                                 c.get(target));
          if (!r) {
            ++normal_gone;
          } else if (r->status == 200) {
            ++normal_ok;
          } else {
            EXPECT_EQ(r->status, 503) << r->body;
            ++normal_busy;
          }
          co_await c.close();
        }
      };
      auto attacker = [&]() -> task<void> {
        for (const auto& bytes : attacks) {
          std::string got = co_await exchange(a, bytes);
          EXPECT_LE(count_answers(got), 1u) << bytes << "\n" << got;
          EXPECT_TRUE(got.empty() || got.substr(0, 10) == "HTTP/1.1 4" || got.substr(0, 10) == "HTTP/1.1 5") << got;
          attacks_answered += static_cast<int>(count_answers(got));
        }
      };
      auto slowloris = [&]() -> task<void> {
        auto s = co_await quell::tcp_stream::connect(a);
        const std::string head = "GET /report?seconds=0.01 HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        std::string got;
        try {
          co_await s.write_all(head);
          for (int i = 0; i < 40; ++i) {  // one byte per 50 ms: never done within header_timeout
            co_await quell::sleep_for(50ms);
            co_await s.write_all("a");
          }
        } catch (const std::system_error&) {
        }
        char buf[512];
        try {
          while (std::size_t n = co_await s.read_some(buf)) got.append(buf, n);
        } catch (const std::system_error&) {
        }
        EXPECT_TRUE(got.empty() || got.substr(0, 12) == "HTTP/1.1 408") << got;
        ++slow_cut;
        co_await s.close();
      };
      auto body_holder = [&]() -> task<void> {
        // A report with a 20 KiB body waits for a permit holding it: ten of them pass the budget.
        const std::string req =
            "GET /report?seconds=0.05 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            "Content-Length: 20480\r\n\r\n" +
            std::string(20480, 'b');
        std::string got = co_await exchange(a, req);
        if (got.substr(0, 12) == "HTTP/1.1 200") {
          ++bodies_ok;
        } else {
          EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 503") << got.substr(0, 200);
          ++bodies_shed;
        }
      };
      auto flood = [&]() -> task<void> {
        // More connections than the cap, all silent: the server closes idle ones to make room.
        std::vector<quell::tcp_stream> conns;
        for (int i = 0; i < 60; ++i) conns.push_back(co_await quell::tcp_stream::connect(a));
        co_await quell::sleep_for(200ms);
        for (auto& c : conns) co_await c.close();
      };
      auto all = [&](quell::scope& s) -> task<void> {
        for (int i = 0; i < 20; ++i) s.spawn([&normal, i] { return normal(i + 1); });
        for (int i = 0; i < 5; ++i) s.spawn(attacker);
        for (int i = 0; i < 10; ++i) s.spawn(slowloris);
        for (int i = 0; i < 10; ++i) s.spawn(body_holder);
        s.spawn(flood);
        co_return;
      };
      co_await quell::with_scope(all);
      co_await g.settle();
      while (g.svc.jobs_running() != 0) co_await quell::sleep_for(1ms);
    });
    EXPECT_EQ(normal_ok + normal_busy + normal_gone, 20 * 20);
    EXPECT_GT(normal_ok, 0);
    EXPECT_EQ(attacks_answered, 5 * static_cast<int>(attacks.size()));
    EXPECT_EQ(slow_cut, 10);
    EXPECT_EQ(bodies_ok + bodies_shed, 10);
    EXPECT_EQ(g.app.permits_available(), permits);
    EXPECT_EQ(g.app.stats().in_flight, 0u);
    EXPECT_EQ(g.app.stats().waiting, 0u);
    EXPECT_EQ(g.svc.jobs_running(), 0u);
    EXPECT_EQ(g.served.connections_open, 0u);
    EXPECT_EQ(g.served.requests_in_flight, 0u);
    std::printf(
        "hostile soak: normal %d ok, %d busy (503), %d gave up; %d attacks answered once; %d slowloris cut; "
        "bodies %d ok, %d refused (%llu by the body budget); %llu connections refused\n",
        normal_ok, normal_busy, normal_gone, attacks_answered, slow_cut, bodies_ok, bodies_shed,
        static_cast<unsigned long long>(g.served.requests_shed),
        static_cast<unsigned long long>(g.served.connections_refused));
  }
  EXPECT_EQ(open_fds(), fds_before);
}
