// What a suspended task waits on, for the task tree (quell/task_tree.hpp). An awaiter describes
// itself with `void describe_wait(wait_note&) const`; one that does not is named by its type
// (detail::type_name in driver.hpp).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "quell/clock.hpp"

namespace quell::detail {

struct wait_note {
  std::string what;                      // "read_some on fd 7", "race of 2", "semaphore"
  time_point until = time_point::max();  // a timer's expiry: the reader shows the time left
  // on(core, ...) awaited here or in a combinator's branch: the frames the other cores' roots
  // hang from (the task tree puts them under this task).
  std::vector<const void*> links;
};

// The unqualified name of T without template arguments ("sleep_awaiter"), from the compiler's
// own spelling of this function's signature (both g++ and clang write "T = <type>").
template <class T>
std::string_view type_name() noexcept {
  std::string_view s = __PRETTY_FUNCTION__;
  const std::size_t at = s.find("T = ");
  if (at == std::string_view::npos) return "an operation";
  s.remove_prefix(at + 4);
  s = s.substr(0, s.find_first_of(";]"));
  if (const std::size_t lt = s.find('<'); lt != std::string_view::npos) s = s.substr(0, lt);
  for (std::string_view ns : {"quell::detail::", "quell::"}) {
    if (s.substr(0, ns.size()) == ns) s.remove_prefix(ns.size());
  }
  return s;
}

}  // namespace quell::detail
