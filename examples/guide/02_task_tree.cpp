// docs/guide/02-cancellation.md: the live task tree shows where a cancellation stands.
#include <regex>
#include <string>

#include "guide.hpp"

quell::task<> save(std::string what) {
  co_await quell::sleep_for(30ms);
  note("saved " + what);
}

quell::task<> handle_order() {
  co_await quell::shield(save("the order"));
  co_await quell::this_task::checkpoint();
}

quell::task<> client_gives_up() { co_await quell::race(handle_order(), quell::sleep_for(10ms)); }

// Each task's "(file:line)": left out here, because the line a compiler names differs (g++ the
// coroutine's closing brace, clang its first line).
std::string without_sites(const std::string& tree) {
  return std::regex_replace(tree, std::regex(R"( \([^()]*\.cpp:[0-9]+\))"), "");
}

// [guide:tree]
quell::task<> look_inside() {
  co_await quell::sleep_for(20ms);
  quell::task_tree tree = quell::task_tree_here();  // this executor's live tasks, now
  std::printf("%s", without_sites(tree.to_string()).c_str());
}

quell::task<> main_task() { co_await quell::join(client_gives_up(), look_inside()); }
// [/guide:tree]

int main() {
  quell::virtual_clock clock;
  quell::executor{main_task(), clock}.run();
}
