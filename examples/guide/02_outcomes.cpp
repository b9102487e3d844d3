// docs/guide/02-cancellation.md: cancelled is a third outcome, not an exception.
#include <cstdio>

#include "quell/quell.hpp"

// [guide:outcomes]
struct guard {
  ~guard() { std::printf("worker: guard destroyed\n"); }
};

quell::task<> worker() {
  guard g;
  try {
    std::printf("worker: waiting\n");
    co_await quell::pending();  // never completes on its own
    std::printf("worker: never printed\n");
  } catch (...) {
    std::printf("worker: never printed either\n");
  }
}

int main() {
  quell::executor ex{worker()};
  ex.poll_once();  // the first turn starts the root, which suspends in pending()
  ex.cancel(quell::cancel_reason(quell::cancel_kind::requested, "the user pressed stop"));
  try {
    ex.run();
  } catch (const quell::cancelled_error& e) {
    std::printf("run() threw cancelled_error: %s\n", e.what());
  }
}
// [/guide:outcomes]
