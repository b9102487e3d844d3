// quell::http on real loopback sockets: the server against quell's own client, raw byte streams,
// and curl. Timing goes through the virtual clock (timeouts, grace periods), except in the curl
// tests, whose peer is another process.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "quell/http.hpp"
#include "quell/quell.hpp"
#include "support/log.hpp"
#include "support/net_client.hpp"

using namespace std::chrono_literals;
namespace http = quell::http;
using quell::task;
using quell::test::curl_run;
using quell::test::exchange;
using quell::test::have_curl;
using quell::test::open_fds;

namespace {

const quell::address loopback = quell::address::parse("127.0.0.1", 0);

// Runs `srv` and `client_side(address)` together on one executor with a virtual clock, then shuts
// the server down (grace 0) and waits for run() to return.
template <class Fn>
void serve_and(quell::virtual_clock& clock, http::server& srv, Fn client_side) {
  clock.set_io_grace(20ms);
  auto body = [&]() -> task<void> {
    auto both = [&](quell::scope& s) -> task<void> {
      s.spawn(srv.run());
      co_await client_side(srv.local_address());
      srv.shutdown(0s);
    };
    co_await quell::with_scope(both);
  };
  quell::executor ex{body(), clock};
  ex.run();
}

std::string status_line(const std::string& response) { return response.substr(0, response.find("\r\n")); }

http::server::handler echo_handler(int* calls) {
  return [calls](http::request& r) -> task<http::response> {
    ++*calls;
    co_return http::response::text(200, r.method + " " + r.target + " " + r.body);
  };
}

}  // namespace

TEST(Http, QueryParametersArePercentDecodedAndThePathExcludesTheQuery) {
  http::request r;
  r.target = "/report?seconds=2&name=a%20b+c&flag&bad=%zz#frag";
  EXPECT_EQ(r.path(), "/report");
  EXPECT_EQ(r.query(), "seconds=2&name=a%20b+c&flag&bad=%zz");
  EXPECT_EQ(r.query_param("seconds"), "2");
  EXPECT_EQ(r.query_param("name"), "a b c");
  EXPECT_EQ(r.query_param("flag"), "");
  EXPECT_EQ(r.query_param("bad"), "%zz");
  EXPECT_EQ(r.query_param("missing"), std::nullopt);
}

TEST(Http, RequestsOnOneKeepAliveConnectionAreAnsweredInOrder) {
  quell::virtual_clock clock;
  int calls = 0;
  http::server srv{loopback, echo_handler(&calls)};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    auto c = co_await http::client::connect(a);
    auto r1 = co_await c.get("/one");
    std::vector<http::header> extra{{"X-Test", "1"}};  // g++ 12 rejects a braced list inside co_await
    auto r2 = co_await c.request("POST", "/two", extra, "payload");
    EXPECT_EQ(r1.status, 200);
    EXPECT_EQ(r1.body, "GET /one ");
    EXPECT_EQ(r2.body, "POST /two payload");
    EXPECT_EQ(r2.header("content-type"), "text/plain; charset=utf-8");
    EXPECT_TRUE(c.usable());
    EXPECT_EQ(srv.stats().connections_accepted, 1u);
    co_await c.close();
  });
  EXPECT_EQ(calls, 2);
}

TEST(Http, AClientConnectedByHostNameResolvesItAndSendsItAsHost) {
  quell::virtual_clock clock;
  http::server srv{loopback, [](http::request& r) -> task<http::response> {
                     co_return http::response::text(200, std::string(r.header("host").value_or("none")));
                   }};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    // "localhost" comes from /etc/hosts, through quell::resolve; Happy Eyeballs finds the IPv4
    // listener (an IPv6 ::1 entry, where there is one, is refused first).
    auto c = co_await http::client::connect("localhost", a.port());
    auto r = co_await c.get("/");
    EXPECT_EQ(r.body, "localhost:" + std::to_string(a.port()));
    co_await c.close();
  });
}

TEST(Http, PipelinedRequestsInOneWriteAreAnsweredInOrder) {
  quell::virtual_clock clock;
  int calls = 0;
  http::server srv{loopback, echo_handler(&calls)};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    std::string got = co_await exchange(a,
                                        "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                                        "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                                        "GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    auto a_at = got.find("GET /a ");
    auto b_at = got.find("POST /b abc");
    auto c_at = got.find("GET /c ");
    EXPECT_NE(a_at, std::string::npos) << got;
    EXPECT_LT(a_at, b_at);
    EXPECT_LT(b_at, c_at);
    EXPECT_NE(c_at, std::string::npos) << got;
  });
  EXPECT_EQ(calls, 3);
}

TEST(Http, AChunkedBodyIsReassembledBeforeTheHandlerRuns) {
  quell::virtual_clock clock;
  int calls = 0;
  http::server srv{loopback, echo_handler(&calls)};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    std::string got =
        co_await exchange(a,
                          "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                          "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n");
    EXPECT_EQ(status_line(got), "HTTP/1.1 200 OK");
    EXPECT_NE(got.find("POST /up hello, world"), std::string::npos) << got;
    EXPECT_NE(got.find("Connection: close"), std::string::npos);
  });
  EXPECT_EQ(calls, 1);
}

TEST(Http, HeadersLargerThanTheLimitGet431AndTheHandlerIsNotCalled) {
  quell::virtual_clock clock;
  int calls = 0;
  http::server_options o;
  o.max_header_bytes = 1024;
  http::server srv{loopback, echo_handler(&calls), o};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    std::string got =
        co_await exchange(a, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(2000, 'a') + "\r\n\r\n");
    EXPECT_EQ(status_line(got), "HTTP/1.1 431 Request Header Fields Too Large");
    // A long request line counts too.
    got = co_await exchange(a, "GET /" + std::string(2000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(status_line(got), "HTTP/1.1 431 Request Header Fields Too Large");
  });
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(srv.stats().requests_rejected, 2u);
}

TEST(Http, ADeclaredBodyOverTheLimitGets413BeforeItIsSent) {
  quell::virtual_clock clock;
  int calls = 0;
  http::server_options o;
  o.max_body_bytes = 100;
  http::server srv{loopback, echo_handler(&calls), o};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    // Expect: 100-continue, and no body sent: the answer comes from the headers alone.
    std::string got =
        co_await exchange(a, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\nExpect: 100-continue\r\n\r\n");
    EXPECT_EQ(status_line(got), "HTTP/1.1 413 Payload Too Large");
  });
  EXPECT_EQ(calls, 0);
}

TEST(Http, AChunkedBodyGrowingOverTheLimitGets413) {
  quell::virtual_clock clock;
  int calls = 0;
  http::server_options o;
  o.max_body_bytes = 10;
  http::server srv{loopback, echo_handler(&calls), o};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    std::string got = co_await exchange(
        a,
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n");
    EXPECT_EQ(status_line(got), "HTTP/1.1 413 Payload Too Large");
  });
  EXPECT_EQ(calls, 0);
}

TEST(Http, MalformedRequestsGet400And505AndNeverReachTheHandler) {
  quell::virtual_clock clock;
  int calls = 0;
  http::server srv{loopback, echo_handler(&calls)};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    const char* bad400[] = {
        "GARBAGE\r\n\r\n",
        "GET / HTTP/1.1 extra\r\n\r\n",
        "GET / HTTP/1.1\r\nBad\x7fName: x\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "\x01\x02\x03\xff\r\n\r\n",
    };
    for (const char* req : bad400) {
      std::string got = co_await exchange(a, req);
      EXPECT_EQ(status_line(got), "HTTP/1.1 400 Bad Request") << req;
    }
    std::string got = co_await exchange(a, "GET / HTTP/2.0\r\nHost: x\r\n\r\n");
    EXPECT_EQ(status_line(got), "HTTP/1.1 505 HTTP Version Not Supported");
  });
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(srv.stats().requests_in_flight, 0u);
}

TEST(Http, HeadersThatTrickleInSlowerThanTheHeaderTimeoutGet408) {
  quell::virtual_clock clock;
  int calls = 0;
  http::server srv{loopback, echo_handler(&calls)};  // header_timeout 10 s
  quell::time_point answered{};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    auto s = co_await quell::tcp_stream::connect(a);
    const quell::time_point start = quell::now();
    auto drip = [&]() -> task<void> {  // one byte per second, never finishing the headers
      const std::string req = "GET / HTTP/1.1\r\nX-Slow: " + std::string(1000, 'a');
      for (char ch : req) {
        co_await s.write_all(std::string_view(&ch, 1));
        co_await quell::sleep_for(1s);
      }
    };
    auto read_all = [&]() -> task<std::string> {
      std::string got;
      char buf[512];
      while (std::size_t n = co_await s.read_some(buf)) got.append(buf, n);
      answered = quell::now();
      co_return got;
    };
    auto drip_forever = [&]() -> task<std::string> {
      try {
        co_await drip();
      } catch (const std::system_error&) {  // the server closed first
      }
      co_await quell::pending<void>();
      co_return std::string();
    };
    std::string got = co_await quell::race(read_all(), drip_forever());
    EXPECT_EQ(status_line(got), "HTTP/1.1 408 Request Timeout");
    EXPECT_EQ(std::chrono::duration_cast<std::chrono::seconds>(answered - start).count(), 10);
    co_await s.close();
  });
  EXPECT_EQ(calls, 0);
}

TEST(Http, AKeepAliveConnectionWithoutARequestIsClosedAfterTheIdleTimeout) {
  quell::virtual_clock clock;
  int calls = 0;
  http::server_options o;
  o.idle_timeout = 30s;
  http::server srv{loopback, echo_handler(&calls), o};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    auto c = co_await http::client::connect(a);
    auto r = co_await c.get("/");
    EXPECT_EQ(r.status, 200);
    const quell::time_point after_response = quell::now();
    char b[16];
    std::size_t n = co_await c.stream().read_some(b);  // the server's close
    EXPECT_EQ(n, 0u);
    EXPECT_EQ(std::chrono::duration_cast<std::chrono::seconds>(quell::now() - after_response).count(), 30);
    EXPECT_EQ(srv.stats().connections_open, 0u);
    co_await c.close();
  });
}

TEST(Http, AClientThatDisconnectsCancelsItsHandlerWhoseCleanupFinishesBeforeThePermitIsFree) {
  quell::virtual_clock clock;
  quell::test::log log;
  quell::semaphore permits{1};
  http::server srv{loopback, [&](http::request&) -> task<http::response> {
                     quell::permit p = co_await permits.acquire();
                     auto tell_backend = [&]() -> task<void> {
                       log.print("hook: " + quell::this_task::cancel_reason()->describe());
                       co_await quell::sleep_for(100ms);  // the backend's acknowledgement
                       log.print("hook: acknowledged at " + quell::test::at(clock));
                     };
                     co_await quell::on_cancel(quell::pending<void>(), tell_backend);
                     co_return http::response::text(200, "unreachable");
                   }};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    auto c = co_await http::client::connect(a);
    auto r = co_await quell::move_on_after(50ms, c.get("/slow"));
    EXPECT_FALSE(r.has_value());
    EXPECT_FALSE(c.usable());
    co_await c.close();
    log.print("client: gone at " + quell::test::at(clock));
    quell::permit p = co_await permits.acquire();  // FIFO: after the handler's is released
    log.print("permit free at " + quell::test::at(clock));
  });
  EXPECT_EQ(log.lines, (std::vector<std::string>{"client: gone at 50ms", "hook: peer disconnected",
                                                 "hook: acknowledged at 150ms", "permit free at 150ms"}));
  EXPECT_EQ(srv.stats().cancelled_by_disconnect, 1u);
  EXPECT_EQ(srv.stats().requests_in_flight, 0u);
}

TEST(Http, AHandlerThatCompletesWhileItsClientHalfClosesStillSendsItsResponse) {
  quell::virtual_clock clock;
  http::server srv{loopback, [&](http::request&) -> task<http::response> {
                     co_await quell::shield(quell::sleep_for(100ms));  // holds the disconnect back
                     co_return http::response::text(200, "done anyway");
                   }};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    std::string got = co_await exchange(a, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", /*half_close=*/true);
    EXPECT_EQ(status_line(got), "HTTP/1.1 200 OK");
    EXPECT_NE(got.find("done anyway"), std::string::npos);
    EXPECT_NE(got.find("Connection: close"), std::string::npos);
  });
  EXPECT_EQ(srv.stats().cancelled_by_disconnect, 1u);
}

TEST(Http, AHandlerThatThrowsGets500AndTheConnectionStaysUsable) {
  quell::virtual_clock clock;
  http::server srv{loopback, [&](http::request& r) -> task<http::response> {
                     if (r.path() == "/boom") throw std::runtime_error("secret detail");
                     co_return http::response::text(200, "fine");
                   }};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    auto c = co_await http::client::connect(a);
    auto r1 = co_await c.get("/boom");
    EXPECT_EQ(r1.status, 500);
    EXPECT_EQ(r1.body.find("secret"), std::string::npos);
    auto r2 = co_await c.get("/ok");
    EXPECT_EQ(r2.body, "fine");
    co_await c.close();
  });
  EXPECT_EQ(srv.stats().handler_errors, 1u);
}

TEST(Http, HeadGetsTheLengthButNoBodyAndHttp10ClosesWithoutKeepAlive) {
  quell::virtual_clock clock;
  int calls = 0;
  http::server srv{loopback, echo_handler(&calls)};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    auto c = co_await http::client::connect(a);
    auto h = co_await c.request("HEAD", "/x");
    EXPECT_EQ(h.header("content-length"), "8");  // "HEAD /x "
    EXPECT_EQ(h.body, "");
    auto g = co_await c.get("/x");  // the connection is still in step
    EXPECT_EQ(g.body, "GET /x ");
    co_await c.close();
    std::string got = co_await exchange(a, "GET /old HTTP/1.0\r\n\r\n");  // ends with the server's close
    EXPECT_EQ(status_line(got), "HTTP/1.1 200 OK");
    EXPECT_NE(got.find("Connection: close"), std::string::npos);
  });
  EXPECT_EQ(calls, 3);
}

TEST(Http, ExpectContinueGets100BeforeTheBodyIsSent) {
  quell::virtual_clock clock;
  int calls = 0;
  http::server srv{loopback, echo_handler(&calls)};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    auto s = co_await quell::tcp_stream::connect(a);
    co_await s.write_all("PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    char buf[256];
    std::size_t n = co_await s.read_some(buf);
    EXPECT_EQ(std::string(buf, n), "HTTP/1.1 100 Continue\r\n\r\n");
    co_await s.write_all("data");
    n = co_await s.read_some(buf);
    std::string got(buf, n);
    EXPECT_EQ(status_line(got), "HTTP/1.1 200 OK");
    EXPECT_NE(got.find("PUT /f data"), std::string::npos);
    co_await s.close();
  });
  EXPECT_EQ(calls, 1);
}

TEST(Http, ShutdownLetsARunningRequestFinishWithinTheGraceAndClosesIdleConnectionsAtOnce) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  quell::test::log log;
  http::server srv{loopback, [&](http::request&) -> task<http::response> {
                     co_await quell::sleep_for(1s);
                     co_return http::response::text(200, "finished");
                   }};
  auto body = [&]() -> task<void> {
    auto sc = [&](quell::scope& s) -> task<void> {
      auto running = s.spawn(srv.run());
      auto idle = co_await http::client::connect(srv.local_address());
      auto busy = co_await http::client::connect(srv.local_address());
      auto first = co_await idle.get("/");  // now idle, kept alive
      EXPECT_TRUE(first.keep_alive);
      auto in_flight = s.spawn(busy.get("/"));
      co_await quell::sleep_for(100ms);
      srv.shutdown(5s);
      char b[8];
      std::size_t n = co_await idle.stream().read_some(b);
      log.print("idle connection closed (" + std::to_string(n) + ") at " + quell::test::at(clock));
      auto r = co_await in_flight;
      log.print("in-flight answered " + std::to_string(r.status) + " keep-alive " + std::to_string(r.keep_alive) +
                " at " + quell::test::at(clock));
      co_await busy.close();  // else the server lingers, waiting for it (linger_timeout)
      co_await running;
      log.print("run() returned at " + quell::test::at(clock));
      co_await idle.close();
    };
    co_await quell::with_scope(sc);
  };
  quell::executor ex{body(), clock};
  ex.run();
  // The first request took 1 s; shutdown at 1.1 s closes the idle one then; the other ends at 2 s.
  EXPECT_EQ(log.lines,
            (std::vector<std::string>{"idle connection closed (0) at 1100ms",
                                      "in-flight answered 200 keep-alive 0 at 2000ms", "run() returned at 2000ms"}));
}

TEST(Http, ShutdownCancelsRequestsStillRunningWhenTheGraceIsOverAndWaitsForTheirCleanup) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  quell::test::log log;
  http::server srv{
      loopback, [&](http::request&) -> task<http::response> {
        auto cleanup = [&]() -> task<void> {
          log.print("cleanup: " + quell::this_task::cancel_reason()->describe() + " at " + quell::test::at(clock));
          co_await quell::sleep_for(300ms);
          log.print("cleanup done at " + quell::test::at(clock));
        };
        co_await quell::on_cancel(quell::pending<void>(), cleanup);
        co_return http::response::text(200, "unreachable");
      }};
  auto body = [&]() -> task<void> {
    auto sc = [&](quell::scope& s) -> task<void> {
      auto running = s.spawn(srv.run());
      auto c = co_await http::client::connect(srv.local_address());
      auto req = [&]() -> task<void> {
        try {
          co_await c.get("/");
          log.print("client: unexpected response");
        } catch (const std::exception& e) {
          log.print("client: no response at " + quell::test::at(clock));
        }
      };
      auto pending = s.spawn(req);
      co_await quell::sleep_for(100ms);
      srv.shutdown(2s);
      co_await running;
      log.print("run() returned at " + quell::test::at(clock));
      co_await pending;
      co_await c.close();
    };
    co_await quell::with_scope(sc);
  };
  quell::executor ex{body(), clock};
  ex.run();
  EXPECT_EQ(log.lines,
            (std::vector<std::string>{"cleanup: shutdown: the grace period is over at 2100ms", "cleanup done at 2400ms",
                                      "run() returned at 2400ms", "client: no response at 2400ms"}));
}

TEST(Http, CancellingRunCancelsEveryHandlerAndEndsOnlyAfterTheirCleanup) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  quell::test::log log;
  http::server srv{loopback, [&](http::request&) -> task<http::response> {
                     auto cleanup = [&]() -> task<void> {
                       co_await quell::sleep_for(50ms);
                       log.print("cleanup done at " + quell::test::at(clock));
                     };
                     co_await quell::on_cancel(quell::pending<void>(), cleanup);
                     co_return http::response::text(200, "unreachable");
                   }};
  std::vector<http::client> clients(3);
  auto body = [&]() -> task<void> {
    auto sc = [&](quell::scope& s) -> task<void> {
      auto running = s.spawn(srv.run());
      for (auto& c : clients) {
        c = co_await http::client::connect(srv.local_address());
        auto one = [&c]() -> task<void> {
          try {
            co_await c.get("/");
          } catch (const std::exception&) {
          }
        };
        s.spawn(one);
      }
      co_await quell::sleep_for(10ms);
      EXPECT_EQ(srv.stats().requests_in_flight, 3u);
      running.cancel();
      co_await quell::sleep_for(1s);
      log.print("in flight " + std::to_string(srv.stats().requests_in_flight) + ", open " +
                std::to_string(srv.stats().connections_open));
      for (auto& c : clients) co_await c.close();
    };
    co_await quell::with_scope(sc);
  };
  quell::executor ex{body(), clock};
  ex.run();
  EXPECT_EQ(log.lines, (std::vector<std::string>{"cleanup done at 60ms", "cleanup done at 60ms", "cleanup done at 60ms",
                                                 "in flight 0, open 0"}));
}

TEST(Http, ACancelledClientRequestClosesTheConnectionSoTheServerCancelsItsHandler) {
  quell::virtual_clock clock;
  quell::event handler_cancelled;
  http::server srv{loopback, [&](http::request&) -> task<http::response> {
                     auto note = [&] { handler_cancelled.set(); };
                     co_await quell::on_cancel(quell::sleep_for(1h), note);
                     co_return http::response::text(200, "late");
                   }};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    auto c = co_await http::client::connect(a);
    auto r = co_await quell::move_on_after(10ms, c.get("/"));
    EXPECT_FALSE(r);
    EXPECT_FALSE(c.usable());
    EXPECT_THROW(co_await c.get("/"), std::logic_error);
    co_await handler_cancelled.wait();  // no close() from this side: request() closed it
    EXPECT_EQ(quell::test::at(clock), "10ms");
  });
  EXPECT_EQ(srv.stats().cancelled_by_disconnect, 1u);
}

TEST(Http, AHandlerThatEndsCancelledOnItsOwnGetsNoResponseAndItsConnectionCloses) {
  quell::virtual_clock clock;
  http::server srv{loopback, [&](http::request&) -> task<http::response> {
                     quell::cancel_source admin;
                     admin.cancel();  // the cancellation starts inside the handler, at a token
                     co_await quell::with_cancellation(admin.token(), quell::pending<void>());
                     co_return http::response::text(200, "unreachable");
                   }};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    std::string got = co_await exchange(a, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(got, "");
    EXPECT_EQ(quell::test::at(clock), "0ms") << "the connection should close at once, not wait for the peer";
    EXPECT_EQ(srv.stats().requests_in_flight, 0u);
  });
}

TEST(Http, AnUpgradeRequestWhoseBodyArrivesLaterIsAnsweredAsAPlainRequest) {
  quell::virtual_clock clock;
  int calls = 0;
  http::server srv{loopback, echo_handler(&calls)};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    auto s = co_await quell::tcp_stream::connect(a);
    co_await s.write_all(
        "POST /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 4\r\n\r\n");
    co_await quell::sleep_for(10ms);
    co_await s.write_all("data");
    std::string got;
    char buf[1024];
    while (std::size_t n = co_await s.read_some(buf)) got.append(buf, n);
    EXPECT_EQ(status_line(got), "HTTP/1.1 200 OK") << got;
    EXPECT_NE(got.find("POST /up data"), std::string::npos);
    EXPECT_NE(got.find("Connection: close"), std::string::npos);
    co_await s.close();
  });
  EXPECT_EQ(calls, 1);
}

TEST(Http, EmptyLinesBetweenRequestsAreSkippedNotTimedOut) {
  quell::virtual_clock clock;
  int calls = 0;
  http::server srv{loopback, echo_handler(&calls)};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    auto s = co_await quell::tcp_stream::connect(a);
    co_await s.write_all("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx\r\n");
    char buf[1024];
    std::size_t n = co_await s.read_some(buf);
    EXPECT_EQ(status_line(std::string(buf, n)), "HTTP/1.1 200 OK");
    co_await quell::sleep_for(20s);  // past the header timeout: the CRLF must not have started one
    co_await s.write_all("\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
    n = co_await s.read_some(buf);
    std::string got(buf, n);
    EXPECT_EQ(status_line(got), "HTTP/1.1 200 OK") << got;
    EXPECT_NE(got.find("GET /b "), std::string::npos) << got;
    co_await s.close();
  });
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(srv.stats().requests_rejected, 0u);
}

TEST(Http, TheClientReadsNoBodyFor304And204WhateverTheirContentLengthSays) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  auto body = [&]() -> task<void> {
    auto listener = quell::tcp_listener::bind(loopback);
    auto peer = [&]() -> task<void> {  // a server that sends the lengths a cache would
      auto conn = co_await listener.accept();
      char buf[1024];
      co_await conn.read_some(buf);
      co_await conn.write_all("HTTP/1.1 304 Not Modified\r\nContent-Length: 5120\r\n\r\n");
      co_await conn.read_some(buf);
      co_await conn.write_all("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n");
      co_await conn.read_some(buf);
      co_await conn.write_all("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
      co_await conn.read_some(buf);
      co_await conn.close();
    };
    auto both = [&](quell::scope& s) -> task<void> {
      s.spawn(peer);
      auto c = co_await http::client::connect(listener.local_address());
      auto r1 = co_await c.get("/cached");
      auto r2 = co_await c.get("/nothing");
      auto r3 = co_await c.get("/ok");
      EXPECT_EQ(r1.status, 304);
      EXPECT_EQ(r1.body, "");
      EXPECT_EQ(r2.status, 204);
      EXPECT_EQ(r3.body, "ok");
      co_await c.close();
    };
    co_await quell::with_scope(both);
    co_await listener.close();
  };
  quell::executor ex{body(), clock};
  ex.run();
}

TEST(Http, CancellingRunClosesTheListener) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  int calls = 0;
  http::server srv{loopback, echo_handler(&calls)};
  const quell::address where = srv.local_address();
  auto body = [&]() -> task<void> {
    auto sc = [&](quell::scope& s) -> task<void> {
      auto running = s.spawn(srv.run());
      co_await quell::sleep_for(10ms);
      running.cancel();
    };
    co_await quell::with_scope(sc);
    co_await quell::sleep_for(10ms);  // the background close
    try {
      auto c = co_await quell::tcp_stream::connect(where);
      ADD_FAILURE() << "connected to a server whose run() was cancelled";
      co_await c.close();
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code().value(), ECONNREFUSED);
    }
  };
  quell::executor ex{body(), clock};
  ex.run();
}

TEST(Http, RandomBytesGetA4xxOrAClosedConnectionAndLeaveNothingBehind) {
  quell::virtual_clock clock;
  int calls = 0;
  const std::size_t fds_before = open_fds();
  {
    http::server srv{loopback, echo_handler(&calls)};
    int answered = 0, closed = 0;
    serve_and(clock, srv, [&](quell::address a) -> task<void> {
      std::mt19937 rng(12345);
      for (int i = 0; i < 300; ++i) {
        std::string junk(1 + rng() % 3000, '\0');
        for (auto& ch : junk) ch = static_cast<char>(rng());
        if (i % 3 == 0) junk = "GET / HTTP/1.1\r\n" + junk;  // past the request line, into the headers
        std::string got = co_await exchange(a, junk, /*half_close=*/true);
        if (got.empty()) {
          ++closed;
        } else {
          ++answered;
          EXPECT_EQ(got.substr(0, 10), "HTTP/1.1 4") << i;
        }
      }
    });
    EXPECT_EQ(answered + closed, 300);
    EXPECT_GT(answered, 200);
    EXPECT_EQ(srv.stats().requests_in_flight, 0u);
    EXPECT_EQ(srv.stats().connections_open, 0u);
  }
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(open_fds(), fds_before);
}

TEST(Http, AResponseTheClientDoesNotReadIsAbandonedAfterTheWriteTimeout) {
  quell::virtual_clock clock;
  http::server_options o;
  o.write_timeout = 5s;
  http::server srv{loopback,
                   [&](http::request&) -> task<http::response> {
                     co_return http::response::text(200, std::string(64 * 1024 * 1024, 'x'));
                   },
                   o};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    auto s = co_await quell::tcp_stream::connect(a);
    co_await s.write_all("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    const quell::time_point start = quell::now();
    while (srv.stats().connections_open != 0) co_await quell::sleep_for(100ms);
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(quell::now() - start).count();
    EXPECT_GE(waited, 5000);
    EXPECT_LE(waited, 5100);
    co_await s.close();
  });
}

// ---- curl, a real HTTP client in another process ----

namespace {

// Runs the server on a real clock until curl (in another thread) has finished.
void serve_for_curl(http::server& srv, curl_run& curl) {
  auto body = [&]() -> task<void> {
    auto sc = [&](quell::scope& s) -> task<void> {
      s.spawn(srv.run());
      while (!curl.done) co_await quell::sleep_for(5ms);
      // curl has exited; give the server up to 2 s to notice its closed connection.
      for (int i = 0; i < 400 && srv.stats().connections_open != 0; ++i) co_await quell::sleep_for(5ms);
      srv.shutdown(0s);
    };
    co_await quell::with_scope(sc);
  };
  quell::block_on(body());
}

}  // namespace

TEST(HttpCurl, CurlReusesOneConnectionForTwoRequestsAndSendsAChunkedBody) {
  if (!have_curl()) GTEST_SKIP() << "curl is not installed";
  int calls = 0;
  http::server srv{loopback, echo_handler(&calls)};
  const std::string base = "http://" + srv.local_address().to_string();
  curl_run curl(base + "/one " + base + "/two -H 'Transfer-Encoding: chunked' --data-binary chunky");
  serve_for_curl(srv, curl);
  EXPECT_EQ(curl.status, 0) << curl.output;
  EXPECT_EQ(curl.output, "POST /one chunkyPOST /two chunky");
  EXPECT_EQ(srv.stats().connections_accepted, 1u);
  EXPECT_EQ(calls, 2);
}

TEST(HttpCurl, CurlGivingUpMidRequestCancelsTheHandlerWithPeerDisconnected) {
  if (!have_curl()) GTEST_SKIP() << "curl is not installed";
  std::string reason;
  bool cleaned_up = false;
  http::server srv{loopback, [&](http::request&) -> task<http::response> {
                     auto cleanup = [&]() -> task<void> {
                       reason = quell::this_task::cancel_reason()->describe();
                       co_await quell::sleep_for(20ms);
                       cleaned_up = true;
                     };
                     co_await quell::on_cancel(quell::pending<void>(), cleanup);
                     co_return http::response::text(200, "unreachable");
                   }};
  curl_run curl("--max-time 1 http://" + srv.local_address().to_string() + "/slow");
  serve_for_curl(srv, curl);
  EXPECT_NE(curl.status, 0);  // curl timed out
  EXPECT_EQ(reason, "peer disconnected");
  EXPECT_TRUE(cleaned_up);
  EXPECT_EQ(srv.stats().cancelled_by_disconnect, 1u);
  EXPECT_EQ(srv.stats().requests_in_flight, 0u);
}
