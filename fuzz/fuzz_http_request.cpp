// libFuzzer target for quell::http's request path, end to end: each input is written to a real
// quell::http::server over loopback (then the client half-closes), and the answer must be a
// well-formed status line or a closed connection, with no handler left running, no connection
// left open, and nothing for the sanitizers to report. Small limits make 413 and 431 reachable.
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
  http::server srv{quell::address::parse("127.0.0.1", 0),
                   [](http::request& r) -> quell::task<http::response> {
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
  check(srv.stats().requests_in_flight == 0, "a handler is still running");
  check(srv.stats().connections_open == 0, "a connection is still open");
  return 0;
}
