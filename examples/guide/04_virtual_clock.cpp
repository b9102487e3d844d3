// docs/guide/04-io-and-testing.md: the virtual clock.
#include <chrono>
#include <cstdio>
#include <string>

#include "guide.hpp"

// [guide:backoff]
// Stands for a connection attempt: the server answers the twelfth.
bool try_connect(int attempt) { return attempt == 12; }

quell::task<int> connect_with_backoff() {
  quell::duration wait = 1s;
  int attempt = 1;
  while (!try_connect(attempt)) {
    co_await quell::sleep_for(wait);
    wait *= 2;
    ++attempt;
  }
  co_return attempt;
}

void backoff() {
  quell::virtual_clock clock;
  auto started = std::chrono::steady_clock::now();
  int attempt = quell::executor{connect_with_backoff(), clock}.run();
  auto real = std::chrono::steady_clock::now() - started;
  auto virtual_s = std::chrono::duration_cast<std::chrono::seconds>(clock.now().time_since_epoch()).count();
  std::printf("connected at attempt %d, after %lld s of virtual time\n", attempt, static_cast<long long>(virtual_s));
  std::printf("real time: %s\n", real < 1s ? "less than a second" : "a second or more");
}
// [/guide:backoff]

// [guide:step-by-step]
quell::task<> heartbeat(int& beats) {
  for (;;) {
    ++beats;
    co_await quell::sleep_for(1s);
  }
}

void step_by_step() {
  quell::virtual_clock clock;
  int beats = 0;
  quell::executor ex{heartbeat(beats), clock};
  ex.poll_once();  // the first turn starts the task: one beat, then it sleeps until 1 s
  clock.advance(3s);
  ex.poll_once();  // its timer is due: one more beat (a late timer fires once)
  std::printf("beats: %d\n", beats);
}  // the executor's destructor cancels the heartbeat and drives it to its end
// [/guide:step-by-step]

int main() {
  backoff();
  step_by_step();
}
