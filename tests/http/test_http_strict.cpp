// Strict HTTP/1.1 framing (RFC 9112): each rule a lenient parser breaks, first on the parser alone
// (whole, and one byte at a time: the answer must not depend on how the bytes arrive), then end to
// end as a smuggling suite against a real server: every attack gets exactly one answer (a 4xx/5xx,
// the handler never called) and the request hidden inside it never reaches the handler.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "http/parser.hpp"
#include "quell/http.hpp"
#include "quell/quell.hpp"
#include "support/net_client.hpp"

using namespace std::chrono_literals;
namespace http = quell::http;
using http::detail::message_parser;
using quell::task;

namespace {

using namespace std::string_literals;

struct outcome {
  int status = 0;  // 0: accepted
  bool complete = false;
  std::size_t used = 0;
  std::string target, body;
  std::size_t headers = 0;
};

outcome parse(message_parser::kind k, const std::string& bytes, bool byte_at_a_time) {
  message_parser p(k, 1024, 1024);
  outcome o;
  if (byte_at_a_time) {
    for (std::size_t i = 0; i < bytes.size() && !p.complete() && !p.failed(); ++i) o.used += p.feed(&bytes[i], 1);
  } else {
    o.used = p.feed(bytes.data(), bytes.size());
  }
  o.status = p.failed() ? p.error_status() : 0;
  o.complete = p.complete();
  o.target = p.target;
  o.body = p.body;
  o.headers = p.headers.size();
  return o;
}

// Parses both ways and checks they agree; returns the answer.
outcome parse_request(const std::string& bytes) {
  auto whole = parse(message_parser::kind::request, bytes, false);
  auto bytewise = parse(message_parser::kind::request, bytes, true);
  EXPECT_EQ(whole.status, bytewise.status) << bytes;
  EXPECT_EQ(whole.complete, bytewise.complete) << bytes;
  EXPECT_EQ(whole.body, bytewise.body) << bytes;
  if (whole.complete) {
    EXPECT_EQ(whole.used, bytewise.used) << bytes;
  }
  return whole;
}

const std::string smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

struct attack {
  const char* rule;
  std::string bytes;
  int status;  // what the server must answer, alone
};

// Each is one request as a strict server reads it, hiding `smuggled` where a lenient one would
// see a second request.
std::vector<attack> attacks() {
  const std::string post = "POST / HTTP/1.1\r\nHost: x\r\n";
  const std::string end0 = "0\r\n\r\n";
  return {
      {"CL.TE: Content-Length and Transfer-Encoding together (RFC 9112 6.3)",
       post + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + end0 + smuggled, 400},
      {"TE.CL: Transfer-Encoding and Content-Length together (RFC 9112 6.3)",
       post + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n23\r\n" + smuggled + "\r\n" + end0, 400},
      {"TE.TE: whitespace before the colon (RFC 9112 5.1)",
       post + "Transfer-Encoding : chunked\r\n\r\n" + end0 + smuggled, 400},
      {"TE.TE: Transfer-Encoding folded onto a continuation line (obs-fold, RFC 9112 5.2)",
       post + "X: y\r\n Transfer-Encoding: chunked\r\n\r\n" + end0 + smuggled, 400},
      {"TE.TE: the value on a continuation line (obs-fold)",
       post + "Transfer-Encoding:\r\n chunked\r\n\r\n" + end0 + smuggled, 400},
      {"TE.TE: an unknown coding (RFC 9112 6.1)", post + "Transfer-Encoding: xchunked\r\n\r\n" + end0 + smuggled, 400},
      {"TE.TE: chunked, then another coding last",
       post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n" + end0 + smuggled, 400},
      {"TE.TE: chunked twice", post + "Transfer-Encoding: chunked, chunked\r\n\r\n" + end0 + smuggled, 400},
      {"TE.TE: a quoted coding", post + "Transfer-Encoding: \"chunked\"\r\n\r\n" + end0 + smuggled, 400},
      {"TE.TE: a coding before chunked that is not implemented",
       post + "Transfer-Encoding: gzip, chunked\r\n\r\n" + end0 + smuggled, 501},
      {"Transfer-Encoding in HTTP/1.0 (RFC 9112 6.1)",
       "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + end0 + smuggled, 400},
      {"two Content-Lengths that differ (RFC 9112 6.3)",
       post + "Content-Length: 0\r\nContent-Length: 36\r\n\r\n" + smuggled, 400},
      {"a Content-Length list", post + "Content-Length: 0, 36\r\n\r\n" + smuggled, 400},
      {"a Content-Length with a sign", post + "Content-Length: +0\r\n\r\n" + smuggled, 400},
      {"a Content-Length in hex", post + "Content-Length: 0x0\r\n\r\n" + smuggled, 400},
      {"bare LF line endings (RFC 9112 2.2)", "POST / HTTP/1.1\nHost: x\nContent-Length: 0\n\n" + smuggled, 400},
      {"a bare LF hiding a header", post + "X: y\nTransfer-Encoding: chunked\r\n\r\n" + end0 + smuggled, 400},
      {"a bare CR hiding a header", post + "X: y\rTransfer-Encoding: chunked\r\n\r\n" + end0 + smuggled, 400},
      {"a NUL in a header value (RFC 9110 5.5)", post + "X: a\0b\r\nContent-Length: 0\r\n\r\n"s + smuggled, 400},
      {"a space inside a header name (RFC 9112 5.1)", post + "Foo Bar: x\r\nContent-Length: 0\r\n\r\n" + smuggled, 400},
      {"whitespace before the first header (RFC 9112 2.2)",
       "POST / HTTP/1.1\r\n Host: x\r\nContent-Length: 0\r\n\r\n" + smuggled, 400},
      {"chunk data followed by bytes other than CRLF (RFC 9112 7.1)",
       post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcXX\r\n" + end0 + smuggled, 400},
      {"a chunk shorter than its size", post + "Transfer-Encoding: chunked\r\n\r\n1\r\nab\r\n" + end0 + smuggled, 400},
      {"a chunk size followed by a space (RFC 9112 7.1)",
       post + "Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n" + end0 + smuggled, 400},
      {"a negative chunk size", post + "Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n" + end0 + smuggled, 400},
      {"a chunk size with 0x", post + "Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n" + end0 + smuggled, 400},
      {"a chunk size that overflows 64 bits to a small one",
       post + "Transfer-Encoding: chunked\r\n\r\n10000000000000003\r\nabc\r\n" + end0 + smuggled, 413},
      {"a last chunk without the empty line: the next request line is not a trailer",
       post + "Transfer-Encoding: chunked\r\n\r\n0\r\n" + smuggled, 400},
      {"a trailer folded onto a continuation line",
       post + "Transfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n z\r\n\r\n" + smuggled, 400},
      {"a double space in the request line (RFC 9112 3)", "POST  / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + smuggled, 400},
      {"a double space before the version", "POST /  HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + smuggled, 400},
      {"tabs in the request line", "POST\t/\tHTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + smuggled, 400},
      {"a space after the version", "POST / HTTP/1.1 \r\nHost: x\r\nContent-Length: 0\r\n\r\n" + smuggled, 400},
      {"an HTTP/1.1 request without Host (RFC 9112 3.2)", "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n" + smuggled, 400},
      {"two Hosts (RFC 9112 3.2)", post + "Host: y\r\nContent-Length: 0\r\n\r\n" + smuggled, 400},
      {"a Host with a space", "POST / HTTP/1.1\r\nHost: a b\r\nContent-Length: 0\r\n\r\n" + smuggled, 400},
      {"a request target with a non-ASCII byte", "POST /\x80 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + smuggled, 400},
      {"a request target in no form (RFC 9112 3.2)", "POST x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + smuggled, 400},
      {"a lower-case version (RFC 9112 2.3)", "POST / http/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + smuggled, 400},
      {"a two-digit minor version", "POST / HTTP/1.10\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + smuggled, 400},
      {"HTTP/2.0 in an HTTP/1 request line", "POST / HTTP/2.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + smuggled, 505},
  };
}

struct valid {
  const char* what;
  std::string bytes;
  std::string target, body;
};

std::vector<valid> valids() {
  return {
      {"tab as whitespace, a coding in capitals, a chunk extension and a trailer",
       "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tCHUNKED\r\n\r\n3;name=val\r\nabc\r\n0\r\nX-T: t\r\n\r\n", "/p",
       "abc"},
      {"a trailer saying Content-Length is dropped",
       "POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nContent-Length: 9\r\n\r\n", "/t",
       "hi"},
      {"two equal Content-Lengths", "POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
       "/cl", "abc"},
      {"the absolute form", "GET http://x/abs HTTP/1.1\r\nHost: x\r\n\r\n", "http://x/abs", ""},
      {"the asterisk form", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", "*", ""},
      {"HTTP/1.0 without Host", "GET /old HTTP/1.0\r\n\r\n", "/old", ""},
      {"empty lines before the request line", "\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n", "/after", ""},
      {"obs-text in a header value", "GET /utf8 HTTP/1.1\r\nHost: x\r\nX: caf\xc3\xa9\r\n\r\n", "/utf8", ""},
      {"a method libhttp-parser did not know", "BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", "/pot", ""},
  };
}

std::size_t count_responses(const std::string& got) {
  // Status lines: at the start, or at the start of a line (bodies here never start a line with it).
  std::size_t n = got.rfind("HTTP/1.1 ", 0) == 0 ? 1 : 0;
  for (auto at = got.find("\nHTTP/1.1 "); at != std::string::npos; at = got.find("\nHTTP/1.1 ", at + 1)) ++n;
  return n;
}

}  // namespace

TEST(HttpParser, EveryAttackIsRejectedWithItsStatusWholeOrByteByByte) {
  for (const auto& a : attacks()) {
    auto o = parse_request(a.bytes);
    EXPECT_EQ(o.status, a.status) << a.rule;
    EXPECT_FALSE(o.complete) << a.rule;
  }
}

TEST(HttpParser, EveryValidRequestIsAcceptedAndStopsAtItsLastByte) {
  for (const auto& v : valids()) {
    const std::string next = "GET /next HTTP/1.1\r\nHost: x\r\n\r\n";
    auto o = parse_request(v.bytes + next);
    EXPECT_EQ(o.status, 0) << v.what;
    EXPECT_TRUE(o.complete) << v.what;
    EXPECT_EQ(o.used, v.bytes.size()) << v.what;  // the pipelined request is left for the next call
    EXPECT_EQ(o.target, v.target) << v.what;
    EXPECT_EQ(o.body, v.body) << v.what;
  }
}

TEST(HttpParser, AnswerDoesNotDependOnWhereTheBytesAreSplit) {
  std::vector<std::string> all;
  for (const auto& a : attacks()) all.push_back(a.bytes);
  for (const auto& v : valids()) all.push_back(v.bytes);
  for (const auto& bytes : all) {
    auto whole = parse(message_parser::kind::request, bytes, false);
    for (std::size_t cut = 1; cut < bytes.size(); ++cut) {
      message_parser p(message_parser::kind::request, 1024, 1024);
      std::size_t used = p.feed(bytes.data(), cut);
      if (!p.complete() && !p.failed()) used += p.feed(bytes.data() + used, bytes.size() - used);
      ASSERT_EQ(p.failed() ? p.error_status() : 0, whole.status) << bytes << " cut at " << cut;
      if (!p.failed()) {
        ASSERT_EQ(p.body, whole.body);
      }
    }
  }
}

TEST(HttpParser, HttpZeroNineIsRejectedAsSoonAsItsLineEnds) {
  message_parser p(message_parser::kind::request, 1024, 1024);
  p.feed("GET /\r\n", 7);
  EXPECT_TRUE(p.failed());
  EXPECT_EQ(p.error_status(), 400);
  EXPECT_NE(p.error_text().find("HTTP/0.9"), std::string::npos);
}

TEST(HttpParser, TheClientRejectsResponsesWhoseFramingIsAmbiguous) {
  const std::string bad[] = {
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n",
      "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nab",
      "HTTP/1.1 20 OK\r\n\r\n",
      "HTTP/2 200 OK\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",
  };
  for (const auto& b : bad) {
    auto o = parse(message_parser::kind::response, b, false);
    EXPECT_NE(o.status, 0) << b;
  }
  // A status line without a reason phrase, or without the space before it, frames nothing: kept.
  for (const std::string ok : {"HTTP/1.1 204\r\n\r\n", "HTTP/1.1 204 \r\n\r\n"}) {
    auto o = parse(message_parser::kind::response, ok, false);
    EXPECT_EQ(o.status, 0) << ok;
    EXPECT_TRUE(o.complete) << ok;
  }
}

TEST(HttpStrict, EveryAttackGetsExactlyOneAnswerAndTheHiddenRequestNeverRuns) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  std::vector<std::string> seen;
  http::server srv{quell::address::parse("127.0.0.1", 0), [&](http::request& r) -> task<http::response> {
                     seen.push_back(r.target);
                     co_return http::response::text(200, "ok\n");
                   }};
  auto body = [&]() -> task<void> {
    auto both = [&](quell::scope& s) -> task<void> {
      s.spawn(srv.run());
      for (const auto& a : attacks()) {
        std::string got = co_await quell::test::exchange(srv.local_address(), a.bytes);
        EXPECT_EQ(count_responses(got), 1u) << a.rule << "\n" << got;
        EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 " + std::to_string(a.status)) << a.rule;
      }
      for (const auto& v : valids()) {
        std::string got = co_await quell::test::exchange(srv.local_address(), v.bytes);
        EXPECT_EQ(count_responses(got), 1u) << v.what;
        EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 200") << v.what;
      }
      srv.shutdown(0s);
    };
    co_await quell::with_scope(both);
  };
  quell::executor ex{body(), clock};
  ex.run();
  EXPECT_EQ(seen.size(), valids().size());
  for (const auto& t : seen) EXPECT_NE(t, "/smuggled");
  EXPECT_EQ(srv.stats().requests_rejected, attacks().size());
}

TEST(HttpParser, NumbersPastSixtyFourBitsAreTooLargeNeverWrappedWhateverTheLimit) {
  const std::size_t no_limit = SIZE_MAX;
  for (const std::string bytes : {
           "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551617\r\n\r\nx",
           "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\nx\r\n0\r\n\r\n",
       }) {
    message_parser p(message_parser::kind::request, 1024, no_limit);
    p.feed(bytes.data(), bytes.size());
    EXPECT_TRUE(p.failed()) << bytes;
    EXPECT_EQ(p.error_status(), 413) << bytes;
  }
}

TEST(HttpParser, ConnectIsRefusedAndTooManyFieldsAre431) {
  auto o = parse_request("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
  EXPECT_EQ(o.status, 501);
  std::string many = "GET / HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 200; ++i) many += "a:\r\n";  // 800 bytes: under the byte limit
  EXPECT_EQ(parse_request(many + "\r\n").status, 431);
}

TEST(HttpParser, AnEmptyLineSplitAcrossReadsIsStillNotARequest) {
  message_parser p(message_parser::kind::request, 1024, 1024);
  p.feed("\r", 1);
  EXPECT_FALSE(p.started());
  p.feed("\n", 1);
  EXPECT_FALSE(p.started());
  p.feed("G", 1);
  EXPECT_TRUE(p.started());
}

TEST(HttpStrict, TheClientNeverTakesBytesAfterAResponseForTheNextResponse) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  auto body = [&]() -> task<void> {
    auto listener = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
    auto both = [&](quell::scope& s) -> task<void> {
      s.spawn([&]() -> task<void> {
        auto conn = co_await listener.accept();
        char buf[1024];
        co_await conn.read_some(buf);
        // One response, and a second nobody asked for glued to it.
        co_await conn.write_all("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                                "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil");
        while (co_await conn.read_some(buf) > 0) {
        }
        co_await conn.close();
      });
      auto c = co_await http::client::connect(listener.local_address());
      auto r = co_await c.get("/");
      EXPECT_EQ(r.body, "ok");
      EXPECT_FALSE(c.usable());  // the extra bytes are not the next response
      EXPECT_THROW(co_await c.get("/again"), std::logic_error);
      co_await c.close();
    };
    co_await quell::with_scope(both);
  };
  quell::executor ex{body(), clock};
  ex.run();
}

TEST(HttpStrict, AHandlersHeaderThatCouldReframeTheResponseIsDroppedAndABadStatusIs500) {
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);
  http::server srv{quell::address::parse("127.0.0.1", 0), [&](http::request& r) -> task<http::response> {
                     auto out = http::response::text(r.path() == "/bad-status" ? 700 : 200, "ok\n");
                     out.headers.push_back({"Content-Length ", "0"});
                     out.headers.push_back({"X-Nul", std::string("a\0b", 3)});
                     out.headers.push_back({"X-Fine", "yes"});
                     co_return out;
                   }};
  auto body = [&]() -> task<void> {
    auto both = [&](quell::scope& s) -> task<void> {
      s.spawn(srv.run());
      std::string got = co_await quell::test::exchange(srv.local_address(),
                                                       "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      EXPECT_EQ(got.find("Content-Length: 0"), std::string::npos) << got;
      EXPECT_EQ(got.find("X-Nul"), std::string::npos) << got;
      EXPECT_NE(got.find("X-Fine: yes"), std::string::npos) << got;
      EXPECT_NE(got.find("Content-Length: 3\r\n"), std::string::npos) << got;
      got = co_await quell::test::exchange(srv.local_address(),
                                           "GET /bad-status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 500") << got;
      srv.shutdown(0s);
    };
    co_await quell::with_scope(both);
  };
  quell::executor ex{body(), clock};
  ex.run();
}
