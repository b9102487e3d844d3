// tls_stream against real peers: `openssl s_server` / `s_client` child processes, certificates the
// test makes with the openssl CLI (a CA, a leaf it signed, an expired one, one for another host, a
// self-signed one), and a quell client with a quell server on loopback. The loopback tests run on
// a virtual clock (deadlines and the write tail's bound are virtual); the ones with an openssl
// child use real time, with generous bounds only as hang guards.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <tuple>

#include "quell/quell.hpp"
#include "quell/testing.hpp"
#include "support/net_client.hpp"
#include "support/tls_certs.hpp"

using namespace std::chrono_literals;
using quell::address;
using quell::task;
using quell::tcp_listener;
using quell::tcp_stream;
using quell::tls_context;
using quell::tls_error;
using quell::tls_options;
using quell::tls_stream;
using quell::test::open_fds;
using quell::test::test_certs;

namespace {

const address loopback = address::parse("127.0.0.1", 0);

tls_options server_options(const std::string& name = "leaf") {
  tls_options o;
  o.cert_chain_file = test_certs().path(name + ".pem");
  o.private_key_file = test_certs().path(name + ".key");
  o.verify_peer = false;
  return o;
}

tls_options client_options(const std::string& ca = "ca.pem") {
  tls_options o;
  o.ca_file = test_certs().path(ca);
  return o;
}

std::uint16_t free_port() {
  auto l = tcp_listener::bind(loopback);
  return l.local_address().port();  // closed when `l` goes; s_server binds it next (SO_REUSEADDR)
}

// Connects to 127.0.0.1:port, retrying while the child starts listening (a hang guard: 10 s).
task<tcp_stream> connect_when_listening(std::uint16_t port) {
  for (int i = 0;; ++i) {
    try {
      co_return co_await tcp_stream::connect(address::parse("127.0.0.1", port));
    } catch (const std::system_error&) {
      if (i == 500) throw;
    }
    co_await quell::sleep_for(20ms);
  }
}

// `openssl s_server` presenting `cert` on a free port: echoes each line reversed (-rev), serves
// one connection.
quell::process openssl_server(const std::string& cert, std::uint16_t port) {
  quell::spawn_options o;
  o.program = "openssl";
  o.args = {"s_server",
            "-accept",
            "127.0.0.1:" + std::to_string(port),
            "-cert",
            test_certs().path(cert + ".pem"),
            "-key",
            test_certs().path(cert + ".key"),
            "-naccept",
            "1",
            "-rev",
            "-quiet"};
  o.std_in = quell::stdio::null;
  o.std_out = quell::stdio::null;
  o.std_err = quell::stdio::null;
  return quell::process::spawn(o);
}

task<> stop(quell::process& p) {
  p.send_signal(SIGTERM);
  (void)co_await p.wait();
}

// A quell client's handshake with an openssl server presenting `cert`; the error message, or
// "ok" and the reversed echo of "hello".
task<std::string> client_against(std::string cert, tls_options opts, std::string host) {
  const auto port = free_port();
  auto p = openssl_server(cert, port);
  std::string result;
  try {
    auto tcp = co_await connect_when_listening(port);
    auto t = co_await quell::timeout(10s, tls_stream::connect(std::move(tcp), tls_context::client(opts), host));
    co_await t.write_all("hello\n");
    char buf[6];
    co_await t.read_exact(buf);
    result = "ok " + std::string(buf, 6) + " " + t.protocol_version();
    co_await t.close(1s);
  } catch (const tls_error& e) {
    result = e.what();
  }
  co_await stop(p);
  co_return result;
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// A loopback pair: a quell server and a quell client, handshaken. `small_buffers`: the kernel
// holds little of what the client sends (set on the listener, before the connection: shrinking
// a connected socket's receive buffer leaves the peer in slow zero-window probing).
task<std::tuple<tls_stream, tls_stream>> tls_pair(tls_options client_opts = client_options(),
                                                  bool small_buffers = false) {
  auto l = tcp_listener::bind(loopback);
  int small = 16384;
  if (small_buffers) ::setsockopt(l.native_handle(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  auto [a, c] = co_await quell::join(l.accept(), tcp_stream::connect(l.local_address()));
  auto [srv, cli] =
      co_await quell::join(tls_stream::accept(std::move(a), tls_context::server(server_options())),
                           tls_stream::connect(std::move(c), tls_context::client(client_opts), "localhost"));
  if (small_buffers) ::setsockopt(cli.next_layer().native_handle(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  co_return std::tuple<tls_stream, tls_stream>(std::move(srv), std::move(cli));
}

task<std::string> read_all(tls_stream& s) {
  std::string out;
  char buf[8192];
  while (std::size_t n = co_await s.read_some(buf)) out.append(buf, n);
  co_return out;
}

template <class Body>
void on_virtual_clock(Body body) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  quell::executor ex{body(), clock};
  ex.run();
}

}  // namespace

TEST(Tls, AQuellClientVerifiesAnOpensslServerAndTalksToIt) {
  auto got = quell::block_on(client_against("leaf", client_options(), "localhost"));
  EXPECT_EQ(got, "ok olleh\n TLSv1.3");
}

TEST(Tls, AnUntrustedCertificateIsAClearError) {
  // Signed by a CA the client does not trust.
  EXPECT_EQ(quell::block_on(client_against("leaf", client_options("other-ca.pem"), "localhost")),
            "tls handshake: certificate verify failed: unable to get local issuer certificate");
  EXPECT_EQ(quell::block_on(client_against("self", client_options(), "localhost")),
            "tls handshake: certificate verify failed: self-signed certificate");
}

TEST(Tls, AnExpiredCertificateIsAClearError) {
  EXPECT_EQ(quell::block_on(client_against("expired", client_options(), "localhost")),
            "tls handshake: certificate verify failed: certificate has expired");
}

TEST(Tls, AWrongHostNameIsAClearError) {
  EXPECT_EQ(quell::block_on(client_against("wronghost", client_options(), "localhost")),
            "tls handshake: certificate verify failed: hostname mismatch");
  // The same certificate is fine for the name it was made for.
  auto got = quell::block_on(client_against("wronghost", client_options(), "wrong.example"));
  EXPECT_TRUE(got.starts_with("ok olleh")) << got;
}

TEST(Tls, TheErrorCarriesOpensslsReasonCodeAndTheVerifyResult) {
  auto body = []() -> task<> {
    const auto port = free_port();
    auto p = openssl_server("self", port);
    try {
      auto tcp = co_await connect_when_listening(port);
      (void)co_await tls_stream::connect(std::move(tcp), tls_context::client(client_options()), "localhost");
      ADD_FAILURE() << "the handshake succeeded";
    } catch (const tls_error& e) {
      EXPECT_EQ(e.code().category(), quell::tls_category());
      EXPECT_EQ(e.code().message(), "certificate verify failed");
      EXPECT_EQ(e.verify_result(), 18);  // X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    }
    co_await stop(p);
  };
  quell::block_on(body());
}

TEST(Tls, BadContextFilesAreClearErrors) {
  tls_options o = server_options();
  o.private_key_file = test_certs().path("other-ca.key");  // not the certificate's key
  try {
    (void)tls_context::server(o);
    ADD_FAILURE() << "a mismatched key was accepted";
  } catch (const tls_error& e) {
    EXPECT_STREQ(e.what(), ("tls private key " + o.private_key_file + ": key values mismatch").c_str());
  }
  o = server_options();
  o.cert_chain_file = "/nonexistent.pem";
  try {
    (void)tls_context::server(o);
    ADD_FAILURE() << "a missing file was accepted";
  } catch (const tls_error& e) {
    EXPECT_STREQ(e.what(), "tls certificate chain /nonexistent.pem: No such file or directory");
  }
  EXPECT_THROW((void)tls_context::server(tls_options{}), std::invalid_argument);
  auto body = []() -> task<> {
    auto l = tcp_listener::bind(loopback);
    auto [a, c] = co_await quell::join(l.accept(), tcp_stream::connect(l.local_address()));
    // A client that verifies must know whom it expects.
    EXPECT_THROW(tls_stream(std::move(c), tls_context::client(client_options())), std::invalid_argument);
  };
  quell::block_on(body());
}

TEST(Tls, AnOpensslClientVerifiesAQuellServerAndTalksToIt) {
  auto body = []() -> task<> {
    auto l = tcp_listener::bind(loopback);
    quell::spawn_options o;
    o.program = "openssl";
    o.args = {"s_client",
              "-connect",
              l.local_address().to_string(),
              "-CAfile",
              test_certs().path("ca.pem"),
              "-verify_return_error",
              "-servername",
              "localhost",
              "-alpn",
              "h2,http/1.1",
              "-quiet"};
    o.std_in = o.std_out = quell::stdio::pipe;
    o.std_err = quell::stdio::null;
    auto p = quell::process::spawn(o);
    tls_options so = server_options();
    so.alpn = {"http/1.1"};
    auto t = co_await quell::timeout(10s, tls_stream::accept(co_await l.accept(), tls_context::server(so)));
    EXPECT_EQ(t.alpn_protocol(), "http/1.1");
    co_await p.std_in().write_all("ping\n");
    char buf[5];
    co_await quell::timeout(10s, t.read_exact(buf));
    EXPECT_EQ(std::string(buf, 5), "ping\n");
    co_await t.write_all("pong\n");
    co_await t.close(2s);
    std::string out;
    char rb[256];
    while (std::size_t n = co_await quell::timeout(10s, p.std_out().read_some(rb))) out.append(rb, n);
    EXPECT_EQ(out, "pong\n");
    co_await p.std_in().close();
    co_await stop(p);
  };
  quell::block_on(body());
}

TEST(Tls, APeerThatStallsMidHandshakeIsEndedByTheDeadlineAndNothingLeaks) {
  const auto fds = open_fds();
  on_virtual_clock([]() -> task<> {
    auto l = tcp_listener::bind(loopback);
    // The peer accepts and never says a word.
    auto [a, c] = co_await quell::join(l.accept(), tcp_stream::connect(l.local_address()));
    const auto before = quell::now();
    bool timed_out = false;
    try {
      (void)co_await quell::timeout(
          5s, tls_stream::connect(std::move(c), tls_context::client(client_options()), "localhost"));
    } catch (const quell::timed_out&) {
      timed_out = true;
    }
    EXPECT_TRUE(timed_out);
    EXPECT_EQ(quell::now() - before, 5s);
    // And a server whose client never sends the ClientHello.
    auto [a2, c2] = co_await quell::join(l.accept(), tcp_stream::connect(l.local_address()));
    auto o =
        co_await quell::move_on_after(3s, tls_stream::accept(std::move(a2), tls_context::server(server_options())));
    EXPECT_FALSE(o.has_value());
    co_await a.close();
    co_await c2.close();
  });
  EXPECT_EQ(open_fds(), fds);
}

TEST(Tls, OneMegabyteEachWayArrivesExactly) {
  on_virtual_clock([]() -> task<> {
    auto pair = co_await tls_pair();
    auto& srv = std::get<0>(pair);  // (clang 14 cannot capture structured bindings)
    auto& cli = std::get<1>(pair);
    EXPECT_EQ(cli.protocol_version(), "TLSv1.3");
    const std::string up = random_bytes(1 << 20, 1), down = random_bytes(1 << 20, 2);
    auto side = [](tls_stream& s, const std::string& out) -> task<std::string> {
      auto send = [&]() -> task<> {
        std::size_t w = 0;
        co_await s.write_all(out, &w);
        EXPECT_EQ(w, out.size());
      };
      auto receive = [&]() -> task<std::string> {
        std::string in(1 << 20, '\0');
        co_await s.read_exact(in);
        co_return in;
      };
      auto [sent, in] = co_await quell::join(send(), receive());
      co_return in;
    };
    auto [at_server, at_client] = co_await quell::join(side(srv, down), side(cli, up));
    EXPECT_TRUE(at_server == up);
    EXPECT_TRUE(at_client == down);
    // close_notify both ways.
    co_await quell::join(srv.close(), cli.close());
    EXPECT_FALSE(srv.is_open());
  });
}

TEST(Tls, AReadCancelledAfterItsRecordArrivedKeepsItsBytes) {
  on_virtual_clock([]() -> task<> {
    auto pair = co_await tls_pair();
    auto& srv = std::get<0>(pair);  // (clang 14 cannot capture structured bindings)
    auto& cli = std::get<1>(pair);
    co_await srv.write_all("abc");
    // read_exact decrypts "abc", then waits for 7 more bytes; the deadline cancels it.
    char buf[10];
    auto o = co_await quell::move_on_after(1s, cli.read_exact(buf));
    EXPECT_FALSE(o.has_value());
    EXPECT_EQ(cli.buffered(), 3u);
    // A read_some that finished at once but lost a race gives its bytes back.
    char one[1];
    auto r = co_await quell::race(quell::ready(std::size_t{99}), cli.read_some(one));
    EXPECT_EQ(r, 99u);
    EXPECT_EQ(cli.buffered(), 3u);
    co_await srv.write_all("defghij");
    co_await cli.read_exact(buf);
    EXPECT_EQ(std::string(buf, 10), "abcdefghij");
    co_await quell::join(srv.close(), cli.close());
  });
}

TEST(Tls, TheRecordAWriteWasSendingGoesOutWholeAndWrittenCountsWholeRecords) {
  on_virtual_clock([]() -> task<> {
    auto pair = co_await tls_pair(client_options(), true);
    auto& srv = std::get<0>(pair);  // (clang 14 cannot capture structured bindings)
    auto& cli = std::get<1>(pair);
    const std::string data = random_bytes(8 << 20, 3);
    std::size_t written = 0;
    auto writer = [&]() -> task<> {
      // The server does not read for 2 s: the write blocks mid-record, the cancel comes at 1 s
      // and is held back until the record is out (the bound is 5 s).
      auto o = co_await quell::move_on_after(1s, cli.write_all(data, &written));
      EXPECT_FALSE(o.has_value());
      EXPECT_GT(written, 0u);
      EXPECT_LT(written, data.size());
      EXPECT_EQ(written % 16384, 0u);
      co_await cli.write_all("END");  // the stream is fine: the record went out whole
      co_await cli.close();
    };
    auto reader = [&]() -> task<std::string> {
      co_await quell::sleep_for(2s);
      co_return co_await read_all(srv);
    };
    auto [w, got] = co_await quell::join(writer(), reader());
    EXPECT_EQ(got.size(), written + 3);
    EXPECT_TRUE(got == data.substr(0, written) + "END");
    co_await srv.close();
  });
}

TEST(Tls, ARecordThatCannotGoOutWithinTheBoundIsCutAndTheSendingSideIsOver) {
  on_virtual_clock([]() -> task<> {
    tls_options co = client_options();
    co.record_tail_bound = 2s;
    auto pair = co_await tls_pair(co, true);
    auto& srv = std::get<0>(pair);  // (clang 14 cannot capture structured bindings)
    auto& cli = std::get<1>(pair);
    const std::string data = random_bytes(8 << 20, 4);
    std::size_t written = 0;
    auto writer = [&]() -> task<> {
      auto o = co_await quell::move_on_after(1s, cli.write_all(data, &written));
      EXPECT_FALSE(o.has_value());
      EXPECT_EQ(written % 16384, 0u);
      bool refused = false;
      try {
        co_await cli.write_all("more");
      } catch (const std::system_error& e) {
        refused = e.code() == std::errc::broken_pipe;
      }
      EXPECT_TRUE(refused);
      co_await cli.close();  // just closes
    };
    auto reader = [&]() -> task<std::string> {
      co_await quell::sleep_for(10s);  // past the bound
      std::string got;
      try {
        got = co_await read_all(srv);
        ADD_FAILURE() << "a cut record went unnoticed";
      } catch (const tls_error&) {
      }
      co_return got;
    };
    auto [w, got] = co_await quell::join(writer(), reader());
    (void)got;
    co_await srv.close();
  });
}

// Handshake, a request of two records and an answer, close_notify both ways; cancelled at every
// suspension point and in every completion window, gracefully and forced. Whatever arrived is a
// prefix of what was sent, `written` is on a record boundary, and no descriptor leaks.
TEST(Tls, ALoopbackExchangeCancelledAnywhereLosesNothingAndLeaksNothing) {
  const std::string request = random_bytes(20000, 5), answer = random_bytes(3000, 6);
  std::string at_server, at_client;
  std::size_t written = 0;
  bool server_done = false, client_done = false;
  const auto fds = open_fds();
  auto report = quell::testing::cancel_sweep(
      [&](quell::virtual_clock& clock) -> task<> {
        clock.set_io_grace(20ms);
        at_server.clear();
        at_client.clear();
        written = 0;
        server_done = client_done = false;
        return [](const std::string& req, const std::string& ans, std::string& got_s, std::string& got_c,
                  std::size_t& w, bool& sd, bool& cd) -> task<> {
          auto l = tcp_listener::bind(loopback);
          auto server = [&]() -> task<> {
            auto t = co_await tls_stream::accept(co_await l.accept(), tls_context::server(server_options()));
            std::string buf(req.size(), '\0');
            auto keep = [&]() -> task<> {
              char b[4096];
              while (got_s.size() < req.size()) {
                const std::size_t n =
                    co_await t.read_some(std::span<char>(b, std::min(sizeof b, req.size() - got_s.size())));
                if (n == 0) co_return;
                got_s.append(b, n);
              }
            };
            co_await keep();
            co_await t.write_all(ans);
            co_await t.close();
            sd = true;
          };
          auto client = [&]() -> task<> {
            auto t = co_await tls_stream::connect(co_await tcp_stream::connect(l.local_address()),
                                                  tls_context::client(client_options()), "localhost");
            co_await t.write_all(req, &w);
            std::string buf(ans.size(), '\0');
            co_await t.read_exact(buf);
            got_c = buf;
            co_await t.close();
            cd = true;
          };
          co_await quell::join(server(), client());
        }(request, answer, at_server, at_client, written, server_done, client_done);
      },
      [&](const quell::testing::sweep_point& pt) {
        EXPECT_TRUE(request.starts_with(at_server)) << pt.describe();
        EXPECT_TRUE(written == request.size() || written % 16384 == 0) << pt.describe() << ": " << written;
        if (pt.outcome == quell::testing::sweep_point::ended::value) {
          EXPECT_TRUE(at_server == request) << pt.describe();
          EXPECT_TRUE(at_client == answer) << pt.describe();
          EXPECT_TRUE(server_done && client_done) << pt.describe();
        }
        if (pt.outcome == quell::testing::sweep_point::ended::error) {
          try {
            std::rethrow_exception(pt.error);
          } catch (const std::exception& e) {
            ADD_FAILURE() << pt.describe() << ": " << e.what();
          }
        }
      });
  EXPECT_GT(report.points, 10u);
  EXPECT_GT(report.completions, 5u);
  EXPECT_EQ(open_fds(), fds);
}

TEST(Tls, RandomBytesInsteadOfAClientHelloAreAClearErrorNeverACrash) {
  const auto fds = open_fds();
  on_virtual_clock([]() -> task<> {
    auto ctx = tls_context::server(server_options());
    auto l = tcp_listener::bind(loopback);
    for (unsigned seed = 1; seed <= 8; ++seed) {
      std::string junk = random_bytes(10000, seed);
      if (seed % 2 == 0) junk.replace(0, 5, std::string("\x16\x03\x01\x27\x10", 5));  // a plausible record header
      auto conns = co_await quell::join(l.accept(), tcp_stream::connect(l.local_address()));
      auto& a = std::get<0>(conns);
      auto& c = std::get<1>(conns);
      auto server = [&]() -> task<std::string> {
        try {
          (void)co_await tls_stream::accept(std::move(a), ctx);
        } catch (const tls_error& e) {
          co_return e.what();
        } catch (const std::system_error& e) {  // the peer reset after our alert
          co_return e.what();
        }
        co_return "accepted";
      };
      auto peer = [&]() -> task<> {
        try {
          co_await c.write_all(junk);
          c.shutdown(SHUT_WR);
          (void)co_await quell::test::read_to_end(c);
        } catch (const std::system_error&) {
        }
        co_await c.close();
      };
      auto [what, done] = co_await quell::join(server(), peer());
      EXPECT_TRUE(what.starts_with("tls handshake: ")) << "seed " << seed << ": " << what;
    }
  });
  EXPECT_EQ(open_fds(), fds);
}

TEST(Tls, OperationsOnAStreamThatIsNotOpenAreClearErrors) {
  on_virtual_clock([]() -> task<> {
    tls_stream none;
    char b[4];
    bool threw = false;
    try {
      (void)co_await none.read_some(b);
    } catch (const std::system_error& e) {
      threw = e.code() == std::errc::bad_file_descriptor;
    }
    EXPECT_TRUE(threw);
    auto pair = co_await tls_pair();
    auto& srv = std::get<0>(pair);  // (clang 14 cannot capture structured bindings)
    auto& cli = std::get<1>(pair);
    co_await quell::join(srv.close(), cli.close());
    threw = false;
    try {
      co_await cli.write_all("x");
    } catch (const std::system_error& e) {
      threw = e.code() == std::errc::bad_file_descriptor;
    }
    EXPECT_TRUE(threw);
  });
}
