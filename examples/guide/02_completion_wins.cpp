// docs/guide/02-cancellation.md: completion wins; a value a cancelled receive was handed is kept.
#include <cstdio>
#include <optional>
#include <variant>

#include "quell/quell.hpp"

// [guide:completion-wins]
quell::task<> worker(quell::channel<int>& inbox, quell::event& stop) {
  for (;;) {
    auto got = co_await quell::race(stop.wait(), inbox.receive());
    if (got.index() == 0) break;  // the stop won
    std::printf("worker: message %d\n", *std::get<1>(got));
  }
  std::printf("worker: stopped, %zu message(s) left in the inbox\n", inbox.size());
}

quell::task<> controller(quell::channel<int>& inbox, quell::event& stop) {
  co_await inbox.send(1);
  co_await quell::yield();
  stop.set();              // the stop and message 2 arrive in the same turn: the worker's
  co_await inbox.send(2);  // receive is handed 2, then loses the race to the stop
}

quell::task<> stop_while_busy() {
  quell::channel<int> inbox{8};
  quell::event stop;
  co_await quell::join(worker(inbox, stop), controller(inbox, stop));
  std::optional<int> last = co_await inbox.receive();
  std::printf("after the stop, the next receive got message %d\n", *last);
}
// [/guide:completion-wins]

int main() { quell::block_on(stop_while_busy()); }
