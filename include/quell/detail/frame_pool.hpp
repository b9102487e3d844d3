// Coroutine frame allocation: a per-thread recycling pool of size classes (off under ASan, see
// config.hpp). Frames freed on another thread go to that thread's pool; nothing is shared.
#pragma once
#include <cstddef>

#include "quell/detail/config.hpp"

namespace quell::detail {

void* frame_alloc(std::size_t size);
void frame_free(void* p, std::size_t size) noexcept;

}  // namespace quell::detail
