#include "quell/executor.hpp"

#include <stdexcept>
#include <string>
#include <thread>

#include "quell/detail/reactor.hpp"

namespace quell::detail {

namespace {
// Makes `s` the current scheduler for the duration of a call into the executor.
class enter_executor {
 public:
  explicit enter_executor(scheduler& s) noexcept : saved_(tls.current) { tls.current = &s; }
  ~enter_executor() { tls.current = saved_; }
  enter_executor(const enter_executor&) = delete;
  enter_executor& operator=(const enter_executor&) = delete;

 private:
  scheduler* saved_;
};
}  // namespace

void executor_core::root_done(void* self, driver_base*) noexcept { static_cast<executor_core*>(self)->done_ = true; }

namespace {
class active_call {
 public:
  explicit active_call(int& n) noexcept : n_(n) { ++n_; }
  ~active_call() { --n_; }
  active_call(const active_call&) = delete;
  active_call& operator=(const active_call&) = delete;

 private:
  int& n_;
};
}  // namespace

bool executor_core::turn() {
  if (active_ != 0) {
    throw std::logic_error("quell: executor::poll_once()/run() called from inside one of its own tasks");
  }
  active_call a(active_);
  enter_executor in(sched_);
  node_list batch;
  sched_.take_next_turn(batch);
  if (!started_) {
    started_ = true;
    if (root_.start_erased(this, &root_done, req_.level != cancel_level::none ? &req_ : nullptr)) done_ = true;
  }
  sched_.timers().fire_due([&](std::coroutine_handle<> h) { sched_.post(h); });
  sched_.run_batch(batch);
  sched_.drain_ready();
  return done_;
}

bool executor_core::poll_once() {
  if (done_) return true;
  if (turn()) return true;
  io_step(false);  // hand this turn's I/O to the kernel and collect what completed
  return done_;
}

std::string executor_core::stuck_report() const {
  std::string s =
      "quell: nothing can make progress: the root has not finished, yet no task is ready, no "
      "timer is armed, no I/O is in flight and nothing outside can wake the executor.";
  std::string live = sched_.describe_live();
  if (live.empty()) {
    s += " The root awaitable itself is waiting (it is not a task).";
  } else {
    s += " Waiting tasks, oldest first:\n" + live;
  }
  return s;
}

bool executor_core::io_live() const noexcept {
  const reactor* io = sched_.io_if_any();
  return io && (io->in_flight() > 0 || io->external_sources > 0);
}

void executor_core::io_step(bool block) {
  if (!io_live()) return;
  enter_executor in(sched_);  // completions are posted to this executor's queue
  reactor& io = sched_.io();
  timer_queue& timers = sched_.timers();
  if (!block) {
    io.poll(false, std::nullopt);
    return;
  }
  if (timers.empty()) {
    io.poll(true, std::nullopt);
    return;
  }
  clock_source& clock = timers.clock();
  if (!clock.is_virtual()) {
    io.poll(true, timers.next_deadline());
    return;
  }
  // Virtual time moves only when nothing else can happen: give I/O its (real-time) chance first.
  const duration grace = clock.io_grace();
  const std::size_t n = grace > duration::zero() ? io.poll(true, clock_type::now() + grace) : io.poll(false, {});
  if (n == 0) clock.advance_to(timers.next_deadline());
}

bool executor_core::wait_step() {
  if (io_live()) {
    io_step(true);
    return true;
  }
  timer_queue& timers = sched_.timers();
  if (timers.empty()) return false;  // nothing can ever wake a task
  clock_source& clock = timers.clock();
  if (clock.is_virtual()) {
    clock.advance_to(timers.next_deadline());
  } else {
    std::this_thread::sleep_until(timers.next_deadline());
  }
  return true;
}

void executor_core::drive() {
  if (done_) return;
  while (!turn()) {
    if (sched_.has_work()) {
      io_step(false);  // other work is ready: collect completions without waiting
    } else if (!wait_step()) {
      throw stuck_error(stuck_report());
    }
  }
}

bool executor_core::drive_quietly() noexcept {
  try {
    drive();
  } catch (...) {
    return done_;
  }
  return true;
}

void executor_core::cancel(cancel_level level, cancel_reason reason) noexcept {
  if (done_ || level <= req_.level) return;
  if (req_.level == cancel_level::none) req_.reason = std::move(reason);
  req_.level = level;
  if (!started_) return;  // the root starts with the request pending, so it never runs
  active_call a(active_);
  enter_executor in(sched_);
  root_.cancel(req_);
  if (active_ == 1) sched_.drain_ready();  // inside a turn, the turn's own loop runs what was queued
}

void executor_core::shutdown() noexcept {
  if (!started_ || done_) return;
  cancel(cancel_level::graceful, cancel_reason(cancel_kind::shutdown));
  if (drive_quietly()) return;
  cancel(cancel_level::forced, cancel_reason(cancel_kind::shutdown));
  if (drive_quietly()) return;
  fatal(
      "quell: an executor is being destroyed, but its root cannot finish cancelling even after a "
      "forced request. " +
      stuck_report());
}

}  // namespace quell::detail
