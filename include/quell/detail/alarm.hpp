// A timer owned by a combinator (a deadline, a shield's bound): calls back into its owner on the
// executor's thread. A fired timer's call is queued, not immediate, so an owner that finishes
// in the meantime must wait for that call (pending()) before it may be destroyed.
#pragma once

#include "quell/clock.hpp"
#include "quell/detail/resume_target.hpp"
#include "quell/detail/scheduler.hpp"
#include "quell/detail/timer_queue.hpp"

namespace quell::detail {

class alarm : timer_node, resume_target {
 public:
  using fire_fn = void (*)(void* owner) noexcept;
  alarm(void* owner, fire_fn f) noexcept : resume_target(&on_resume), owner_(owner), fire_(f) { waiter = handle(); }
  alarm(const alarm&) = delete;
  alarm& operator=(const alarm&) = delete;
  ~alarm() { disarm(); }

  void arm_at(time_point t) noexcept {
    reserve();
    arm_reserved_at(t);
  }
  // For an alarm armed only once its owner's operation waits (a deadline): takes the alarm's
  // place among timers due at the same instant now, as if it were armed before the operation
  // started, so that an outer deadline still fires before an inner one due with it.
  void reserve() noexcept {
    scheduler* s = tls.current;
    if (!s) fatal("quell: a deadline or bounded shield was awaited outside an executor");
    seq = s->timers().take_seq();
  }
  // Arms a reserved alarm, in the place reserve() took.
  void arm_reserved_at(time_point t) noexcept {
    deadline = t;
    called_ = false;
    tls.current->timers().arm_taken(this);
  }
  using timer_node::armed;
  // Not armed any more: a timer that has not fired is removed at once.
  void stop() noexcept { disarm(); }
  // Fired, and its call has not run yet.
  bool pending() const noexcept { return fired && !called_; }

 private:
  static void on_resume(void* p) noexcept {
    auto* self = static_cast<alarm*>(static_cast<resume_target*>(p));
    self->called_ = true;
    self->fire_(self->owner_);  // may destroy *self
  }
  void* owner_;
  fire_fn fire_;
  bool called_ = false;
};

// t + d, saturating at time_point::max() (timeout(duration::max(), op) never expires).
inline time_point add_saturating(time_point t, duration d) noexcept {
  if (d > time_point::max() - t) return time_point::max();
  return t + d;
}

}  // namespace quell::detail
