// The async cleanups registered with one task (quell/defer.hpp): a stack, run last-first when the
// task ends, each shielded and optionally bounded, before the task's waiter hears of the end.
#pragma once

#include <exception>

#include "quell/cancellation.hpp"
#include "quell/clock.hpp"
#include "quell/detail/alarm.hpp"
#include "quell/detail/driver.hpp"
#include "quell/detail/resume_target.hpp"
#include "quell/detail/scheduler.hpp"

namespace quell::detail {

struct cleanup_base {
  cleanup_base* next = nullptr;
  duration bound{};
  bool bounded = false;

  cleanup_base() = default;
  cleanup_base(const cleanup_base&) = delete;
  cleanup_base& operator=(const cleanup_base&) = delete;
  virtual ~cleanup_base() = default;
  // Same contract as hook_runner (quell/on_cancel.hpp).
  virtual bool start(void* owner, driver_base::done_fn fn) noexcept = 0;
  virtual void cancel(const cancel_request& r) noexcept = 0;
  virtual std::exception_ptr error() noexcept = 0;
};

class cleanup_stack : resume_target {
 public:
  using finished_fn = void (*)(task_record* owner) noexcept;

  cleanup_stack(task_record& owner, finished_fn finished) noexcept;
  cleanup_stack(const cleanup_stack&) = delete;
  cleanup_stack& operator=(const cleanup_stack&) = delete;
  ~cleanup_stack();

  void push(cleanup_base* c) noexcept {
    c->next = top_;
    top_ = c;
  }
  bool empty() const noexcept { return top_ == nullptr && current_ == nullptr; }
  // A cleanup is running now (the owner's body has ended).
  bool running() const noexcept { return current_ != nullptr; }

  // Runs every registered cleanup, last registered first, then calls `finished(owner)`.
  void run() noexcept { step(); }
  // The same, from the run queue (when the owner is inside a call that must return first).
  void run_later() noexcept { detail::post(handle()); }
  // A request that reached the owner while its cleanups run: only a forced one gets through.
  void request(const cancel_request& r) noexcept;

  // The first cleanup failure, with later ones attached to it.
  std::exception_ptr error;

 private:
  void step() noexcept;
  bool finish_current() noexcept;
  static void on_posted(void* self) noexcept;
  static void on_cleanup_done(void* self, driver_base*) noexcept;
  static void on_alarm(void* self) noexcept;

  task_record& owner_;
  finished_fn finished_;
  cleanup_base* top_ = nullptr;
  cleanup_base* current_ = nullptr;
  bool current_done_ = false;
  bounded_frame node_{context_node::kind::shield, nullptr, context_node::tag::bounded_cleanup};
  alarm alarm_;
};

}  // namespace quell::detail
