// The scenario log: `print` appends a line; tests compare the whole log exactly.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "quell/quell.hpp"

namespace quell::test {

struct log {
  std::vector<std::string> lines;

  void print(std::string s) { lines.push_back(std::move(s)); }
  // A task that prints `s` when (and only if) it runs.
  task<> say(std::string s) {
    print(std::move(s));
    co_return;
  }
  // A synchronous hook that prints `s`.
  auto hook(std::string s) {
    return [this, s = std::move(s)] { print(s); };
  }
};

// The virtual clock's reading, in whole milliseconds since its epoch: "15ms".
inline std::string at(const virtual_clock& c) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(c.now().time_since_epoch()).count()) +
         "ms";
}

}  // namespace quell::test
