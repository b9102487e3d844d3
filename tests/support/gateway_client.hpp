// A client-side helper for the gateway's multi-core tests: a connection that a given core serves.
#pragma once

#include <stdexcept>
#include <string>

#include "quell/http.hpp"
#include "quell/quell.hpp"

namespace quell::test {
// Internal linkage: clang 14's UBSan rejects an inline coroutine defined in several objects.
namespace {

// A keep-alive connection that the kernel gave to `core`'s listener, as the gateway's X-Core
// header says. New connections are spread by a hash of their ports, so a few tries find one.
task<http::client> connection_on(address at, unsigned core) {
  for (int i = 0; i < 256; ++i) {
    auto c = co_await http::client::connect(at);
    auto r = co_await c.get("/hello");
    if (r.header("x-core") == std::to_string(core)) co_return c;
    co_await c.close();
  }
  throw std::runtime_error("no connection reached core " + std::to_string(core));
}

}  // namespace
}  // namespace quell::test
