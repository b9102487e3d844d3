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
    p.gone = true;
  }
};
}  // namespace

void frame_pool::register_cleanup() noexcept {
  static thread_local pool_cleanup cleanup;
  (void)cleanup;
  cleanup_registered = true;
}
#endif

}  // namespace quell::detail
