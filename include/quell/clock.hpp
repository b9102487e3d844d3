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

 private:
  time_point now_{};
};

}  // namespace quell
