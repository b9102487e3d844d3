// docs/guide/05-coming-from-asio.md: one executor per core instead of strands.
#include <optional>
#include <string>

#include "guide.hpp"

// [guide:cores]
std::string core() { return "core " + std::to_string(quell::this_core()); }

quell::task<> release_shard() {
  note(core() + ": releasing the shard");
  co_await quell::sleep_for(5ms);
  note(core() + ": shard released");
}

quell::task<int> count_shard() {
  co_await quell::defer(release_shard);  // runs on every exit, here on core 1
  co_await quell::sleep_for(100ms);      // a slow scan
  co_return 7;
}

quell::task<> search() {
  note(core() + ": searching on core 1, with a budget of 40 ms");
  std::optional<int> n = co_await quell::move_on_after(40ms, quell::on(1, [] { return count_shard(); }));
  note(core() + ": " + (n ? std::to_string(*n) + " matches" : "out of time"));
}

int main() {
  quell::virtual_clock clock;  // deterministic: both cores on this thread, in a fixed order
  quell::runtime rt{quell::runtime_options{.cores = 2, .one_thread = true, .clock = &clock}};
  rt.run(search());
}
// [/guide:cores]
