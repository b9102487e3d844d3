// Work the executor itself owns, beside its root: long-lived I/O operations that let something
// outside wake it (a signal watcher, the cross-thread waker), and timers that call back into it
// (a shutdown grace period). None of it is a task, and none of it outlives the root: when the
// root has finished, services are cancelled and drained (their CQEs reaped) before the executor
// returns or frees anything.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <vector>

#include "quell/cancellation.hpp"
#include "quell/detail/reactor.hpp"
#include "quell/detail/resume_target.hpp"
#include "quell/detail/timer_queue.hpp"

namespace quell::detail {

// An io_op whose "waiter" is a callback, resumed on the executor's thread.
struct service : io_op, resume_target {
  explicit service(prep_fn p) noexcept : io_op(p, &always_done), resume_target(&on_resume) { waiter = handle(); }
  virtual ~service() = default;
  // The op's CQE arrived (res holds its result) and the executor is not stopping it.
  virtual void fired() noexcept = 0;
  // The root has finished and the executor is stopping its services (disarm timers here).
  virtual void on_stop() noexcept {}

  bool armed() const noexcept { return state == phase::queued || state == phase::in_flight; }
  bool stopping = false;

 private:
  static bool always_done(io_op*, int) noexcept { return true; }
  static void on_resume(void* p) noexcept {
    auto* s = static_cast<service*>(static_cast<resume_target*>(p));
    if (!s->stopping) s->fired();
  }
};

// A timer that calls `fn` on the executor's thread when it fires.
struct callback_timer : timer_node, resume_target {
  explicit callback_timer(std::function<void()> f) : resume_target(&on_resume), fn(std::move(f)) { waiter = handle(); }
  ~callback_timer() { disarm(); }
  callback_timer(const callback_timer&) = delete;
  callback_timer& operator=(const callback_timer&) = delete;
  std::function<void()> fn;

 private:
  static void on_resume(void* p) noexcept { static_cast<callback_timer*>(static_cast<resume_target*>(p))->fn(); }
};

// What other threads share with an executor (quell::remote_handle).
struct remote_state {
  std::mutex m;
  std::vector<std::function<void()>> posted;
  cancel_level level = cancel_level::none;
  cancel_reason reason;
  int efd = -1;  // eventfd the executor's waker reads; -1 once the executor is gone
  std::atomic<int> handles{0};

  void wake() noexcept;  // under m
};

}  // namespace quell::detail
