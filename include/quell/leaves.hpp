// The basic leaves: pending, ready, yield, poll_fn.
//
//   pending<T>()  never completes. A cancel request ends it at once (synchronously).
//   ready(v)      completes at once with v (ready() with no argument: void). Like every
//                 `co_await`, it is still a cancellation point: in a task that has been asked to
//                 cancel, `co_await ready(v)` ends the task instead.
//   yield()       lets every other ready task run: it resumes in the executor's next turn.
//                 A cancel request ends it at once; it does not wait for the turn.
//   poll_fn(f)    calls f() now and then once per executor turn until it yields a value:
//                 f returns std::optional<T> (the leaf yields T) or bool (the leaf yields void,
//                 done when f returns true). A cancel request ends it at once; f is not called
//                 again. If f throws, the leaf ends with that exception.
//
// All of them are single-threaded: resume, cancel and completion happen on the executor's thread.
#pragma once

#include <coroutine>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "quell/detail/scheduler.hpp"
#include "quell/detail/wait_note.hpp"

namespace quell {

template <class T = void>
struct pending_awaiter {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  bool await_cancel(std::coroutine_handle<>) const noexcept { return true; }
  bool await_must_resume() const noexcept { return false; }
  [[noreturn]] T await_resume() const noexcept { std::terminate(); }  // never resumed
  void describe_wait(detail::wait_note& out) const { out.what = "pending (completes never)"; }
};

template <class T = void>
pending_awaiter<T> pending() noexcept {
  return {};
}

template <class T>
struct ready_awaiter {
  T value;
  bool await_ready() const noexcept { return true; }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  T await_resume() { return std::move(value); }
};
template <>
struct ready_awaiter<void> {
  bool await_ready() const noexcept { return true; }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  void await_resume() const noexcept {}
};

template <class T>
ready_awaiter<std::decay_t<T>> ready(T&& v) {
  return {std::forward<T>(v)};
}
inline ready_awaiter<void> ready() noexcept { return {}; }

class yield_awaiter : detail::turn_node {
 public:
  yield_awaiter() noexcept { run = &on_turn; }
  yield_awaiter(yield_awaiter&&) noexcept : yield_awaiter() {}
  yield_awaiter(const yield_awaiter&) = delete;
  ~yield_awaiter() { unlink(); }

  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) noexcept {
    waiter_ = h;
    detail::scheduler* s = detail::this_thread().current;
    if (!s) {
      on_turn(this);  // no executor: nothing else could run anyway
      return;
    }
    s->run_next_turn(this);
  }
  bool await_cancel(std::coroutine_handle<>) noexcept {
    unlink();
    return true;
  }
  bool await_must_resume() const noexcept { return true; }
  void await_resume() const noexcept {}
  void describe_wait(detail::wait_note& out) const { out.what = "yield (the next turn)"; }

 private:
  static void on_turn(detail::turn_node* n) noexcept { detail::resume(static_cast<yield_awaiter*>(n)->waiter_); }
  std::coroutine_handle<> waiter_;
};

inline yield_awaiter yield() noexcept { return {}; }

namespace detail {
template <class R>
struct poll_value;
template <class T>
struct poll_value<std::optional<T>> {
  using type = T;
};
template <>
struct poll_value<bool> {
  using type = void;
};
}  // namespace detail

template <class F>
class poll_fn_awaiter : detail::turn_node {
  using R = std::invoke_result_t<F&>;
  using T = typename detail::poll_value<R>::type;

 public:
  explicit poll_fn_awaiter(F f) : f_(std::move(f)) { run = &on_turn; }
  poll_fn_awaiter(poll_fn_awaiter&& o) : f_(std::move(o.f_)) { run = &on_turn; }
  poll_fn_awaiter(const poll_fn_awaiter&) = delete;
  ~poll_fn_awaiter() { unlink(); }

  bool await_ready() { return poll(); }
  void await_suspend(std::coroutine_handle<> h) noexcept {
    waiter_ = h;
    requeue();
  }
  bool await_cancel(std::coroutine_handle<>) noexcept {
    unlink();
    return true;
  }
  bool await_must_resume() const noexcept { return true; }
  T await_resume() {
    if (error_) std::rethrow_exception(error_);
    if constexpr (!std::is_void_v<T>) return std::move(*value_);
  }

 private:
  // True when f produced the value (or threw).
  bool poll() {
    if constexpr (std::is_void_v<T>) {
      return f_();
    } else {
      value_ = f_();
      return value_.has_value();
    }
  }
  void requeue() noexcept {
    if (detail::scheduler* s = detail::this_thread().current) {
      s->run_next_turn(this);
    } else {
      detail::fatal("quell: poll_fn awaited outside an executor");
    }
  }
  static void on_turn(detail::turn_node* n) noexcept {
    auto* self = static_cast<poll_fn_awaiter*>(n);
    bool done;
    try {
      done = self->poll();
    } catch (...) {
      self->error_ = std::current_exception();
      done = true;
    }
    if (done) {
      detail::resume(self->waiter_);
    } else {
      self->requeue();
    }
  }

  F f_;
  std::coroutine_handle<> waiter_;
  std::conditional_t<std::is_void_v<T>, char, std::optional<std::conditional_t<std::is_void_v<T>, int, T>>> value_{};
  std::exception_ptr error_;
};

template <class F>
poll_fn_awaiter<std::decay_t<F>> poll_fn(F&& f) {
  return poll_fn_awaiter<std::decay_t<F>>(std::forward<F>(f));
}

}  // namespace quell
