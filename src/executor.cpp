#include "quell/executor.hpp"

#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdio>
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

// What a call that turns the executor (drive, poll_once) sets up once, not once per turn: `s` is
// current, so completions are posted to its queue, and no task's scope encloses what runs (the
// root belongs to this executor, not to a task that polls it).
class inside_executor {
 public:
  explicit inside_executor(scheduler& s) noexcept : in_(s), top_(nullptr) {}

 private:
  enter_executor in_;
  scope_guard top_;
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
  node_list batch;
  sched_.take_next_turn(batch);
  if (!started_) {
    started_ = true;
    if (root_.start_erased(this, &root_done, req_.level != cancel_level::none ? &req_ : nullptr)) done_ = true;
  }
  sched_.timers().fire_due([&](std::coroutine_handle<> h) { sched_.post_completed(h); });
  sched_.run_batch(batch);
  sched_.drain_ready();
  return done_;
}

bool executor_core::poll_once() {
  if (done_) return true;
  inside_executor in(sched_);
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
    s += " Waiting tasks, in the order they first suspended:\n" + live;
  }
  return s;
}

bool executor_core::io_live() const noexcept {
  const reactor* io = sched_.io_if_any();
  return io && (io->in_flight() > 0 || io->external_sources > 0);
}

void executor_core::io_step(bool block) {
  if (!io_live()) return;
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
  if (!done_) {
    inside_executor in(sched_);
    while (!turn()) {
      if (sched_.has_work()) {
        io_step(false);  // other work is ready: collect completions without waiting
      } else if (!wait_step()) {
        throw stuck_error(stuck_report());
      }
    }
  }
  stop_services();
}

void executor_core::add_service(service* s) {
  reactor& r = sched_.io();
  std::erase(services_, s);
  services_.push_back(s);
  r.submit(s);
}

void executor_core::stop_services() noexcept {
  if (services_.empty()) return;
  enter_executor in(sched_);
  reactor& r = sched_.io();
  for (service* s : services_) {
    s->stopping = true;
    s->on_stop();
    if (s->armed()) r.cancel(s);
  }
  auto armed = [&] {
    for (service* s : services_) {
      if (s->armed()) return true;
    }
    return false;
  };
  while (armed()) {
    r.poll(true, std::nullopt);
    sched_.drain_ready();
  }
  services_.clear();
}

executor_core::~executor_core() {
  stop_services();
  if (remote_) {
    std::lock_guard<std::mutex> lock(remote_->m);
    ::close(remote_->efd);
    remote_->efd = -1;
    remote_->posted.clear();
  }
}

void executor_core::shutdown(duration grace) {
  if (started_ && !done_) {
    cancel(cancel_level::graceful, cancel_reason(cancel_kind::shutdown));
    callback_timer escalate(
        [this] { cancel(cancel_level::forced, cancel_reason(cancel_kind::shutdown, "grace period expired")); });
    escalate.deadline = sched_.timers().clock().now() + grace;
    sched_.timers().arm(&escalate);
    try {
      drive();
    } catch (const stuck_error&) {
      escalate.disarm();
      cancel(cancel_level::forced, cancel_reason(cancel_kind::shutdown, "stuck"));
      drive();
    }
  }
  stop_services();
}

// ---- cross-thread wake -------------------------------------------------------------------------

struct executor_core::waker final : service {
  waker(executor_core& c, std::shared_ptr<remote_state> s) : service(&prep), core(c), state(std::move(s)) {}
  static void prep(io_op* op, io_uring_sqe* sqe) noexcept {
    auto* w = static_cast<waker*>(op);
    io_uring_prep_read(sqe, w->state->efd, &w->counter, sizeof w->counter, 0);
  }
  void fired() noexcept override { core.on_remote(); }
  executor_core& core;
  std::shared_ptr<remote_state> state;
  std::uint64_t counter = 0;
};

void remote_state::wake() noexcept {
  if (efd < 0) return;
  const std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(efd, &one, sizeof one);
}

remote_handle executor_core::remote() {
  if (!remote_) {
    auto st = std::make_shared<remote_state>();
    st->efd = ::eventfd(0, EFD_CLOEXEC);
    if (st->efd < 0) throw std::system_error(errno, std::system_category(), "quell: eventfd for remote_handle");
    remote_ = st;
    waker_ = std::make_unique<waker>(*this, st);
  }
  remote_handle h(remote_);
  if (!waker_->armed() && !waker_->stopping) add_service(waker_.get());
  return h;
}

void executor_core::on_remote() noexcept {
  std::vector<std::function<void()>> fns;
  cancel_level level;
  cancel_reason reason;
  {
    std::lock_guard<std::mutex> lock(remote_->m);
    fns.swap(remote_->posted);
    level = std::exchange(remote_->level, cancel_level::none);
    reason = remote_->reason;
  }
  if (level != cancel_level::none) cancel(level, std::move(reason));
  for (auto& f : fns) {
    try {
      f();
    } catch (const std::exception& e) {
      fatal(std::string("quell: a function posted through remote_handle threw: ") + e.what());
    } catch (...) {
      fatal("quell: a function posted through remote_handle threw");
    }
  }
  // Stay armed while some thread can still wake us; otherwise "stuck" must be detectable again.
  if (remote_->handles.load() > 0 || !fns.empty()) add_service(waker_.get());
}

}  // namespace quell::detail

namespace quell {

remote_handle::remote_handle(std::shared_ptr<detail::remote_state> s) noexcept : s_(std::move(s)) {
  s_->handles.fetch_add(1);
}
remote_handle::remote_handle(const remote_handle& o) noexcept : s_(o.s_) {
  if (s_) s_->handles.fetch_add(1);
}
remote_handle& remote_handle::operator=(const remote_handle& o) noexcept {
  if (this != &o) {
    remote_handle tmp(o);
    std::swap(s_, tmp.s_);
  }
  return *this;
}
remote_handle::~remote_handle() {
  if (s_ && s_->handles.fetch_sub(1) == 1) {
    std::lock_guard<std::mutex> lock(s_->m);
    s_->wake();  // let the executor notice that nobody outside can wake it any more
  }
}

void remote_handle::request(cancel_level level, cancel_reason reason) const {
  if (!s_) return;
  std::lock_guard<std::mutex> lock(s_->m);
  if (level > s_->level) {
    if (s_->level == cancel_level::none) s_->reason = std::move(reason);
    s_->level = level;
  }
  s_->wake();
}
void remote_handle::cancel(cancel_reason reason) const { request(cancel_level::graceful, std::move(reason)); }
void remote_handle::force_cancel(cancel_reason reason) const { request(cancel_level::forced, std::move(reason)); }
void remote_handle::post(std::function<void()> fn) const {
  if (!s_) return;
  std::lock_guard<std::mutex> lock(s_->m);
  if (s_->efd < 0) return;
  s_->posted.push_back(std::move(fn));
  s_->wake();
}

}  // namespace quell

namespace quell::detail {

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
  if (!started_ || done_) {
    stop_services();
    return;
  }
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
