// docs/guide/01-getting-started.md: race, on a virtual clock.
#include <string>

#include "guide.hpp"

// [guide:first-race]
// What the loser does when it is cancelled: tell its server to stop, and wait for the answer.
quell::task<> tell_to_stop(std::string server) {
  note(server + ": cancelled, telling the server to stop");
  co_await quell::sleep_for(5ms);
  note(server + ": the server confirmed");
}

quell::task<std::string> fetch(std::string server, quell::duration takes) {
  co_await quell::on_cancel(quell::sleep_for(takes), tell_to_stop(server));
  note(server + ": answered");
  co_return "the answer from " + server;
}

quell::task<> first_answer() {
  std::string answer = co_await quell::race(fetch("primary", 300ms), fetch("replica", 120ms));
  note("race returned " + answer);
}

int main() {
  quell::virtual_clock clock;
  quell::executor{first_answer(), clock}.run();
}
// [/guide:first-race]
