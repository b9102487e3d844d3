#include "quell/time.hpp"

#include "quell/detail/scheduler.hpp"

namespace quell {

steady_clock_source& steady_clock_source::instance() noexcept {
  static steady_clock_source s;
  return s;
}

time_point now() noexcept {
  if (detail::scheduler* s = detail::tls.current) return s->timers().clock().now();
  return clock_type::now();
}

bool sleep_awaiter::await_ready() noexcept {
  const time_point t = now();
  if (relative_) {
    deadline = t + deadline.time_since_epoch();
    relative_ = false;
  }
  return deadline <= t;
}

void sleep_awaiter::await_suspend(std::coroutine_handle<> h) noexcept {
  detail::scheduler* s = detail::tls.current;
  if (!s) detail::fatal("quell: sleep_for/sleep_until awaited outside an executor");
  waiter = h;
  s->timers().arm(this);
}

namespace detail {

void timer_queue::arm(timer_node* n) {
  n->seq = next_seq_++;
  arm_taken(n);
}

void timer_queue::arm_taken(timer_node* n) {
  n->queue = this;
  n->fired = false;
  heap_.push_back(n);
  n->heap_index = heap_.size() - 1;
  sift_up(n->heap_index);
}

void timer_queue::remove(timer_node* n) noexcept {
  const std::size_t i = n->heap_index;
  n->heap_index = timer_node::npos;
  timer_node* last = heap_.back();
  heap_.pop_back();
  if (last == n) return;
  place(i, last);
  sift_up(i);
  sift_down(last->heap_index);
}

void timer_queue::sift_up(std::size_t i) noexcept {
  timer_node* n = heap_[i];
  while (i > 0) {
    const std::size_t parent = (i - 1) / 2;
    if (!before(n, heap_[parent])) break;
    place(i, heap_[parent]);
    i = parent;
  }
  place(i, n);
}

void timer_queue::sift_down(std::size_t i) noexcept {
  timer_node* n = heap_[i];
  const std::size_t size = heap_.size();
  for (;;) {
    std::size_t child = 2 * i + 1;
    if (child >= size) break;
    if (child + 1 < size && before(heap_[child + 1], heap_[child])) ++child;
    if (!before(heap_[child], n)) break;
    place(i, heap_[child]);
    i = child;
  }
  place(i, n);
}

}  // namespace detail
}  // namespace quell
