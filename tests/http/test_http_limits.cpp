// quell::http::server under load it must shed: a connection cap (the oldest idle connection makes
// room; when none is idle the newcomer gets 503), a budget for the bodies of requests read and
// not finished, and a process out of file descriptors. Virtual clock; real loopback sockets.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "quell/http.hpp"
#include "quell/quell.hpp"
#include "support/net_client.hpp"

using namespace std::chrono_literals;
namespace http = quell::http;
using quell::task;
using quell::tcp_stream;

namespace {

const quell::address loopback = quell::address::parse("127.0.0.1", 0);

template <class Fn>
void serve_and(quell::virtual_clock& clock, http::server& srv, Fn client_side) {
  clock.set_io_grace(20ms);
  auto body = [&]() -> task<void> {
    auto both = [&](quell::scope& s) -> task<void> {
      s.spawn(srv.run());
      co_await client_side(srv.local_address(), s);
      srv.shutdown(0s);
    };
    co_await quell::with_scope(both);
  };
  quell::executor ex{body(), clock};
  ex.run();
}

// One request on an open connection; the whole response (it carries Content-Length).
task<std::string> ask(tcp_stream& s, std::string req) {
  co_await s.write_all(req);
  std::string got;
  char buf[4096];
  for (;;) {
    std::size_t n = co_await s.read_some(buf);
    if (n == 0) break;
    got.append(buf, n);
    auto head_end = got.find("\r\n\r\n");
    if (head_end == std::string::npos) continue;
    auto cl = got.find("Content-Length: ");
    if (cl != std::string::npos && got.size() >= head_end + 4 + std::stoul(got.substr(cl + 16))) break;
  }
  co_return got;
}

// True once the peer has closed `s` (a read returns 0 or fails).
task<bool> closed_by_peer(tcp_stream& s) {
  char buf[64];
  try {
    auto n = co_await quell::move_on_after(5s, s.read_some(buf));
    co_return n && *n == 0;
  } catch (const std::system_error&) {
    co_return true;
  }
}

}  // namespace

TEST(HttpLimits, AtMaxConnectionsTheOldestIdleConnectionMakesRoom) {
  quell::virtual_clock clock;
  http::server_options o;
  o.max_connections = 2;
  http::server srv{loopback, [](http::request&) -> task<http::response> { co_return http::response::text(200, "ok\n"); },
                   o};
  serve_and(clock, srv, [&](quell::address a, quell::scope&) -> task<void> {
    auto first = co_await tcp_stream::connect(a);
    EXPECT_EQ((co_await ask(first, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")).substr(0, 12), "HTTP/1.1 200");
    co_await quell::sleep_for(1s);
    auto second = co_await tcp_stream::connect(a);
    EXPECT_EQ((co_await ask(second, "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")).substr(0, 12), "HTTP/1.1 200");
    auto third = co_await tcp_stream::connect(a);
    EXPECT_EQ((co_await ask(third, "GET /3 HTTP/1.1\r\nHost: x\r\n\r\n")).substr(0, 12), "HTTP/1.1 200");
    EXPECT_TRUE(co_await closed_by_peer(first));  // idle the longest
    EXPECT_EQ((co_await ask(second, "GET /2b HTTP/1.1\r\nHost: x\r\n\r\n")).substr(0, 12), "HTTP/1.1 200");
    EXPECT_EQ(srv.stats().connections_refused, 0u);
    co_await first.close();
    co_await second.close();
    co_await third.close();
  });
}

TEST(HttpLimits, AtMaxConnectionsWithEveryConnectionBusyTheNewcomerGets503) {
  quell::virtual_clock clock;
  http::server_options o;
  o.max_connections = 1;
  quell::event release;
  http::server srv{loopback,
                   [&](http::request&) -> task<http::response> {
                     co_await release.wait();
                     co_return http::response::text(200, "ok\n");
                   },
                   o};
  serve_and(clock, srv, [&](quell::address a, quell::scope& s) -> task<void> {
    auto busy = co_await tcp_stream::connect(a);
    auto answer = s.spawn(ask(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"));
    while (srv.stats().requests_in_flight == 0) co_await quell::sleep_for(1ms);
    std::string got = co_await quell::test::exchange(a, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 503") << got;
    EXPECT_NE(got.find("Retry-After: 1"), std::string::npos);
    EXPECT_EQ(srv.stats().connections_refused, 1u);
    release.set();
    EXPECT_EQ((co_await answer).substr(0, 12), "HTTP/1.1 200");
    co_await busy.close();
  });
}

TEST(HttpLimits, BodiesOverTheBudgetAre503AndTheBudgetComesBackWhenHandlersEnd) {
  quell::virtual_clock clock;
  http::server_options o;
  o.max_buffered_body_bytes = 1000;
  quell::event release;
  int handled = 0;
  http::server srv{loopback,
                   [&](http::request& r) -> task<http::response> {
                     ++handled;
                     if (r.path() == "/wait") co_await release.wait();
                     co_return http::response::text(200, std::to_string(r.body.size()) + "\n");
                   },
                   o};
  const std::string body(400, 'b');
  const std::string wait_req = "POST /wait HTTP/1.1\r\nHost: x\r\nContent-Length: 400\r\n\r\n" + body;
  serve_and(clock, srv, [&](quell::address a, quell::scope& s) -> task<void> {
    std::vector<tcp_stream> held(2);
    std::vector<quell::spawn_handle<std::string>> answers;
    for (auto& c : held) {
      c = co_await tcp_stream::connect(a);
      answers.push_back(s.spawn(ask(c, wait_req)));
    }
    while (srv.stats().requests_in_flight < 2) co_await quell::sleep_for(1ms);
    // 800 held: a third 400-byte body would pass 1000.
    std::string got = co_await quell::test::exchange(a, wait_req);
    EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 503") << got;
    EXPECT_EQ(srv.stats().requests_shed, 1u);
    EXPECT_EQ(handled, 2);
    // A request without a body still fits.
    got = co_await quell::test::exchange(a, "GET /now HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 200") << got;
    release.set();
    for (auto& h : answers) EXPECT_EQ((co_await h).substr(0, 12), "HTTP/1.1 200");
    // Both bodies went back to the budget with their handlers.
    got = co_await quell::test::exchange(a, "POST /now HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 900\r\n\r\n" +
                                                std::string(900, 'c'));
    EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 200") << got;
    for (auto& c : held) co_await c.close();
  });
}

// Sanitizer runtimes need descriptors of their own: UBSan's vptr check probes memory through a
// pipe, and at the descriptor limit it reports a valid std::system_error as "invalid vptr".
#if defined(__SANITIZE_ADDRESS__)
constexpr bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool sanitized = true;
#else
constexpr bool sanitized = false;
#endif
#else
constexpr bool sanitized = false;
#endif

TEST(HttpLimits, OutOfDescriptorsAnIdleConnectionIsClosedAndANewClientIsAnsweredNotLeftWaiting) {
  if (sanitized) GTEST_SKIP() << "the sanitizers' runtime needs free descriptors (Release builds run this)";
  // In a child process whose descriptor limit is lowered, then filled to the last one.
  const pid_t pid = ::fork();
  if (pid == 0) {
    int rc = 0;
    auto expect = [&](bool ok, int code) {
      if (!ok && rc == 0) rc = code;
    };
    // Lowered before the ring exists: io_uring's workers keep the limit they started with.
    rlimit lim{};
    ::getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = quell::test::open_fds() + 48;
    ::setrlimit(RLIMIT_NOFILE, &lim);
    quell::virtual_clock clock;
    http::server srv{loopback, [](http::request&) -> task<http::response> { co_return http::response::text(200, "ok\n"); }};
    serve_and(clock, srv, [&](quell::address a, quell::scope&) -> task<void> {
      auto idle = co_await tcp_stream::connect(a);
      expect((co_await ask(idle, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")).substr(0, 12) == "HTTP/1.1 200", 10);
      std::vector<int> filler;
      for (int fd; (fd = ::dup(0)) >= 0;) filler.push_back(fd);
      ::close(filler.back());  // one left: the client's socket; the server's accept fails
      filler.pop_back();
      auto answered = co_await quell::move_on_after(
          30s, quell::test::exchange(a, "GET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
      std::string got = answered.value_or("timed out");
      // Answered at once, either 503 on the reserved descriptor or 200 once the idle one closed.
      expect(got.substr(0, 12) == "HTTP/1.1 503" || got.substr(0, 12) == "HTTP/1.1 200", 11);
      expect(co_await closed_by_peer(idle), 12);
      for (int fd : filler) ::close(fd);
      co_await idle.close();
    });
    ::_exit(rc);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: first request, 11: the new client was not answered, 12: idle not closed";
}

TEST(HttpLimits, ADeclaredBodyIsChargedWhenItsHeadArrivesNotWhenItIsComplete) {
  // Slow uploads count against the budget while they are received: a second one that would pass
  // it is refused at its head, before either body is complete.
  quell::virtual_clock clock;
  http::server_options o;
  o.max_buffered_body_bytes = 1000;
  http::server srv{loopback, [](http::request& r) -> task<http::response> {
                     co_return http::response::text(200, std::to_string(r.body.size()) + "\n");
                   },
                   o};
  serve_and(clock, srv, [&](quell::address a, quell::scope&) -> task<void> {
    auto slow = co_await tcp_stream::connect(a);
    co_await slow.write_all("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 800\r\n\r\n" + std::string(10, 's'));
    co_await quell::sleep_for(100ms);
    std::string got = co_await quell::test::exchange(
        a, "POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 400\r\n\r\n");  // head only
    EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 503") << got;
    EXPECT_EQ(srv.stats().requests_shed, 1u);
    auto answer = co_await ask(slow, std::string(790, 's'));
    EXPECT_EQ(answer.substr(0, 12), "HTTP/1.1 200") << answer;
    EXPECT_NE(answer.find("\r\n\r\n800\n"), std::string::npos) << answer;
    co_await slow.close();
  });
}
