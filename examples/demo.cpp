// quell's demo: the reference scenarios of the design contract, each under a one-line title,
// with the lines it prints. Run it to watch the cancellation model work.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "quell/quell.hpp"

using quell::executor;
using quell::on_cancel;
using quell::pending;
using quell::race;
using quell::task;

namespace {

void print(const std::string& s) { std::printf("    %s\n", s.c_str()); }
void title(const char* t) { std::printf("\n%s\n", t); }

task<> say(std::string s) {
  print(s);
  co_return;
}
auto hook(std::string s) {
  return [s = std::move(s)] { print(s); };
}
task<int> returns(int v) { co_return v; }

struct X : std::runtime_error {
  X() : std::runtime_error("X") {}
};

task<> waits_then_prints() {
  co_await pending();
  print("all done!");
}

using namespace std::chrono_literals;

// One connection: echo until the peer is idle for `idle`. The idle timer wins a race against the
// read; the read is cancelled, and its cleanup hook (async: it writes to the socket) says goodbye
// before the connection is closed.
task<> serve_connection(quell::tcp_stream conn, quell::duration idle) {
  char buf[256];
  for (;;) {
    auto goodbye = [&]() -> task<> {
      print("server: idle for 200 ms; the cancelled read's cleanup hook says goodbye");
      co_await conn.write_all("bye (idle timeout)\n");
    };
    auto idle_timer = [&]() -> task<std::size_t> {
      co_await quell::sleep_for(idle);
      co_return SIZE_MAX;
    };
    const std::size_t n = co_await race(on_cancel(conn.read_some(buf), goodbye()), idle_timer());
    if (n == SIZE_MAX || n == 0) break;
    print("server: echoing " + std::to_string(n) + " bytes");
    co_await conn.write_all(std::string_view(buf, n));
  }
  co_await conn.close();
  print("server: connection closed");
}

task<> echo_demo() {
  auto listener = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
  auto server = [&]() -> task<> { co_await serve_connection(co_await listener.accept(), 200ms); };
  auto client = [&]() -> task<> {
    quell::tcp_stream c = co_await quell::tcp_stream::connect(listener.local_address());
    co_await c.write_all("hello");
    char buf[64];
    std::size_t n = co_await c.read_some(buf);
    print("client: got back \"" + std::string(buf, n) + "\", now going quiet");
    std::string rest;
    while ((n = co_await c.read_some(buf)) > 0) rest.append(buf, n);
    print("client: server said \"" + rest.substr(0, rest.size() - 1) + "\" and closed the connection");
    co_await c.close();
  };
  co_await quell::join(server(), client());
  co_await listener.close();
}

// 12: a request handler that holds a backend job; whatever way it ends, its async cleanup tells
// the backend to stop and waits for the acknowledgement before the permit counts as released.
std::string at(const quell::virtual_clock& c) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(c.now().time_since_epoch()).count()) +
         " ms";
}

task<std::string> backend_request(std::string name, quell::duration work, bool fails,
                                  const quell::virtual_clock& clock) {
  auto stop_backend = [name, &clock]() -> task<> {  // named, not inside the co_await: see docs (g++ 12)
    auto why = quell::this_task::cancel_reason();
    print(at(clock) + "  " + name + ": cleanup (" + (why ? why->describe() : "not cancelled") +
          "): asking the backend to stop");
    co_await quell::sleep_for(std::chrono::milliseconds(10));
    print(at(clock) + "  " + name + ": backend acknowledged; permit released");
  };
  co_await quell::defer(stop_backend);
  const auto budget = quell::this_task::deadline() - quell::now();
  print(at(clock) + "  " + name + ": sent, with a budget of " +
        std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(budget).count()) + " ms");
  co_await quell::sleep_for(work);
  if (fails) throw std::runtime_error(name + " failed: backend answered 503");
  co_return name + " ok";
}

task<> fan_out(const quell::virtual_clock& clock) {
  using namespace std::chrono_literals;
  try {
    co_await quell::timeout(1s, quell::with_scope([&](quell::scope& s) -> task<> {
                              auto a = s.spawn(backend_request("request A", 100ms, false, clock));
                              auto b = s.spawn(backend_request("request B", 200ms, false, clock));
                              auto c = s.spawn(backend_request("request C", 30ms, true, clock));
                              print(co_await a + ", " + co_await b + ", " + co_await c);
                            }));
  } catch (const std::exception& e) {
    print(at(clock) + "  the scope reports: " + e.what());
  }
}

}  // namespace

int main() {
  std::printf("quell: asynchronous, structured cancellation (the reference scenarios)\n");

  title("1. The root task returns a value");
  print("the root task returned " + std::to_string(executor{returns(42)}.run()));

  title("2. Destroying the executor cancels the unfinished root; its hook runs");
  {
    executor ex{on_cancel(waits_then_prints(), say("the task did not finish"))};
    ex.poll_once();
    ex.poll_once();
  }

  title("3. race cancels the loser (and waits for it) before returning the winner");
  {
    const int r = executor{race(on_cancel(pending<int>(), say("future `a` was cancelled")), returns(42))}.run();
    print("result: " + std::to_string(r));
  }

  title("4. Cancelling during a cancellation continues it (idempotent)");
  {
    bool done = false;
    bool first = true;
    auto race_under_hook = [](auto race_ab) -> task<> {
      co_await on_cancel(std::move(race_ab), say("cancelling `race` future"));
    };
    auto h = [&] {
      if (first) {
        print("begin cancelling `b`");
        first = false;
      }
      if (done) print("cancellation of `b` complete");
      return done;
    };
    {
      executor ex{on_cancel(race_under_hook(race(returns(42), on_cancel(pending<int>(), quell::poll_fn(h)))),
                            say("cancelling root future"))};
      ex.poll_once();
      ex.poll_once();
      ex.poll_once();
      done = true;
    }
  }

  title("5. Nested hooks run outside-in");
  {
    executor ex{on_cancel(on_cancel(pending(), hook("inner hook")), hook("outer hook"))};
    ex.poll_once();
  }

  title("6. An exception unwinds inside-out through the hooks, then propagates");
  {
    auto thrower = []() -> task<> {
      throw X();
      co_return;
    };
    auto middle = [&]() -> task<> { co_await on_cancel(thrower(), hook("inner hook")); };
    try {
      executor{on_cancel(middle(), hook("outer hook"))}.run();
    } catch (const X&) {
      print("run() threw X");
    }
  }

  title("7. An exception in a race branch cancels the other branches first");
  {
    auto thrower = []() -> task<> {
      throw X();
      co_return;
    };
    try {
      executor{race(thrower(), on_cancel(pending(), hook("b hook")))}.run();
    } catch (const X&) {
      print("run() threw X");
    }
  }

  title("8. An executor destroyed before its first turn runs nothing, hooks included");
  { executor ex{on_cancel(say("body ran"), say("hook ran"))}; }
  print("(nothing was printed)");

  title("9. Cancelling a completed task is a no-op: its hook never runs");
  {
    executor ex{on_cancel(returns(7), hook("hook ran"))};
    print("result: " + std::to_string(ex.run()));
    ex.cancel();
  }

  title("10. A slow loser: race delivers its value only after the loser's hook finished");
  {
    auto slow_hook = []() -> task<> {
      for (int turn = 1; turn <= 3; ++turn) {
        print("loser hook, turn " + std::to_string(turn));
        co_await quell::yield();
      }
      print("loser hook done");
    };
    const int r = executor{race(returns(1), on_cancel(pending<int>(), slow_hook()))}.run();
    print("race returned " + std::to_string(r));
  }

  title("11. A tiny echo server on io_uring with a 200 ms idle timeout: the client goes quiet and is cut off");
  quell::block_on(echo_demo());

  title(
      "12. A scope fans out three backend requests; one fails, the other two are cancelled and run their async cleanup "
      "before the error is reported (virtual time)");
  {
    quell::virtual_clock clock;
    executor{fan_out(clock), clock}.run();
  }
  return 0;
}
