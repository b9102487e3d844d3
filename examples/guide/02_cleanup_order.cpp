// docs/guide/02-cancellation.md: on_cancel hooks and defer cleanups, once each, in a defined order.
#include <cstdio>
#include <string>

#include "guide.hpp"

// [guide:cleanup-order]
quell::task<> slowly(std::string what) {
  note(what + ": begins");
  co_await quell::sleep_for(10ms);
  note(what + ": ends");
}

quell::task<> job() {
  co_await quell::defer(slowly("defer 1 (close the connection)"));
  co_await quell::defer(slowly("defer 2 (return the permit)"));
  co_await quell::on_cancel(quell::on_cancel(quell::pending(), slowly("inner hook")), slowly("outer hook"));
}

int main() {
  quell::virtual_clock clock;
  quell::executor ex{job(), clock};
  ex.poll_once();
  ex.cancel();
  ex.cancel();  // a second request changes nothing: the cancellation under way goes on
  try {
    ex.run();
  } catch (const quell::cancelled_error&) {
    std::printf("the root ended cancelled, after all of its cleanup\n");
  }
}
// [/guide:cleanup-order]
