// A hedged request: ask one replica, and if it has not answered within 50 ms, ask another one as
// well; the first answer wins.
//
// race runs the two attempts. When one answers, race cancels the other and waits for it to
// finish: the loser tells its replica to stop, waits for the replica's acknowledgement and closes
// its connection, and only then does race return the answer. So the caller never goes on while
// a request it no longer wants still runs, holds a connection or keeps a replica busy: hedging
// adds load only while it is undecided. An attempt still waiting for its turn to start costs
// nothing to cancel: its timer goes, and no connection was ever opened.
//
// Replica A answers in 300 ms, replica B in 10 ms. The first request asks B first: it answers in
// time, and the hedge to A never starts. The second asks A first: after 50 ms the hedge asks B,
// B's answer wins, and A is told to stop before the answer is used.
#include <chrono>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>

#include "quell/quell.hpp"

using namespace std::chrono_literals;
using quell::task;

namespace {

constexpr quell::duration hedge_after = 50ms;

quell::time_point t_start;  // set when the demo starts, on the executor's clock

void say(const std::string& line) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(quell::now() - t_start).count();
  std::printf("%4lld ms  %s\n", static_cast<long long>(ms), line.c_str());
  std::fflush(stdout);
}

std::string ms(quell::duration d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms";
}

// One line, without its '\n' ("" at the end of the stream). It reads a byte at a time, so what
// follows the line stays in the stream for the next read.
task<std::string> read_line(quell::tcp_stream& c) {
  std::string line;
  char ch;
  while (co_await c.read_some(std::span<char>(&ch, 1)) == 1 && ch != '\n') line += ch;
  co_return line;
}

// ---- the client ----

// Asks a replica on `conn` and waits for the answer. If it is cancelled meanwhile, its cleanup
// tells the replica to stop and waits for the acknowledgement, for at most 100 ms: a replica that
// does not answer cannot hold the winner's answer back for long. On every exit the cleanup closes
// `conn` (a parameter, so it is still alive there).
task<std::string> ask(quell::tcp_stream conn, std::string name) {
  auto finish = [&conn, name]() -> task<> {
    if (const auto why = quell::this_task::cancel_reason()) {
      say("client: " + name + ": cancelled (" + why->describe() + "): tells the replica to stop");
      co_await conn.write_all("stop\n");
      say("client: " + name + ": the replica answered \"" + co_await read_line(conn) + "\"");
    }
    co_await conn.close();
    say("client: " + name + ": connection closed");
  };
  co_await quell::defer(finish, 100ms);
  co_await conn.write_all("get\n");
  say("client: asked " + name);
  co_return co_await read_line(conn);
}

// One attempt: after `delay`, connect to the replica and ask it.
task<std::string> attempt(quell::address replica, std::string name, quell::duration delay) {
  if (delay > 0s) {
    auto never_started = [name] { say("client: " + name + ": cancelled before it started: no connection opened"); };
    co_await quell::on_cancel(quell::sleep_for(delay), never_started);
    say("client: no answer after " + ms(delay) + ": hedges, asks " + name + " too");
  }
  co_return co_await ask(co_await quell::tcp_stream::connect(replica), name);
}

task<> hedged_get(quell::address first, std::string first_name, quell::address second, std::string second_name) {
  say("client: a request: " + first_name + " first, " + second_name + " if no answer within " + ms(hedge_after));
  const std::string answer =
      co_await quell::race(attempt(first, first_name, 0ms), attempt(second, second_name, hedge_after));
  say("client: race returned \"" + answer + "\": the loser has finished its cleanup, the answer is used now");
}

// ---- the replicas ----

// Answers "get" after `work`, unless the client says "stop" (or goes away) first.
task<> replica_connection(quell::tcp_stream c, std::string name, quell::duration work) {
  co_await read_line(c);  // "get"
  say(name + ": working on a request (" + ms(work) + ")");
  auto working = [&]() -> task<bool> {
    co_await quell::sleep_for(work);
    co_return true;
  };
  auto told_to_stop = [&]() -> task<bool> {
    co_await read_line(c);  // "stop", or "" if the client went away
    co_return false;
  };
  if (co_await quell::race(working(), told_to_stop())) {
    const std::string answer = "42 from " + name + "\n";
    co_await c.write_all(answer);
    say(name + ": answered");
  } else {
    say(name + ": told to stop: drops the work and acknowledges");
    co_await c.write_all("stopped\n");
  }
  co_await c.close();
}

task<> replica(quell::tcp_listener& l, std::string name, quell::duration work, quell::scope& s, int& requests) {
  for (;;) {
    s.spawn(replica_connection(co_await l.accept(), name, work));
    ++requests;
  }
}

task<int> demo() {
  t_start = quell::now();
  auto a = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
  auto b = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
  int a_requests = 0, b_requests = 0;
  auto body = [&](quell::scope& s) -> task<> {
    auto serve_a = s.spawn(replica(a, "replica A", 300ms, s, a_requests));
    auto serve_b = s.spawn(replica(b, "replica B", 10ms, s, b_requests));
    co_await hedged_get(b.local_address(), "replica B", a.local_address(), "replica A");
    co_await hedged_get(a.local_address(), "replica A", b.local_address(), "replica B");
    serve_a.cancel();
    serve_b.cancel();
  };
  co_await quell::with_scope(body);
  const bool as_told = a_requests == 1 && b_requests == 2;
  say("replica A got " + std::to_string(a_requests) + " request(s), replica B " + std::to_string(b_requests) +
      (as_told ? ": the hedge that never started opened no connection" : ""));
  co_return as_told ? 0 : 1;
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
