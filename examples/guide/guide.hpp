// Helpers shared by the guide's examples (docs/guide/). Each example is a complete program whose
// output the guide shows; the regions between `[guide:NAME]` markers are the guide's code blocks.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

#include "quell/quell.hpp"

using namespace std::chrono_literals;

// [guide:note]
// Prints a line prefixed with the time on the running executor's clock. On a virtual clock
// that starts at zero, it is the time since the program started, in milliseconds.
inline void note(const std::string& line) {
  auto t = std::chrono::duration_cast<std::chrono::milliseconds>(quell::now().time_since_epoch());
  std::printf("%5lld ms  %s\n", static_cast<long long>(t.count()), line.c_str());
}

// "250 ms": a duration in whole milliseconds.
inline std::string ms(quell::duration d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms";
}
// [/guide:note]
