// docs/guide/03-structured-concurrency.md: task_set, results in completion order.
#include <stdexcept>
#include <string>

#include "guide.hpp"

// [guide:task-set]
quell::task<std::string> lookup(std::string host, quell::duration takes) {
  co_await quell::sleep_for(takes);
  if (host == "delta") throw std::runtime_error(host + ": no such host");
  co_return host + ": found";
}

quell::task<> look_up_all() {
  co_await quell::with_task_set<std::string>([](quell::task_set<std::string>& set) -> quell::task<> {
    set.spawn(lookup("alpha", 30ms));
    set.spawn(lookup("beta", 10ms));
    set.spawn(lookup("gamma", 20ms));
    set.spawn(lookup("delta", 15ms));
    set.close();  // nothing more will be added
    for (;;) {
      try {
        std::optional<std::string> r = co_await set.next();
        if (!r) break;  // closed, and every result taken
        note(*r);
      } catch (const std::exception& e) {
        note(std::string("error: ") + e.what());
      }
    }
  });
}
// [/guide:task-set]

int main() {
  quell::virtual_clock clock;
  quell::executor{look_up_all(), clock}.run();
}
