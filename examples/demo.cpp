// quell's demo: the reference scenarios of the design contract, each under a one-line title,
// with the lines it prints. Run it to watch the cancellation model work.
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
  return 0;
}
