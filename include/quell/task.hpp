// task<T>: quell's coroutine type.
//
// A task is lazy: calling the coroutine function only creates the frame; nothing runs until the
// task is awaited (by another task, a combinator, or an executor). It is move-only and awaited at
// most once, by value: `co_await std::move(t)` or `co_await make_task()`.
//
// States: not started -> running -> finished (with a value, an exception, or cancelled).
//   - Destroying a task that was never started runs nothing (not even its cleanup hooks).
//   - Destroying a running task is a bug and ends the process with std::terminate and a message
//     naming the coroutine that was dropped: every started task must be owned until it finishes.
//   - A finished task's frame (and so its locals) is destroyed by whoever owns the task; a task
//     that ended cancelled is destroyed as soon as its waiter learns so, innermost first.
//
// Who resumes whom: the awaiter starts the task by resuming it. When the task finishes, it resumes
// its waiter. If the task ends cancelled, its waiter is told so and its own body is not resumed.
//
// Cancellation: a request reaching a running task is stored in it (sticky) and forwarded to the
// awaitable it is suspended on. Every `co_await` inside the task goes through quell's awaiter state
// machine (quell/cancellation.hpp), so every suspension point is a cancellation point; an
// operation that completed anyway delivers its result and the task is cancelled at its next
// `co_await` instead. A request stronger than the last one (forced after graceful) is forwarded
// again; one that is not is ignored.
//
// Stack use: resumptions are plain calls whose nesting is bounded (detail/scheduler.hpp), so an
// await chain of any depth, or a loop of any length over tasks that finish at once, runs in
// bounded stack with every compiler and optimisation level.
//
// The promise and the wrapper around each `co_await` inside a task are in detail/promise.hpp.
#pragma once

#include <coroutine>
#include <stdexcept>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/detail/promise.hpp"
#include "quell/detail/scheduler.hpp"

namespace quell {

template <class T>
class [[nodiscard]] task {
 public:
  using promise_type = detail::promise<T>;
  using value_type = T;

  task() noexcept = default;
  task(task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  task& operator=(task&& o) noexcept {
    if (this != &o) {
      detail::release_frame(h_);
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  ~task() { detail::release_frame(h_); }

  // False for a default-constructed, moved-from or already awaited task.
  bool valid() const noexcept { return static_cast<bool>(h_); }

  // The awaiter owns the frame from here on (the task becomes empty).
  class awaiter {
   public:
    explicit awaiter(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
    awaiter(awaiter&& o) noexcept : h_(std::exchange(o.h_, {})) {}
    awaiter(const awaiter&) = delete;
    ~awaiter() { detail::release_frame(h_); }

    bool await_ready() const noexcept { return false; }
    QUELL_HOT void await_suspend(std::coroutine_handle<> waiter) noexcept {
      h_.promise().start(waiter);
      detail::resume(h_);
    }
    bool await_early_cancel() const noexcept { return true; }  // never started: nothing runs
    void describe_wait(detail::wait_note& out) const {
      out.what = h_ ? std::string("`") + h_.promise().where.function + "`" : std::string("a task");
    }
    static constexpr bool reentrant_cancel = true;  // see driver::cancel_thunk
    bool await_cancel(std::coroutine_handle<>, const cancel_request& r) noexcept {
      h_.promise().request_cancel(r);
      return false;  // the task reports its end through its waiter, possibly during this call
    }
    // A task that ended cancelled is freed here: nothing will be taken from it, and a cancelled
    // chain then unwinds innermost first, one level at a time, instead of recursively from the top.
    bool await_must_resume() const noexcept { return detail::settle_finished(h_); }
    detail::task_record* child_task() noexcept { return &h_.promise(); }
    T await_resume() { return h_.promise().result.take(); }

   private:
    mutable std::coroutine_handle<promise_type> h_;
  };

  awaiter operator co_await() && {
    if (!h_) throw std::logic_error("quell: co_await on an empty task (moved-from or already awaited)");
    return awaiter(std::exchange(h_, {}));
  }

 private:
  friend promise_type;
  friend struct detail::task_access<T>;
  explicit task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  std::coroutine_handle<promise_type> h_;
};

// What follows needs task<T> complete: a task's `co_await` of a task, and the promise's
// get_return_object.

namespace detail {

// `co_await` of a task inside a task, the most common await there is. It keeps the rules of
// task_await<task<U>::awaiter> (the generic driver around the task's awaiter) and is cheaper
// because the child is known to be a quell task:
//   - a request pending in the parent skips the child (the task's await_early_cancel: never
//     started, nothing of it runs) and ends the parent cancelled;
//   - a request reaching the parent while it waits is forwarded to the child through
//     `awaited_task` (promise_base::request_cancel), also while the child is still running
//     inside await_suspend, so it takes effect at the child's next suspension point;
//   - the child is started by a bounded detail::resume; if it finishes before that returns (the
//     usual case: a helper that suspends on nothing), its continuation is still null, so its
//     finish() resumes nobody and the parent's body goes on without suspending: no driver, no
//     second resume, no park;
//   - if it suspends, its continuation becomes this object (a resume_target), the parent is
//     parked for stuck reports, and on_resume later settles it like driver::on_resume would;
//   - settling is task::awaiter::await_must_resume: a failed cleanup's error is the result; a
//     child that ended cancelled is freed at once and the parent ends cancelled.
// One difference in timing only: a child that ends cancelled inside the call that started it
// (from its own await_suspend) is freed when that call returns, and the parent's waiter is told
// from the run queue; through the driver, the child's waiter was told from the run queue and the
// child freed then. Either way the chain unwinds innermost first, and nothing of the parent runs.
template <class U>
class task_await_task : resume_target {
  using phase = promise_base::phase;

 public:
  // The resume_target is armed only if the child suspends (most never do).
  task_await_task(promise_base& p, task<U>&& t) : p_(p), child_(task_access<U>::take(std::move(t))) {}
  task_await_task(task_await_task&&) = delete;
  ~task_await_task() { release_frame(child_); }

  bool await_ready() const noexcept { return false; }  // a task only runs from await_suspend

  QUELL_HOT bool await_suspend(std::coroutine_handle<> body) noexcept {
    if (p_.request.level != cancel_level::none) [[unlikely]] {
      p_.end_cancelled_from_suspend();  // the child never starts
      return true;
    }
    p_.awaited_task = &child_.promise();
    if (run_inline(child_)) [[likely]] {
      p_.awaited_task = nullptr;
      if (settle_finished(child_)) [[likely]]
        return false;  // resume the body now, with the result
      p_.end_cancelled_from_suspend();
      return true;
    }
    body_ = body;
    arm(&on_resume);
    child_.promise().continuation = handle();
    p_.park();
    return true;
  }

  U await_resume() {
    tls.context = &p_;  // the body runs again: it is the current node
    return child_.promise().result.take();
  }

 private:
  // The child finished after suspending.
  static void on_resume(void* a) noexcept {
    auto* self = static_cast<task_await_task*>(static_cast<resume_target*>(a));
    self->p_.awaited_task = nullptr;
    self->p_.unpark();
    if (settle_finished(self->child_)) {
      if (tls.hooks) [[unlikely]]
        hook_task(hook_event::resumed, self->p_);
      detail::resume(self->body_);
    } else {
      self->p_.end_cancelled();
    }
  }

  promise_base& p_;
  std::coroutine_handle<promise<U>> child_;
  std::coroutine_handle<> body_;  // set when the child suspends
};

template <class T>
task<T> promise<T>::get_return_object() noexcept {
  return task<T>(std::coroutine_handle<promise<T>>::from_promise(*this));
}
inline task<void> promise<void>::get_return_object() noexcept {
  return task<void>(std::coroutine_handle<promise<void>>::from_promise(*this));
}
}  // namespace detail

}  // namespace quell
