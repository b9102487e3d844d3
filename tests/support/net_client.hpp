// Client-side helpers shared by the socket, HTTP, gateway and fuzz tests: reading to the end of a
// stream, a raw request/response exchange over loopback, curl in another thread, and the count of
// this process's open descriptors.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <thread>

#include "quell/quell.hpp"

namespace quell::test {
// Internal linkage: clang 14's UBSan rejects an inline coroutine defined in several objects.
namespace {

inline std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// Reads until the peer's end of stream.
[[maybe_unused]] task<std::string> read_to_end(tcp_stream& s) {
  std::string out;
  char buf[4096];
  for (;;) {
    const std::size_t n = co_await s.read_some(buf);
    if (n == 0) co_return out;
    out.append(buf, n);
  }
}

// Writes `bytes`, optionally half-closes, and reads until the server closes the connection.
// An error on either side ends the exchange with what arrived so far (the server may close
// before reading everything, or reset).
[[maybe_unused]] task<std::string> exchange(address to, std::string bytes, bool half_close = false) {
  auto s = co_await tcp_stream::connect(to);
  try {
    co_await s.write_all(bytes);
    if (half_close) s.shutdown(SHUT_WR);
  } catch (const std::system_error&) {
  }
  std::string got;
  char buf[4096];
  for (;;) {
    std::size_t n = 0;
    try {
      n = co_await s.read_some(buf);
    } catch (const std::system_error&) {
      break;
    }
    if (n == 0) break;
    got.append(buf, n);
  }
  co_await s.close();
  co_return got;
}

inline bool have_curl() { return std::system("command -v curl >/dev/null 2>&1") == 0; }

// `curl -sS <args>` in another thread (a real client in another process); its output and exit
// status are read once `done` is set. The destructor waits for curl.
struct curl_run {
  std::thread t;
  std::atomic<bool> done{false};
  std::string output;
  int status = -1;

  explicit curl_run(std::string args) {
    t = std::thread([this, args] {
      std::string cmd = "curl -sS " + args + " 2>&1";
      if (FILE* f = ::popen(cmd.c_str(), "r")) {
        char buf[4096];
        while (std::size_t n = std::fread(buf, 1, sizeof buf, f)) output.append(buf, n);
        status = ::pclose(f);
      }
      done = true;
    });
  }
  curl_run(const curl_run&) = delete;
  curl_run& operator=(const curl_run&) = delete;
  ~curl_run() { t.join(); }
};

}  // namespace
}  // namespace quell::test
