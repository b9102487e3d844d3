// Where a task was created, captured without <source_location> (clang 14 with libstdc++ 12 has
// no std::source_location; both compilers have the builtins).
#pragma once
#include <cstdint>

namespace quell::detail {

struct site {
  const char* file = "?";
  const char* function = "?";
  std::uint32_t line = 0;

  // A default argument is evaluated where the call is written; for a promise constructor that
  // is the coroutine's own definition, so this names the coroutine function.
  static constexpr site here(const char* f = __builtin_FILE(), std::uint32_t l = __builtin_LINE(),
                             const char* fn = __builtin_FUNCTION()) noexcept {
    return site{f, fn, l};
  }
};

}  // namespace quell::detail
