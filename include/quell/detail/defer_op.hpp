// How defer works (quell/defer.hpp states the contract): the record a cleanup lives in on its task's
// cleanup stack, and the awaiter that registers it.
// It needs the public types of that header complete, so the header includes this file at its end.
#pragma once

#include "quell/defer.hpp"

namespace quell::detail {

template <class F>
class cleanup_impl final : public cleanup_base {
 public:
  template <class X>
  explicit cleanup_impl(X&& f) : runner_(std::forward<X>(f)) {}
  bool start(void* owner, driver_base::done_fn fn) noexcept override { return runner_.start(owner, fn); }
  void cancel(const cancel_request& r) noexcept override { runner_.cancel(r); }
  std::exception_ptr error() noexcept override { return runner_.error(); }

 private:
  hook_runner<F> runner_;
};

promise_base& current_task_for_defer();

template <class F>
class defer_awaiter {
 public:
  template <class X>
  defer_awaiter(X&& f, duration bound, bool bounded) : f_(std::forward<X>(f)), bound_(bound), bounded_(bounded) {}

  bool await_early_cancel() const noexcept { return false; }  // registering is not a cancellation point
  bool await_ready() {
    promise_base& task = current_task_for_defer();  // throws on misuse, before anything is allocated
    auto* c = new cleanup_impl<F>(std::move(f_));
    c->bound = bound_;
    c->bounded = bounded_;
    task.add_cleanup(c);
    return true;
  }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  void await_resume() const noexcept {}

 private:
  F f_;
  duration bound_;
  bool bounded_;
};

}  // namespace quell::detail
