// docs/guide/02-cancellation.md: shield, cancel_requested and checkpoint.
#include <string>

#include "guide.hpp"

// [guide:shield]
quell::task<> save(std::string what) {
  co_await quell::sleep_for(30ms);
  note("saved " + what);
}

quell::task<> handle_order() {
  co_await quell::shield(save("the order"));  // a graceful cancel waits until it is done
  bool asked = quell::this_task::cancel_requested();
  note(std::string("cancel_requested() = ") + (asked ? "true" : "false"));
  co_await quell::this_task::checkpoint();  // the held-back request takes effect here
  note("never printed");
}

quell::task<> client_gives_up() {
  co_await quell::race(handle_order(), quell::sleep_for(10ms));
  note("race returned");
}
// [/guide:shield]

int main() {
  quell::virtual_clock clock;
  quell::executor{client_gives_up(), clock}.run();
}
