// docs/guide/01-getting-started.md: with_scope.
#include <string>

#include "guide.hpp"

// [guide:first-scope]
quell::task<int> download(std::string name, quell::duration takes, int bytes) {
  note("start " + name);
  co_await quell::sleep_for(takes);
  note("done " + name);
  co_return bytes;
}

quell::task<> download_all() {
  int total = co_await quell::with_scope([](quell::scope& s) -> quell::task<int> {
    auto a = s.spawn(download("a.txt", 30ms, 100));
    auto b = s.spawn(download("b.txt", 10ms, 20));
    s.spawn(download("c.txt", 50ms, 3));  // no handle kept: the scope still waits for it
    co_return co_await a + co_await b;
  });
  note("the scope returned " + std::to_string(total));
}
// [/guide:first-scope]

int main() {
  quell::virtual_clock clock;
  quell::executor{download_all(), clock}.run();
}
