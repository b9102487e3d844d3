// docs/guide/03-structured-concurrency.md: start() and started(); s.cancel() stops the children.
#include <string>

#include "guide.hpp"

// [guide:start]
quell::task<> cache_service(quell::task_status<int>& status) {
  co_await quell::sleep_for(20ms);  // loading
  status.started(1000);             // start() returns 1000 now; this task goes on in the scope
  co_await quell::defer([] { note("cache: stopped"); });
  for (;;) {
    co_await quell::sleep_for(50ms);
    note("cache: refreshed");
  }
}

quell::task<> application() {
  co_await quell::with_scope([](quell::scope& s) -> quell::task<> {
    int entries = co_await s.start<int>(cache_service);
    note("the cache is ready with " + std::to_string(entries) + " entries");
    co_await quell::sleep_for(120ms);  // the application's own work
    note("the work is done, stopping the children");
    s.cancel();  // cancels the children, not this body
  });
  note("the scope is closed");
}
// [/guide:start]

int main() {
  quell::virtual_clock clock;
  quell::executor{application(), clock}.run();
}
