// Request parsing throughput: quell's strict parser against libhttp-parser (the parser quell::http
// used before, lenient as Debian builds it) and Boost.Beast's request_parser, in one run, on the
// same bytes. Each parser keeps what a server needs (method, target, headers, body) in strings,
// as quell's does. Prints ns per request and quell's ratio to each peer (>1: quell is faster).
//
//   quell_bench_http_parse [rounds]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "http/parser.hpp"

#if QUELL_BENCH_HTTP_PARSER
#include <http_parser.h>
#endif
#if QUELL_BENCH_BEAST
#include <boost/beast/http.hpp>
#endif

namespace {

using clock_type = std::chrono::steady_clock;

const std::string get_request =
    "GET /report?seconds=0.1&id=42 HTTP/1.1\r\n"
    "Host: gateway.example:8080\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: session=3f2a9c0e1b7d4a6f8e5c2b1a0d9f8e7c; theme=dark\r\n"
    "Cache-Control: max-age=0\r\n"
    "X-Request-Id: 9d7b3c1e-5f4a-4e2b-8c6d-0a1b2c3d4e5f\r\n"
    "\r\n";

std::string chunked_post() {
  std::string r =
      "POST /upload HTTP/1.1\r\nHost: gateway.example\r\nContent-Type: application/octet-stream\r\n"
      "Transfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 4; ++i) r += "400\r\n" + std::string(1024, 'a' + i) + "\r\n";
  return r + "0\r\n\r\n";
}

volatile std::size_t sink;

std::size_t quell_parse(const std::string& m) {
  static quell::http::detail::message_parser p(quell::http::detail::message_parser::kind::request, 64 * 1024,
                                               1024 * 1024);
  p.reset();
  std::size_t used = p.feed(m.data(), m.size());
  if (!p.complete()) std::abort();
  return used + p.headers.size() + p.body.size();
}

#if QUELL_BENCH_HTTP_PARSER
struct hp_message {
  std::string target, body;
  std::vector<std::pair<std::string, std::string>> headers;
  bool in_value = false, done = false;
};

std::size_t http_parser_parse(const std::string& m) {
  static const http_parser_settings settings = [] {
    http_parser_settings s;
    http_parser_settings_init(&s);
    s.on_url = [](http_parser* p, const char* at, std::size_t n) {
      static_cast<hp_message*>(p->data)->target.append(at, n);
      return 0;
    };
    s.on_header_field = [](http_parser* p, const char* at, std::size_t n) {
      auto* msg = static_cast<hp_message*>(p->data);
      if (msg->in_value || msg->headers.empty()) msg->headers.emplace_back();
      msg->in_value = false;
      msg->headers.back().first.append(at, n);
      return 0;
    };
    s.on_header_value = [](http_parser* p, const char* at, std::size_t n) {
      auto* msg = static_cast<hp_message*>(p->data);
      msg->in_value = true;
      msg->headers.back().second.append(at, n);
      return 0;
    };
    s.on_body = [](http_parser* p, const char* at, std::size_t n) {
      static_cast<hp_message*>(p->data)->body.append(at, n);
      return 0;
    };
    s.on_message_complete = [](http_parser* p) {
      static_cast<hp_message*>(p->data)->done = true;
      return 0;
    };
    return s;
  }();
  static hp_message msg;
  msg.target.clear();
  msg.body.clear();
  msg.headers.clear();
  msg.in_value = msg.done = false;
  http_parser p;
  http_parser_init(&p, HTTP_REQUEST);
  p.data = &msg;
  std::size_t used = http_parser_execute(&p, &settings, m.data(), m.size());
  if (!msg.done) std::abort();
  return used + msg.headers.size() + msg.body.size();
}
#endif

#if QUELL_BENCH_BEAST
std::size_t beast_parse(const std::string& m) {
  namespace bh = boost::beast::http;
  bh::request_parser<bh::string_body> p;
  p.eager(true);
  p.body_limit(1024 * 1024);
  boost::beast::error_code ec;
  std::size_t used = p.put(boost::asio::buffer(m.data(), m.size()), ec);
  if (ec || !p.is_done()) std::abort();
  return used + p.get().body().size();
}
#endif

// Best of `rounds` rounds of n parses: ns per parse.
template <class Fn>
double time_parse(Fn fn, const std::string& m, int rounds) {
  const int n = 20000;
  double best = 1e30;
  for (int r = 0; r < rounds; ++r) {
    auto t0 = clock_type::now();
    for (int i = 0; i < n; ++i) sink = fn(m);
    double ns = std::chrono::duration<double, std::nano>(clock_type::now() - t0).count() / n;
    if (ns < best) best = ns;
  }
  return best;
}

void row(const char* name, const std::string& m, int rounds) {
  double q = time_parse(quell_parse, m, rounds);
  std::printf("%-28s quell %8.1f ns", name, q);
#if QUELL_BENCH_HTTP_PARSER
  double h = time_parse(http_parser_parse, m, rounds);
  std::printf("   libhttp-parser %8.1f ns (%.2fx)", h, h / q);
#endif
#if QUELL_BENCH_BEAST
  double b = time_parse(beast_parse, m, rounds);
  std::printf("   Beast %8.1f ns (%.2fx)", b, b / q);
#endif
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 7;
  std::printf("request parsing, best of %d rounds; (x) is the peer's time over quell's\n", rounds);
  row("GET, 10 headers (505 B)", get_request, rounds);
  row("chunked POST, 4 KiB body", chunked_post(), rounds);
}
