#include "quell/detail/frame_pool.hpp"

#include <new>

namespace quell::detail {

#if QUELL_FRAME_POOL
namespace {
constexpr std::size_t granule = 64;
constexpr std::size_t classes = 16;             // frames up to 1 KiB are recycled
constexpr std::size_t max_cached_per_class = 256;

struct free_frame {
  free_frame* next;
};

struct pool {
  free_frame* heads[classes] = {};
  std::size_t counts[classes] = {};
  ~pool() {
    for (free_frame*& h : heads) {
      while (h) {
        free_frame* n = h->next;
        ::operator delete(h);
        h = n;
      }
    }
    alive = false;
  }
  static thread_local bool alive;
};
thread_local bool pool::alive = true;
thread_local pool the_pool;

std::size_t class_of(std::size_t size) noexcept { return (size + granule - 1) / granule - 1; }
}  // namespace

void* frame_alloc(std::size_t size) {
  const std::size_t c = class_of(size);
  if (c < classes && pool::alive) {
    pool& p = the_pool;
    if (free_frame* f = p.heads[c]) {
      p.heads[c] = f->next;
      --p.counts[c];
      return f;
    }
    return ::operator new((c + 1) * granule);
  }
  return ::operator new(size);
}

void frame_free(void* ptr, std::size_t size) noexcept {
  const std::size_t c = class_of(size);
  if (c < classes && pool::alive) {
    pool& p = the_pool;
    if (p.counts[c] < max_cached_per_class) {
      auto* f = static_cast<free_frame*>(ptr);
      f->next = p.heads[c];
      p.heads[c] = f;
      ++p.counts[c];
      return;
    }
  }
  ::operator delete(ptr);
}
#else
void* frame_alloc(std::size_t size) { return ::operator new(size); }
void frame_free(void* p, std::size_t) noexcept { ::operator delete(p); }
#endif

}  // namespace quell::detail
