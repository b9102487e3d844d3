// docs/guide/03-structured-concurrency.md: the first error cancels the other members.
#include <stdexcept>
#include <string>

#include "guide.hpp"

// [guide:scope-error]
quell::task<std::string> request(std::string name, quell::duration takes, bool fails) {
  auto release = [name]() -> quell::task<> {  // named before the co_await below (g++ 12)
    auto why = quell::this_task::cancel_reason();
    note(name + ": cleanup (" + (why ? why->describe() : "not cancelled") + ")");
    co_await quell::sleep_for(5ms);  // the backend acknowledges
    note(name + ": backend released");
  };
  co_await quell::defer(release);
  co_await quell::sleep_for(takes);
  if (fails) throw std::runtime_error(name + " failed");
  co_return name + " ok";
}

quell::task<> three_requests() {
  try {
    co_await quell::with_scope([](quell::scope& s) -> quell::task<> {
      s.spawn(request("A", 100ms, false));
      s.spawn(request("B", 200ms, false));
      s.spawn(request("C", 30ms, true));
      co_return;
    });
  } catch (const std::exception& e) {
    note(std::string("the scope threw: ") + e.what());
  }
}
// [/guide:scope-error]

int main() {
  quell::virtual_clock clock;
  quell::executor{three_requests(), clock}.run();
}
