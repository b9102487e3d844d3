// docs/guide/02-cancellation.md: graceful, then forced (executor::shutdown), and reasons.
#include <cstdio>
#include <string>

#include "guide.hpp"

// [guide:shutdown]
quell::task<> flush_log() {
  auto why = quell::this_task::cancel_reason();  // why the task that registered us is ending
  note("cleanup: flushing the log (" + (why ? why->describe() : "not cancelled") + ")");
  auto cut_short = [] { note("cleanup: cut short by a forced request"); };
  co_await quell::on_cancel(quell::sleep_for(2s), cut_short);
  note("cleanup: the log is flushed");
}

quell::task<> service() {
  co_await quell::defer(flush_log);
  note("service: running");
  co_await quell::pending();
}

void run_and_shut_down(quell::duration grace) {
  quell::virtual_clock clock;
  quell::executor ex{service(), clock};
  ex.poll_once();
  ex.shutdown(grace);  // graceful now, forced once `grace` has passed
  std::printf("shutdown(%s) returned\n", ms(grace).c_str());
}

int main() {
  run_and_shut_down(5s);
  run_and_shut_down(500ms);
}
// [/guide:shutdown]
