// The scenario log: `print` appends a line; tests compare the whole log exactly.
#pragma once

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

}  // namespace quell::test
