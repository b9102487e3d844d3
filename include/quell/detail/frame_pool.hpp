// Coroutine frame allocation: a per-thread recycling pool of size classes (off under ASan, see
// config.hpp). Frames freed on another thread go to that thread's pool; nothing is shared.
// The fast paths are inline: a frame is allocated and freed on every task await.
#pragma once
#include <cstddef>
#include <new>

#include "quell/detail/config.hpp"

namespace quell::detail {

#if QUELL_FRAME_POOL
struct frame_pool {
  static constexpr std::size_t granule = 64;
  static constexpr std::size_t classes = 16;  // frames up to 1 KiB are recycled
  static constexpr unsigned max_cached_per_class = 256;

  struct free_frame {
    free_frame* next;
  };
  free_frame* heads[classes];
  unsigned counts[classes];
  bool cleanup_registered;
  bool gone;  // the thread is exiting and its cache was emptied: stop caching

  static std::size_t class_of(std::size_t size) noexcept { return (size + granule - 1) / granule - 1; }
  void register_cleanup() noexcept;  // out of line: frees this thread's cache when it exits
};
// Plain data, constant-initialised: every access is a direct thread-local load, no init guard.
constinit inline thread_local frame_pool tls_frames{};

QUELL_HOT void* frame_alloc(std::size_t size) {
  const std::size_t c = frame_pool::class_of(size);
  if (c < frame_pool::classes) {
    frame_pool& p = tls_frames;
    if (frame_pool::free_frame* f = p.heads[c]) {
      p.heads[c] = f->next;
      --p.counts[c];
      return f;
    }
    return ::operator new((c + 1) * frame_pool::granule);
  }
  return ::operator new(size);
}

QUELL_HOT void frame_free(void* ptr, std::size_t size) noexcept {
  const std::size_t c = frame_pool::class_of(size);
  frame_pool& p = tls_frames;
  if (c < frame_pool::classes && p.counts[c] < frame_pool::max_cached_per_class && !p.gone) {
    if (!p.cleanup_registered) p.register_cleanup();
    auto* f = static_cast<frame_pool::free_frame*>(ptr);
    f->next = p.heads[c];
    p.heads[c] = f;
    ++p.counts[c];
    return;
  }
  ::operator delete(ptr);
}
#else
QUELL_HOT void* frame_alloc(std::size_t size) { return ::operator new(size); }
inline void frame_free(void* p, std::size_t) noexcept { ::operator delete(p); }
#endif

}  // namespace quell::detail
