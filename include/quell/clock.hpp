// Clocks: what an executor asks for the time. See quell/time.hpp for timers and how an executor
// uses a virtual clock.
#pragma once

#include <chrono>

namespace quell {

using clock_type = std::chrono::steady_clock;
using time_point = clock_type::time_point;
using duration = clock_type::duration;

class clock_source {
 public:
  virtual ~clock_source() = default;
  virtual time_point now() const noexcept = 0;
  // A virtual clock is advanced by the executor (to the next deadline) instead of waited for.
  virtual bool is_virtual() const noexcept { return false; }
  virtual void advance_to(time_point) noexcept {}
  // On a virtual clock with I/O in flight: how long (in real time) to wait for a completion before
  // jumping to the next deadline. Zero: jump as soon as a check finds nothing completed.
  virtual duration io_grace() const noexcept { return duration::zero(); }
};

class steady_clock_source final : public clock_source {
 public:
  time_point now() const noexcept override { return clock_type::now(); }
  static steady_clock_source& instance() noexcept;
};

class virtual_clock final : public clock_source {
 public:
  virtual_clock() noexcept = default;
  explicit virtual_clock(time_point start) noexcept : now_(start) {}
  time_point now() const noexcept override { return now_; }
  bool is_virtual() const noexcept override { return true; }
  void advance_to(time_point t) noexcept override {
    if (t > now_) now_ = t;
  }
  void advance(duration d) noexcept { now_ += d; }
  duration io_grace() const noexcept override { return io_grace_; }
  // Tests whose peers are real (a child process, a socket) give them this much real time to answer
  // before virtual time jumps ahead.
  void set_io_grace(duration real) noexcept { io_grace_ = real; }

 private:
  time_point now_{};
  duration io_grace_ = duration::zero();
};

}  // namespace quell
