// docs/guide/01-getting-started.md: the first program.
// [guide:hello]
#include <cstdio>
#include <string>

#include "quell/quell.hpp"

quell::task<std::string> greeting(std::string name) { co_return "hello, " + name; }

quell::task<int> greet() {
  std::string text = co_await greeting("world");
  std::printf("%s\n", text.c_str());
  co_return static_cast<int>(text.size());
}

int main() {
  int n = quell::block_on(greet());
  std::printf("the root task returned %d\n", n);
}
// [/guide:hello]
