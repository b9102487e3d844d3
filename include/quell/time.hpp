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
// (completion wins; a sleep produces nothing a later call could miss, so nothing is lost either
// way). A sleep whose deadline has already passed completes at once.
// Timers with the same deadline fire in the order they were armed.
#pragma once

#include <chrono>
#include <coroutine>

#include "quell/clock.hpp"
#include "quell/detail/scheduler.hpp"
#include "quell/detail/timer_queue.hpp"
#include "quell/detail/wait_note.hpp"

namespace quell {

// The clock of the executor running on this thread (the steady clock outside any executor).
time_point now() noexcept;

class sleep_request;

// The timer a sleep waits on. Made by co_await on what sleep_for / sleep_until return.
class sleep_awaiter : detail::timer_node {
 public:
  sleep_awaiter(sleep_awaiter&& o) noexcept : sleep_awaiter(o.deadline, o.relative_) {}
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
  void describe_wait(detail::wait_note& out) const {
    out.what = "sleep";
    out.until = deadline;
  }

 private:
  friend class sleep_request;
  sleep_awaiter(time_point t, bool relative) noexcept : relative_(relative) { deadline = t; }
  // Until the sleep starts, a relative sleep keeps its delay in `deadline` (as time since the
  // clock's epoch). The flag sits in timer_node's tail padding: the awaiter is what a suspended
  // task's frame holds, once per sleeping task.
  bool relative_;
};

// What sleep_for / sleep_until return: only the deadline or the delay, so the temporary that a
// co_await keeps in the coroutine frame is 16 bytes; co_await makes the timer.
class [[nodiscard]] sleep_request {
 public:
  sleep_awaiter operator co_await() const noexcept { return sleep_awaiter(t_, relative_); }

 private:
  friend sleep_request sleep_until(time_point) noexcept;
  friend sleep_request sleep_for(duration) noexcept;
  sleep_request(time_point t, bool relative) noexcept : t_(t), relative_(relative) {}
  time_point t_;
  bool relative_;
};

inline sleep_request sleep_until(time_point deadline) noexcept { return sleep_request(deadline, false); }
// The delay is counted from when the sleep starts (its co_await), not from this call.
inline sleep_request sleep_for(duration d) noexcept { return sleep_request(time_point(d), true); }

}  // namespace quell
