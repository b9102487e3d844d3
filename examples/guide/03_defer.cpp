// docs/guide/03-structured-concurrency.md: defer, and a cleanup that owns what it uses.
#include <string>
#include <utility>

#include "guide.hpp"

// [guide:defer]
quell::task<> upload(quell::semaphore& slots, std::string file, quell::duration takes) {
  quell::permit slot = co_await slots.acquire();
  auto finish = [file, slot = std::move(slot)]() mutable -> quell::task<> {
    co_await quell::sleep_for(5ms);  // tell the storage service we are done
    slot.release();
    note(file + ": slot returned");
  };
  co_await quell::defer(std::move(finish));  // from here on, every exit returns the slot
  co_await quell::sleep_for(takes);
  note(file + ": uploaded");
}

quell::task<> uploads() {
  quell::semaphore slots{1};
  auto both = quell::join(upload(slots, "a.bin", 20ms), upload(slots, "b.bin", 60ms));
  co_await quell::move_on_after(50ms, std::move(both));
  note(std::to_string(slots.available()) + " slot(s) available");
}
// [/guide:defer]

int main() {
  quell::virtual_clock clock;
  quell::executor{uploads(), clock}.run();
}
