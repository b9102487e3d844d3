#include <cstdio>
#include <quell/quell.hpp>

quell::task<int> answer() { co_return 42; }

int main() {
  const int r = quell::block_on(quell::race(answer(), quell::pending<int>()));
  std::printf("consumer: race returned %d\n", r);
  return r == 42 ? 0 : 1;
}
