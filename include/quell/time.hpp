// Time: the executor's clock, sleep_for / sleep_until, and a virtual clock for tests.
//
//   co_await quell::sleep_for(250ms);
//   co_await quell::sleep_until(quell::now() + 1s);
//
// Timers live in user space, in the executor: arming and disarming one costs a heap insertion
// and removal, never a system call. When nothing is ready to run, the executor's wait step waits
// until the nearest deadline (with io_uring, one kernel timeout for the nearest deadline).
//
// Clocks are injectable. An executor uses the steady clock unless given another clock_source:
//
//   quell::virtual_clock clock;                      // starts at its epoch, moves only when told
//   quell::executor ex{root(), clock};
//   ex.run();  // when every task waits and only timers remain, time jumps to the next deadline
//
// On a virtual clock, time advances only while every task is blocked, so code that sleeps for an
// hour is tested in microseconds, deterministically. poll_once() never advances it (the test may
// call clock.advance()); run() and the destructor do.
//
// Cancellation: a sleep cancelled before its deadline ends at once (its timer is removed); a
// sleep whose deadline passed in the same turn its cancellation arrived completes normally
// (completion wins). A sleep whose deadline has already passed completes at once.
// Timers with the same deadline fire in the order they were armed.
#pragma once

#include <chrono>
#include <coroutine>

#include "quell/clock.hpp"
#include "quell/detail/scheduler.hpp"
#include "quell/detail/timer_queue.hpp"

namespace quell {

// The clock of the executor running on this thread (the steady clock outside any executor).
time_point now() noexcept;

class sleep_awaiter : detail::timer_node {
 public:
  // A deadline, or a duration counted from when the sleep starts.
  static sleep_awaiter until(time_point t) noexcept { return sleep_awaiter(t, duration{}, false); }
  static sleep_awaiter after(duration d) noexcept { return sleep_awaiter(time_point{}, d, true); }
  sleep_awaiter(sleep_awaiter&& o) noexcept : sleep_awaiter(o.deadline, o.delay_, o.relative_) {}
  sleep_awaiter(const sleep_awaiter&) = delete;
  ~sleep_awaiter() { disarm(); }

  bool await_ready() noexcept;
  void await_suspend(std::coroutine_handle<> h) noexcept;
  bool await_cancel(std::coroutine_handle<>) noexcept {
    if (fired) return false;  // its resumption is already queued: completion wins
    disarm();
    return true;
  }
  bool await_must_resume() const noexcept { return fired; }
  void await_resume() const noexcept {}

 private:
  sleep_awaiter(time_point t, duration d, bool relative) noexcept : delay_(d), relative_(relative) { deadline = t; }
  duration delay_;
  bool relative_;
};

inline sleep_awaiter sleep_until(time_point deadline) noexcept { return sleep_awaiter::until(deadline); }
inline sleep_awaiter sleep_for(duration d) noexcept { return sleep_awaiter::after(d); }

}  // namespace quell
