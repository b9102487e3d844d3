// docs/guide/03-structured-concurrency.md: move_on_after, timeout, this_task::deadline.
#include <optional>
#include <string>

#include "guide.hpp"

// [guide:deadlines]
quell::task<int> query(std::string what, quell::duration takes) {
  note(what + ": budget " + ms(quell::this_task::deadline() - quell::now()));
  co_await quell::sleep_for(takes);
  co_return 42;
}

quell::task<> deadlines() {
  std::optional<int> fast = co_await quell::move_on_after(100ms, query("fast", 30ms));
  note(fast ? "fast: " + std::to_string(*fast) : "fast: gave up");

  std::optional<int> slow = co_await quell::move_on_after(100ms, query("slow", 300ms));
  note(slow ? "slow: " + std::to_string(*slow) : "slow: gave up");

  try {
    co_await quell::timeout(50ms, query("strict", 300ms));
  } catch (const quell::timed_out& e) {
    note(std::string("strict: timed_out: ") + e.what());
  }

  // Deadlines nest: the earliest one is the budget.
  co_await quell::move_on_after(80ms, quell::timeout(1s, query("nested", 10ms)));
}
// [/guide:deadlines]

int main() {
  quell::virtual_clock clock;
  quell::executor{deadlines(), clock}.run();
}
