// A TCP proxy: a session is two copy loops, one per direction, under race.
//
// When either side closes, its loop ends and race cancels the other loop and waits for it, so
// the session closes its sockets only once nothing runs on them any more. Where that cancel may
// land decides whether bytes are lost. A loop stops only at its read: a cancelled read takes
// nothing (what arrived stays in the stream, "cancelled" means "it did not happen"), and a read
// that completed has taken its bytes, so the loop writes them under a shield: a chunk taken from
// one side always reaches the other whole, even when the cancel arrives in the middle of the
// write. Nothing is half-forwarded.
//
// Three sessions go through the proxy: the upstream answers and closes; the client says its last
// words and closes; and the upstream streams without end to a client that reads nothing for a
// while and meanwhile closes its sending side, so the cancel finds the other loop blocked in a
// write. The last session checks that the client received every byte the proxy took from the
// upstream. (This proxy ends a session at the first end of stream, a half-close included.)
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "quell/quell.hpp"

using namespace std::chrono_literals;
using quell::task;

namespace {

quell::time_point t_start;  // set when the demo starts, on the executor's clock

void say(const std::string& line) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(quell::now() - t_start).count();
  std::printf("%4lld ms  %s\n", static_cast<long long>(ms), line.c_str());
  std::fflush(stdout);
}

std::string quoted(std::string_view s) {
  std::string q = "\"";
  for (char c : s) q += c == '\n' ? std::string("\\n") : std::string(1, c);
  return q + "\"";
}

// Copies `from` to `to` until `from` ends; `taken` counts the bytes read from `from`.
task<> copy(quell::tcp_stream& from, quell::tcp_stream& to, std::string dir, std::size_t& taken) {
  auto report = [dir, &taken] {  // on every exit
    if (const auto why = quell::this_task::cancel_reason()) {
      say(dir + ": cancelled at its read (" + why->describe() + "), which took nothing; " + std::to_string(taken) +
          " bytes taken and forwarded");
    }
  };
  co_await quell::defer(report);
  std::vector<char> buf(64 * 1024);
  for (;;) {
    const std::size_t n = co_await from.read_some(buf);  // the only place a cancel lands
    if (n == 0) {
      say(dir + ": the end of the stream, after " + std::to_string(taken) + " bytes");
      co_return;
    }
    taken += n;
    auto mid_write = [&] {
      say(dir + ": the cancel arrived while it wrote " + std::to_string(n) + " bytes: they go out whole first");
    };
    co_await quell::on_cancel(quell::shield(to.write_all(std::string_view(buf.data(), n))), mid_write);
  }
}

task<> session(quell::tcp_stream client, quell::address upstream_at, int id, std::size_t& to_client) {
  const std::string me = "proxy " + std::to_string(id);
  quell::tcp_stream upstream = co_await quell::tcp_stream::connect(upstream_at);
  say(me + ": a client, connected to the upstream");
  std::size_t to_upstream = 0;
  try {
    co_await quell::race(copy(client, upstream, me + ": client -> upstream", to_upstream),
                         copy(upstream, client, me + ": upstream -> client", to_client));
  } catch (const std::system_error& e) {
    say(me + ": " + e.what());
  }
  say(me + ": race returned, both loops have ended: closing both sockets");
  co_await client.close();
  co_await upstream.close();
}

task<> proxy(quell::tcp_listener& l, quell::address upstream, quell::scope& s, std::map<int, std::size_t>& to_client) {
  for (int id = 1;; ++id) s.spawn(session(co_await l.accept(), upstream, id, to_client[id]));
}

// ---- the demo's peers: the upstream server and the clients ----

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

// An upstream connection does what its first line asks: "ping" is answered, then the upstream
// closes; "stream" gets bytes until the connection fails; anything else is read to the end.
task<> upstream_connection(quell::tcp_stream c, int id) {
  const std::string me = "upstream " + std::to_string(id);
  std::string got = co_await read_to_end(c, true);
  if (got == "ping\n") {
    co_await c.write_all("pong\n");
    say(me + ": got \"ping\", answered \"pong\" and closed");
  } else if (got == "stream\n") {
    const std::string chunk(16 * 1024, 'x');
    try {
      for (;;) co_await c.write_all(chunk);
    } catch (const std::system_error& e) {
      say(me + ": streamed until the proxy closed the connection (" + e.code().message() + ")");
    }
  } else {
    got += co_await read_to_end(c);
    say(me + ": got " + quoted(got) + ", then the end");
  }
  co_await c.close();
}

task<> upstream_server(quell::tcp_listener& l, quell::scope& s) {
  for (int id = 1;; ++id) s.spawn(upstream_connection(co_await l.accept(), id));
}

task<bool> clients(quell::address proxy, const std::map<int, std::size_t>& to_client) {
  auto c1 = co_await quell::tcp_stream::connect(proxy);
  co_await c1.write_all("ping\n");
  say("client 1: sent \"ping\"");
  say("client 1: got " + quoted(co_await read_to_end(c1)) + ", then the end");
  co_await c1.close();

  auto c2 = co_await quell::tcp_stream::connect(proxy);
  co_await c2.write_all("last words\n");
  co_await c2.close();
  say("client 2: sent \"last words\" and closed");

  auto c3 = co_await quell::tcp_stream::connect(proxy);
  co_await c3.write_all("stream\n");
  char first[1024];
  co_await c3.read_exact(first);
  say("client 3: the stream has begun; it reads nothing for 100 ms, so the proxy's writes back up");
  co_await quell::sleep_for(100ms);
  c3.shutdown(SHUT_WR);
  say("client 3: closes its sending side (shutdown SHUT_WR), and reads nothing for 50 ms more");
  co_await quell::sleep_for(50ms);  // the proxy's cancel comes meanwhile, and finds a write blocked
  say("client 3: reads on");
  std::size_t received = sizeof first;
  char buf[64 * 1024];
  for (std::size_t n; (n = co_await c3.read_some(buf)) != 0;) received += n;
  co_await c3.close();
  const std::size_t taken = to_client.at(3);
  say("client 3: received " + std::to_string(received) + " bytes, then the end (the proxy took " +
      std::to_string(taken) + " from the upstream)");
  if (received != taken) {
    say("client 3: the two differ: bytes the proxy took were lost on the way");
    co_return false;
  }
  say("client 3: every byte the proxy took from the upstream reached the client");
  co_return true;
}

task<int> demo() {
  t_start = quell::now();
  auto upstream = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
  auto listener = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
  say("proxy on " + listener.local_address().to_string() + ", upstream on " + upstream.local_address().to_string());
  std::map<int, std::size_t> to_client;  // per session: bytes the proxy took from the upstream
  bool ok = false;
  auto body = [&](quell::scope& s) -> task<> {
    auto upstream_loop = s.spawn(upstream_server(upstream, s));
    auto proxy_loop = s.spawn(proxy(listener, upstream.local_address(), s, to_client));
    ok = co_await clients(listener.local_address(), to_client);
    proxy_loop.cancel();  // the sessions and upstream connections are children of the scope: it waits for them
    upstream_loop.cancel();
  };
  co_await quell::with_scope(body);
  co_return ok ? 0 : 1;
}

}  // namespace

// By default the demo runs on a virtual clock: time moves only while every task waits, so the
// times it prints are exact and the same on every run, however busy the machine. --real-clock
// runs it on the steady clock, as a program would (block_on).
int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "--real-clock") return quell::block_on(demo());
  quell::virtual_clock clock;
  clock.set_io_grace(20ms);  // the peers are real sockets: their bytes arrive before time jumps
  return quell::executor{demo(), clock}.run();
}
