// quell::http::server over TLS (server_options::tls): curl --cacert against it, a quell TLS client
// speaking HTTP/1.1 by hand, a client that goes away cancelling its handler, and a client that
// does not speak TLS.
#include <gtest/gtest.h>

#include <string>

#include "quell/http.hpp"
#include "quell/quell.hpp"
#include "support/net_client.hpp"
#include "support/tls_certs.hpp"

using namespace std::chrono_literals;
namespace http = quell::http;
using quell::task;
using quell::tls_context;
using quell::tls_options;
using quell::tls_stream;
using quell::test::curl_run;
using quell::test::have_curl;
using quell::test::open_fds;
using quell::test::test_certs;

namespace {

const quell::address loopback = quell::address::parse("127.0.0.1", 0);

http::server_options https_options() {
  tls_options o;
  o.cert_chain_file = test_certs().path("leaf.pem");
  o.private_key_file = test_certs().path("leaf.key");
  o.verify_peer = false;
  http::server_options so;
  so.tls = tls_context::server(o);
  return so;
}

http::server::handler echo_handler(int* calls) {
  return [calls](http::request& r) -> task<http::response> {
    ++*calls;
    co_return http::response::text(200, r.method + " " + r.target + " " + r.body);
  };
}

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

task<tls_stream> tls_connect(quell::address a) {
  tls_options o;
  o.ca_file = test_certs().path("ca.pem");
  co_return co_await tls_stream::connect(co_await quell::tcp_stream::connect(a), tls_context::client(o), "localhost");
}

}  // namespace

TEST(Https, CurlVerifiesTheServerAndGetsItsAnswers) {
  if (!have_curl()) GTEST_SKIP() << "curl is not installed";
  int calls = 0;
  http::server srv{loopback, echo_handler(&calls), https_options()};
  const std::string base = "https://localhost:" + std::to_string(srv.local_address().port());
  curl_run curl("--cacert " + test_certs().path("ca.pem") +
                " --resolve localhost:" + std::to_string(srv.local_address().port()) + ":127.0.0.1 " + base + "/one " +
                base + "/two --data-binary body");
  auto body = [&]() -> task<void> {
    auto sc = [&](quell::scope& s) -> task<void> {
      s.spawn(srv.run());
      while (!curl.done) co_await quell::sleep_for(5ms);
      for (int i = 0; i < 400 && srv.stats().connections_open != 0; ++i) co_await quell::sleep_for(5ms);
      srv.shutdown(0s);
    };
    co_await quell::with_scope(sc);
  };
  quell::block_on(body());
  EXPECT_EQ(curl.status, 0) << curl.output;
  EXPECT_EQ(curl.output, "POST /one bodyPOST /two body");  // curl sends the data to both
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(srv.stats().connections_accepted, 1u);  // one connection, kept alive
}

TEST(Https, CurlRefusesTheServerWithoutTheCa) {
  if (!have_curl()) GTEST_SKIP() << "curl is not installed";
  int calls = 0;
  http::server srv{loopback, echo_handler(&calls), https_options()};
  curl_run curl("--resolve localhost:" + std::to_string(srv.local_address().port()) +
                ":127.0.0.1 https://localhost:" + std::to_string(srv.local_address().port()) + "/");
  auto body = [&]() -> task<void> {
    auto sc = [&](quell::scope& s) -> task<void> {
      s.spawn(srv.run());
      while (!curl.done) co_await quell::sleep_for(5ms);
      srv.shutdown(0s);
    };
    co_await quell::with_scope(sc);
  };
  quell::block_on(body());
  EXPECT_NE(curl.status, 0);
  EXPECT_NE(curl.output.find("certificate"), std::string::npos) << curl.output;
  EXPECT_EQ(calls, 0);
}

TEST(Https, AQuellTlsClientSpeaksHttpToTheServer) {
  quell::virtual_clock clock;
  int calls = 0;
  http::server srv{loopback, echo_handler(&calls), https_options()};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    auto t = co_await tls_connect(a);
    co_await t.write_all("GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    std::string got;
    char buf[1024];
    while (std::size_t n = co_await t.read_some(buf)) got.append(buf, n);  // ends with close_notify
    EXPECT_TRUE(got.starts_with("HTTP/1.1 200")) << got;
    EXPECT_TRUE(got.ends_with("\r\n\r\nGET /x ")) << got;
    co_await t.close();
  });
  EXPECT_EQ(calls, 1);
}

TEST(Https, AClientThatGoesAwayCancelsItsHandler) {
  quell::virtual_clock clock;
  bool cancelled = false;
  http::server srv{loopback,
                   [&](http::request&) -> task<http::response> {
                     auto hook = [&]() -> task<void> {
                       cancelled = true;
                       co_return;
                     };
                     co_await quell::on_cancel(quell::pending<void>(), hook);
                     co_return http::response::text(200, "unreachable");
                   },
                   https_options()};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    auto t = co_await tls_connect(a);
    co_await t.write_all("GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n");
    co_await quell::sleep_for(50ms);
    co_await t.close(0s);  // close_notify, then the socket closes
    for (int i = 0; i < 100 && !cancelled; ++i) co_await quell::sleep_for(10ms);
  });
  EXPECT_TRUE(cancelled);
  EXPECT_EQ(srv.stats().cancelled_by_disconnect, 1u);
  EXPECT_EQ(srv.stats().requests_in_flight, 0u);
}

TEST(Https, AClientThatDoesNotSpeakTlsIsClosedAndNothingLeaks) {
  const auto fds = open_fds();
  {
    quell::virtual_clock clock;
    int calls = 0;
    http::server srv{loopback, echo_handler(&calls), https_options()};
    serve_and(clock, srv, [&](quell::address a) -> task<void> {
      auto got = co_await quell::test::exchange(a, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
      EXPECT_EQ(got.find("HTTP/1.1"), std::string::npos) << got;  // an alert, not an answer
      // The server goes on serving TLS clients.
      auto t = co_await tls_connect(a);
      co_await t.write_all("GET /after HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
      std::string r;
      char buf[1024];
      while (std::size_t n = co_await t.read_some(buf)) r.append(buf, n);
      EXPECT_TRUE(r.ends_with("GET /after ")) << r;
      co_await t.close();
    });
    EXPECT_EQ(calls, 1);
  }
  EXPECT_EQ(open_fds(), fds);
}

namespace {
tls_context client_ctx(const std::string& ca) {
  tls_options o;
  o.ca_file = test_certs().path(ca);
  return tls_context::client(o);
}
}  // namespace

TEST(Https, TheQuellClientSpeaksHttpsByHostAndByUrl) {
  quell::virtual_clock clock;
  int calls = 0;
  http::server srv{loopback, echo_handler(&calls), https_options()};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    auto c = co_await http::client::connect("localhost", a.port(), client_ctx("ca.pem"));
    EXPECT_NE(c.tls(), nullptr);
    auto r1 = co_await c.get("/one");
    EXPECT_EQ(r1.status, 200);
    EXPECT_EQ(r1.body, "GET /one ");
    auto r2 = co_await c.request("POST", "/two", {}, std::string(100000, 'x'));  // several records
    EXPECT_EQ(r2.body, "POST /two " + std::string(100000, 'x'));
    EXPECT_TRUE(c.usable());
    co_await c.close();
    const std::string url = "https://localhost:" + std::to_string(a.port()) + "/ignored";
    auto u = co_await http::client::connect_url(url, {}, client_ctx("ca.pem"));
    auto r3 = co_await u.get("/three");
    EXPECT_EQ(r3.body, "GET /three ");
    co_await u.close();
  });
  EXPECT_EQ(calls, 3);
}

TEST(Https, TheQuellClientRefusesAServerItCannotVerify) {
  quell::virtual_clock clock;
  int calls = 0;
  http::server srv{loopback, echo_handler(&calls), https_options()};
  serve_and(clock, srv, [&](quell::address a) -> task<void> {
    std::string what;
    try {
      (void)co_await http::client::connect("localhost", a.port(), client_ctx("other-ca.pem"));
    } catch (const quell::tls_error& e) {
      what = e.what();
    }
    EXPECT_EQ(what, "tls handshake: certificate verify failed: unable to get local issuer certificate");
    bool bad = false;
    try {
      (void)co_await http::client::connect_url("ftp://localhost/");
    } catch (const std::invalid_argument&) {
      bad = true;
    }
    EXPECT_TRUE(bad);
  });
  EXPECT_EQ(calls, 0);
}
