// libFuzzer target for quell::http's request path, end to end: each input is written to a real
// quell::http::server over loopback (then the client half-closes), and the answer must be a
// well-formed status line or a closed connection, with no handler left running, no connection
// left open, and nothing for the sanitizers to report. Small limits make 413 and 431 reachable.
// And at most one response per request: every request the server reads has its own request line,
// so handler calls never outnumber the " HTTP/" a request line needs, and answers exceed them by
// at most the one 400 that ends a connection; a parser that read a body as a second request
// (smuggling) would call the handler more often than that.
#include <sys/socket.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "quell/http.hpp"
#include "quell/quell.hpp"
#include "support/net_client.hpp"

using namespace std::chrono_literals;
namespace http = quell::http;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_http_request: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  http::server_options o;
  o.max_header_bytes = 512;
  o.max_body_bytes = 256;
  quell::virtual_clock clock;
  clock.set_io_grace(std::chrono::milliseconds(50));
  std::size_t calls = 0;
  http::server srv{quell::address::parse("127.0.0.1", 0),
                   [&calls](http::request& r) -> quell::task<http::response> {
                     ++calls;
                     if (r.path() == "/sleep") co_await quell::sleep_for(10ms);
                     if (r.path() == "/throw") throw std::runtime_error("handler failed");
                     co_return http::response::text(200, r.body);
                   },
                   o};
  std::string got;
  auto body = [&]() -> quell::task<void> {
    auto both = [&](quell::scope& s) -> quell::task<void> {
      s.spawn(srv.run());
      got = co_await quell::test::exchange(srv.local_address(), input, true);
      srv.shutdown(1s);
    };
    co_await quell::with_scope(both);
  };
  quell::executor ex{body(), clock};
  ex.run();
  check(got.empty() || got.rfind("HTTP/1.1 ", 0) == 0, "the answer is not an HTTP/1.1 response");
  // Final answers only: a 100 Continue precedes the answer to the same request.
  auto final_answer = [&](std::size_t at) { return got.compare(at, 13, "HTTP/1.1 100 ") != 0; };
  std::size_t request_lines = 0, answers = got.rfind("HTTP/1.1 ", 0) == 0 && final_answer(0) ? 1 : 0;
  for (auto at = input.find(" HTTP/"); at != std::string::npos; at = input.find(" HTTP/", at + 1)) ++request_lines;
  // The handler echoes the body, so an answer inside a body is skipped: status lines follow CRLF.
  for (auto at = got.find("\r\nHTTP/1.1 "); at != std::string::npos; at = got.find("\r\nHTTP/1.1 ", at + 1))
    if (final_answer(at + 2)) ++answers;
  check(calls <= request_lines, "more handler calls than request lines");
  // Bytes after the last request (a body the request did not declare) may earn one 400, after
  // which the server closes: one answer more than request lines, never two.
  check(answers <= request_lines + 1, "more answers than request lines, plus one refusal");
  check(srv.stats().requests_in_flight == 0, "a handler is still running");
  check(srv.stats().connections_open == 0, "a connection is still open");
  return 0;
}
