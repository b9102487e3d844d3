// The reference point for W1: the smallest correct lazy C++20 task a developer would write by
// hand: symmetric transfer, plain new/delete, no cancellation, no bookkeeping.
#pragma once

#include <coroutine>
#include <exception>
#include <utility>

namespace minimal {

template <class T>
class task {
 public:
  struct promise_type {
    std::coroutine_handle<> continuation = std::noop_coroutine();
    T value{};
    task get_return_object() noexcept { return task(std::coroutine_handle<promise_type>::from_promise(*this)); }
    std::suspend_always initial_suspend() noexcept { return {}; }
    struct final_awaiter {
      bool await_ready() noexcept { return false; }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept {
        return h.promise().continuation;
      }
      void await_resume() noexcept {}
    };
    final_awaiter final_suspend() noexcept { return {}; }
    void return_value(T v) noexcept { value = std::move(v); }
    void unhandled_exception() noexcept { std::terminate(); }
  };

  explicit task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  task(task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  ~task() {
    if (h_) h_.destroy();
  }

  bool await_ready() noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> c) noexcept {
    h_.promise().continuation = c;
    return h_;
  }
  T await_resume() noexcept { return std::move(h_.promise().value); }

  // Runs a root task to completion (it must not suspend on anything external).
  T sync_wait() {
    h_.resume();
    return std::move(h_.promise().value);
  }

 private:
  std::coroutine_handle<promise_type> h_;
};

}  // namespace minimal
