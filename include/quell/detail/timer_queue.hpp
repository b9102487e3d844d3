// The executor's timers: a binary min-heap of intrusive nodes ordered by (deadline, arming
// order), with O(log n) removal so that a cancelled timer leaves at once.
#pragma once

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "quell/clock.hpp"

namespace quell::detail {

class timer_queue;

struct timer_node {
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  time_point deadline{};
  std::uint64_t seq = 0;
  std::size_t heap_index = npos;
  timer_queue* queue = nullptr;
  std::coroutine_handle<> waiter;
  bool fired = false;

  bool armed() const noexcept { return heap_index != npos; }
  void disarm() noexcept;
};

class timer_queue {
 public:
  explicit timer_queue(clock_source& c) noexcept : clock_(&c) {}
  timer_queue(const timer_queue&) = delete;
  timer_queue& operator=(const timer_queue&) = delete;

  clock_source& clock() const noexcept { return *clock_; }
  bool empty() const noexcept { return heap_.empty(); }
  std::size_t size() const noexcept { return heap_.size(); }
  time_point next_deadline() const noexcept { return heap_.front()->deadline; }

  void arm(timer_node* n);
  // Equal deadlines fire in arming order. A timer armed late may take its place in that order
  // early: take_seq() when its owner starts, arm_taken() with that number once it is needed.
  std::uint64_t take_seq() noexcept { return next_seq_++; }
  void arm_taken(timer_node* n);
  void remove(timer_node* n) noexcept;
  // Pops every timer due at the clock's current time, earliest first, marking it fired and
  // passing its waiter to `ready`.
  template <class F>
  void fire_due(F&& ready) {
    if (heap_.empty()) return;  // every turn calls this: no clock read when no timer is armed
    const time_point t = clock_->now();
    while (!heap_.empty() && heap_.front()->deadline <= t) {
      timer_node* n = heap_.front();
      remove(n);
      n->fired = true;
      ready(n->waiter);
    }
  }

 private:
  static bool before(const timer_node* a, const timer_node* b) noexcept {
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
  }
  void place(std::size_t i, timer_node* n) noexcept {
    heap_[i] = n;
    n->heap_index = i;
  }
  void sift_up(std::size_t i) noexcept;
  void sift_down(std::size_t i) noexcept;

  clock_source* clock_;
  std::vector<timer_node*> heap_;
  std::uint64_t next_seq_ = 0;
};

inline void timer_node::disarm() noexcept {
  if (armed()) queue->remove(this);
}

}  // namespace quell::detail
