#include "quell/detail/frame_pool.hpp"

namespace quell::detail {

#if QUELL_FRAME_POOL
namespace {
struct pool_cleanup {
  ~pool_cleanup() {
    frame_pool& p = tls_frames;
    for (frame_pool::free_frame*& h : p.heads) {
      while (h) {
        frame_pool::free_frame* n = h->next;
        ::operator delete(h);
        h = n;
      }
    }
    for (unsigned& r : p.room) r = 0;  // every later free takes the slow path and deletes
    p.gone = true;
  }
};
}  // namespace

void frame_pool::register_cleanup() noexcept {
  static thread_local pool_cleanup cleanup;
  (void)cleanup;
  cleanup_registered = true;
  for (unsigned& r : room) r = max_cached_per_class;  // nothing is cached yet
}

void frame_free_slow(void* ptr, std::size_t size) noexcept {
  frame_pool& p = tls_frames;
  if (frame_pool::class_of(size) < frame_pool::classes && !p.cleanup_registered && !p.gone) {
    p.register_cleanup();
    frame_free(ptr, size);  // there is room now
    return;
  }
  ::operator delete(ptr);
}
#endif

}  // namespace quell::detail
