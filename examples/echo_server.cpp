// A TCP echo server that shuts down gracefully on Ctrl-C, the way users expect a server to.
//
// run_main turns the first SIGINT into a graceful cancel of the server and forces it when the
// grace period is over; the server needs no shutdown flag of its own. What happens to each task
// follows from where the cancel finds it. The accept loop stops and closes the listener, so
// nobody new is let in while the rest winds down. A connection waiting for its next line owes its
// client nothing, so it says "bye" and closes. A connection in the middle of a line owes its
// client the echo of that line, so it holds the cancel back (a shield) until the line is echoed.
// A client that never finishes its line cannot hold the server hostage: the forced cancel at the
// end of the grace period goes through shields, and that connection is cut off.
//
// The program plays its own clients on a second thread, and presses Ctrl-C itself
// (kill(getpid(), SIGINT)) once two of them are half-way through a line.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>

#include "quell/quell.hpp"

using namespace std::chrono_literals;
using quell::task;

namespace {

constexpr quell::duration grace = 500ms;
std::atomic<int> lines_in_progress{0};  // only for the demo's clients: when to press Ctrl-C

std::mutex out_m;
const auto t_start = std::chrono::steady_clock::now();

void say(const std::string& line) {
  std::lock_guard<std::mutex> lock(out_m);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t_start).count();
  std::printf("%4lld ms  %s\n", static_cast<long long>(ms), line.c_str());
  std::fflush(stdout);
}

std::string quoted(std::string_view s) {
  std::string q = "\"";
  for (char c : s) q += c == '\n' ? std::string("\\n") : std::string(1, c);
  return q + "\"";
}

// One connection: every line it receives is echoed back.
task<> connection(quell::tcp_stream conn, int id) {
  const std::string me = "server: connection " + std::to_string(id);
  // Runs on every exit; `conn` is a parameter, so it is still alive here.
  auto close = [&conn, me]() -> task<> {
    if (quell::this_task::cancel_reason()) {  // ending because of the shutdown
      co_await conn.write_all("bye\n");
      say(me + ": said bye");
    }
    co_await conn.close();
    say(me + ": closed");
  };
  co_await quell::defer(close);
  std::string received;  // not echoed yet: the start of the current line
  char buf[256];
  for (;;) {
    if (received.empty()) {
      const std::size_t n = co_await conn.read_some(buf);  // between lines: a cancel ends the connection here
      if (n == 0) break;
      received.assign(buf, n);
    }
    auto echo_line = [&]() -> task<bool> {
      ++lines_in_progress;
      std::size_t end;
      while ((end = received.find('\n')) == std::string::npos) {
        auto cut = [&] { say(me + ": the grace period is over: the line is cut short, the connection dropped"); };
        const std::size_t n = co_await quell::on_cancel(conn.read_some(buf), cut);  // only a forced cancel gets here
        if (n == 0) co_return false;
        received.append(buf, n);
      }
      co_await conn.write_all(std::string_view(received).substr(0, end + 1));
      say(me + ": echoed " + quoted(received.substr(0, end)));
      received.erase(0, end + 1);
      --lines_in_progress;
      co_return true;
    };
    auto finish_first = [&] { say(me + ": shutdown in the middle of a line: it finishes the line first"); };
    if (!co_await quell::on_cancel(quell::shield(echo_line()), finish_first)) break;
  }
  say(me + ": the client hung up");
}

void play_clients(quell::address server);  // below: the demo's clients

// The server: run_main's root. Ctrl-C cancels it where it waits, in accept().
task<int> serve(std::thread& harness) {
  auto listener = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
  say("server: listening on " + listener.local_address().to_string() + "; Ctrl-C stops it, with a grace period of " +
      std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(grace).count()) + " ms");
  harness = std::thread(play_clients, listener.local_address());  // inherits run_main's signal mask
  auto accept_loop = [&](quell::scope& s) -> task<> {
    auto stop_accepting = [&]() -> task<> {
      const auto why = quell::this_task::cancel_reason();
      say("server: " + (why ? why->describe() : std::string("accept failed")) +
          ": stops accepting, closes the listener");
      co_await listener.close();
    };
    co_await quell::defer(stop_accepting);
    for (int id = 1;; ++id) s.spawn(connection(co_await listener.accept(), id));
  };
  co_await quell::with_scope(accept_loop);  // on Ctrl-C: ends (cancelled) after every connection
  co_return 0;
}

// ---- the demo's clients, on their own thread and executor ----

task<std::string> read_to_end(quell::tcp_stream& c, bool one_line = false) {
  std::string got;
  char buf[256];
  while (!(one_line && got.find('\n') != std::string::npos)) {
    const std::size_t n = co_await c.read_some(buf);
    if (n == 0) break;
    got.append(buf, n);
  }
  co_return got;
}

task<> clients(quell::address server) {
  auto c1 = co_await quell::tcp_stream::connect(server);
  co_await c1.write_all("hello\n");
  say("client 1: sent \"hello\", got back " + quoted(co_await read_to_end(c1, true)));
  co_await c1.close();
  auto c2 = co_await quell::tcp_stream::connect(server);
  co_await c2.write_all("ping\n");
  say("client 2: sent \"ping\", got back " + quoted(co_await read_to_end(c2, true)) + "; now idle");
  auto c3 = co_await quell::tcp_stream::connect(server);
  auto c4 = co_await quell::tcp_stream::connect(server);
  co_await c3.write_all("a long li");
  co_await c4.write_all("a line that never e");
  while (lines_in_progress.load() < 2) co_await quell::sleep_for(1ms);
  say("clients 3 and 4 are half-way through a line; Ctrl-C");
  ::kill(::getpid(), SIGINT);
  say("client 2: got " + quoted(co_await read_to_end(c2)) + ", then the end");
  co_await c3.write_all("ne\n");
  say("client 3: finished its line, got " + quoted(co_await read_to_end(c3)) + ", then the end");
  try {
    co_await quell::tcp_stream::connect(server);
    say("client 5: connected after the shutdown began (it should not have)");
  } catch (const std::system_error& e) {
    say(std::string("client 5: ") + e.what());
  }
  say("client 4: got " + quoted(co_await read_to_end(c4)) + ", then the end");
}

void play_clients(quell::address server) { quell::block_on(clients(server)); }

}  // namespace

int main() {
  std::thread harness;
  const int status = quell::run_main(serve(harness), grace);
  if (harness.joinable()) harness.join();
  say("run_main returned " + std::to_string(status) +
      (status == 128 + SIGINT ? " (128 + SIGINT: the grace period ran out, and the shutdown was forced)" : ""));
  return status == 128 + SIGINT ? 0 : 1;  // the demo's client 4 makes the shutdown forced
}
