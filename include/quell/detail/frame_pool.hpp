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
  // 32-byte steps: a frame is rounded up by 16 bytes on average, not 32 (bytes per task: W3 in
  // bench/compare/WORKLOADS.md).
  static constexpr std::size_t granule = 32;
  static constexpr std::size_t classes = 32;  // frames up to 1 KiB are recycled
  static constexpr unsigned max_cached_per_class = 256;

  struct free_frame {
    free_frame* next;
  };
  free_frame* heads[classes];
  // How many more frames each class may cache. Zero until this thread's cleanup is registered
  // (the first free takes the slow path, which registers it) and again once the thread is
  // exiting, so that the fast path of frame_free tests a single number.
  unsigned room[classes];
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
      ++p.room[c];
      return f;
    }
    return ::operator new((c + 1) * frame_pool::granule);
  }
  return ::operator new(size);
}

// The first free on a thread, a full class, a large frame, or a thread that is exiting.
void frame_free_slow(void* ptr, std::size_t size) noexcept;

QUELL_HOT void frame_free(void* ptr, std::size_t size) noexcept {
  const std::size_t c = frame_pool::class_of(size);
  frame_pool& p = tls_frames;
  if (c < frame_pool::classes && p.room[c] != 0) [[likely]] {
    auto* f = static_cast<frame_pool::free_frame*>(ptr);
    f->next = p.heads[c];
    p.heads[c] = f;
    --p.room[c];
    return;
  }
  frame_free_slow(ptr, size);
}
#else
QUELL_HOT void* frame_alloc(std::size_t size) { return ::operator new(size); }
inline void frame_free(void* p, std::size_t) noexcept { ::operator delete(p); }
#endif

}  // namespace quell::detail
