// A resumable thing that is not a coroutine.
//
// GCC and Clang both implement std::coroutine_handle<>::resume() as "call the function pointer
// stored at offset 0 of the frame, passing the frame's address" (the destroy function sits at
// offset 8). A struct with that layout can therefore be handed to any awaitable as if it were a
// coroutine. quell uses this so that when a leaf resumes "its waiter", control first reaches the
// awaiter state machine (detail/driver.hpp), which decides whether the waiting coroutine's body
// runs (value, exception, completed anyway) or not (cancelled). tests/core/test_runtime_internals.cpp
// pins the layout assumption on both compilers.
#pragma once
#include <coroutine>

namespace quell::detail {

struct resume_target {
  using fn = void (*)(void*);
  fn resume_fn;
  fn destroy_fn;

  explicit resume_target(fn on_resume) noexcept : resume_fn(on_resume), destroy_fn(&refuse_destroy) {}
  resume_target(const resume_target&) = default;
  resume_target& operator=(const resume_target&) = default;

 protected:
  // Leaves both pointers unset, for a target on a hot path that is often never handed out; it
  // must call arm() before handle() is given to anyone.
  resume_target() noexcept = default;
  void arm(fn on_resume) noexcept {
    resume_fn = on_resume;
    destroy_fn = &refuse_destroy;
  }

 public:
  std::coroutine_handle<> handle() noexcept { return std::coroutine_handle<>::from_address(this); }

  // An awaitable must never destroy the handle of its waiter; doing so is reported, not ignored.
  [[noreturn]] static void refuse_destroy(void*) noexcept;
};

}  // namespace quell::detail
