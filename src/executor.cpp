#include "quell/executor.hpp"

#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>

#include "quell/detail/blocking_pool.hpp"
#include "quell/detail/core_group.hpp"
#include "quell/detail/hooks.hpp"
#include "quell/detail/reactor.hpp"

namespace quell::detail {

namespace {
// The stall detector is on by default where a stall is most likely noticed and least costly to
// look for: in a build of quell without NDEBUG (docs/decisions.md, "Seeing inside").
void default_stall_detector(scheduler& s) {
#ifndef NDEBUG
  if (!s.hub || !s.hub->stall_set) {
    hook_hub& h = hooks_of(s);
    h.stall = true;
    h.threshold = std::chrono::milliseconds(100);
    h.clock = &steady_clock_source::instance();
    update_hooks(s);
  }
#else
  (void)s;
#endif
}

// Makes `s` the current scheduler for the duration of a call into the executor.
class enter_executor {
 public:
  explicit enter_executor(scheduler& s) noexcept : saved_(tls.current), saved_hooks_(tls.hooks) {
    tls.current = &s;
    tls.hooks = s.hooks;
  }
  ~enter_executor() {
    tls.current = saved_;
    tls.hooks = saved_hooks_;
  }
  enter_executor(const enter_executor&) = delete;
  enter_executor& operator=(const enter_executor&) = delete;

 private:
  scheduler* saved_;
  hook_hub* saved_hooks_;
};

// What a call that turns the executor (drive, poll_once) sets up once, not once per turn: `s` is
// current, so completions are posted to its queue, and no task's scope encloses what runs (the
// root belongs to this executor, not to a task that polls it).
class inside_executor {
 public:
  explicit inside_executor(scheduler& s) noexcept : in_(s), top_(nullptr) {}

 private:
  enter_executor in_;
  context_guard top_;
};
}  // namespace

// Announces to remote_handle::cancel's awaiters that the root has finished (once per root). The
// wake-ups are sent after the lock is released: a waiter's mailbox may need its own lock.
void announce_finished(remote_state& st) noexcept {
  node_list waiters;
  {
    std::lock_guard<std::mutex> lock(st.m);
    if (st.root_finished) return;
    st.root_finished = true;
    waiters.splice(st.finish_waiters);
  }
  while (list_node* n = waiters.pop_front()) {
    auto* w = static_cast<mailbox_waiter*>(n);
    w->home.send(w);
  }
}

void executor_core::root_done(void* self, driver_base*) noexcept {
  auto* c = static_cast<executor_core*>(self);
  c->done_ = true;
  if (c->remote_) announce_finished(*c->remote_);
}

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
  sched_.new_turn();
  if (sched_.hooks) sched_.hooks->slice_begins();  // what ran before (and the wait) is no task's
  if (!started_) {
    started_ = true;
    default_stall_detector(sched_);
    if (root_.start_erased(this, &root_done, req_.level != cancel_level::none ? &req_ : nullptr))
      root_done(this, nullptr);
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
  if (!group_ && remote_ && !remote_->inbox_empty()) drain_mailbox();
  io_step(false);  // hand this turn's I/O to the kernel and collect what completed
  return done_;
}

std::string executor_core::stuck_report() const {
  std::string s =
      "quell: nothing can make progress: the root has not finished, yet no task is ready, no "
      "timer is armed, no I/O is in flight and nothing outside can wake the executor.";
  const quell::task_tree t = group_ ? group_->task_tree_when_idle() : task_tree();
  if (t.roots.empty()) {
    s += " The root awaitable itself is waiting (it is not a task).";
  } else {
    s += " The live tasks:\n" + t.to_string();
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
    io.submit_and_reap(false, std::nullopt);
    return;
  }
  if (timers.empty()) {
    io.submit_and_reap(true, std::nullopt);
    return;
  }
  clock_source& clock = timers.clock();
  if (!clock.is_virtual()) {
    io.submit_and_reap(true, timers.next_deadline());
    return;
  }
  // Virtual time moves only when nothing else can happen: give I/O its (real-time) chance first.
  const duration grace = clock.io_grace();
  const std::size_t n =
      grace > duration::zero() ? io.submit_and_reap(true, clock_type::now() + grace) : io.submit_and_reap(false, {});
  if (n == 0) clock.advance_to(timers.next_deadline());
}

bool executor_core::alone_idle() const noexcept {
  if (!sched_.timers().empty()) return false;
  const reactor* io = sched_.io_if_any();
  const std::size_t own = waker_ && waker_->armed() ? 1 : 0;
  if (io && (io->in_flight() > own || io->external_sources > 0)) return false;
  return remote_->handles.load(std::memory_order_acquire) == 0;
}

void executor_core::go_active() noexcept {
  if (!quiet_) return;
  quiet_ = false;
  group_->counts.fetch_add(core_group::one_busy, std::memory_order_acq_rel);
}

// The wait step of a runtime's core with nothing of its own to wait for (see core_group.hpp).
bool executor_core::group_wait_step() {
  if (!quiet_) {
    quiet_ = true;
    const std::uint64_t now =
        group_->counts.fetch_sub(core_group::one_busy, std::memory_order_acq_rel) - core_group::one_busy;
    if (now == 0 && index_ != 0) group_->wake_core0();
  }
  if (index_ == 0 && group_->counts.load(std::memory_order_acquire) == 0) {
    go_active();  // whatever runs next (the report, the destructor's cancel) is work again
    return false;
  }
  if (replies_expected > 0 && spin_for_mail()) {
    drain_mailbox();  // the eventfd read completes later and finds the mailbox empty
    return true;
  }
  io_step(true);
  return true;
}

bool executor_core::wait_step() {
  if (group_ && alone_idle()) return group_wait_step();
  if (!group_ && remote_ && !remote_->inbox_empty()) {
    drain_mailbox();  // sent from this thread (on(0, f)): no need to wait for the eventfd
    return true;
  }
  if (io_live()) {
    io_step(true);
    return true;
  }
  timer_queue& timers = sched_.timers();
  if (timers.empty()) return false;  // nothing can ever wake a task
  clock_source& clock = timers.clock();
  if (clock.is_virtual()) {
    clock.advance_to(timers.next_deadline());
  } else if (reactor* io = sched_.io_if_any(); io && io->background_in_flight() > 0) {
    // Sockets with receive-ahead armed keep receiving while tasks sleep: the kernel runs their
    // receives only inside this thread's io_uring_enter (DEFER_TASKRUN), so wait there.
    io->submit_and_reap(true, timers.next_deadline());
  } else {
    std::this_thread::sleep_until(timers.next_deadline());
  }
  return true;
}

void executor_core::drive() {
  if (!done_ && group_ && group_->lockstep) {
    drive_lockstep();
  } else if (!done_) {
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

// One step of this core in lockstep: its mailbox, one turn, the completions the kernel has.
// True if anything ran or can run without waiting.
bool executor_core::step_lockstep() {
  inside_executor in(sched_);
  bool ran = drain_mailbox();  // also a request rt.cancel() left, which sends no message
  const timer_queue& timers = sched_.timers();
  ran |= sched_.has_work() || !started_ || (!timers.empty() && timers.next_deadline() <= timers.clock().now());
  turn();
  if (io_live()) ran |= sched_.io().submit_and_reap(false, std::nullopt) > 0;
  return ran || sched_.has_work() || !remote_->inbox_empty();
}

// Every core of a lockstep runtime, turned one after another on this thread until this core's
// root has finished. With nothing to run anywhere: the earliest timer of any core (on a virtual
// clock: jump to it), else I/O of any core, else stuck.
void executor_core::drive_lockstep() {
  for (;;) {
    bool ran = false;
    for (auto& slot : group_->cores) {
      executor_core* c = slot.load(std::memory_order_acquire);
      if (c && c->step_lockstep()) ran = true;
      if (done_) return;
    }
    if (ran) continue;
    std::optional<time_point> next;
    bool io = false;
    for (auto& slot : group_->cores) {
      executor_core* c = slot.load(std::memory_order_acquire);
      if (!c) continue;
      const timer_queue& t = c->sched_.timers();
      if (!t.empty() && (!next || t.next_deadline() < *next)) next = t.next_deadline();
      io |= c->io_live();
    }
    clock_source& clock = sched_.timers().clock();
    if (io) {
      // Real I/O: give the kernel its chance on every ring before virtual time may move, for the
      // clock's io_grace (a peer on a real socket answering) or at least 200 us.
      const auto until = clock_type::now() + std::max<duration>(clock.io_grace(), std::chrono::microseconds(200));
      bool reaped = false;
      do {
        for (auto& slot : group_->cores) {
          executor_core* c = slot.load(std::memory_order_acquire);
          if (!c) continue;
          // A message from a thread outside the lockstep (a shared_event set, a permit released)
          // is work too: time must not move past it.
          if (!c->remote_->inbox_empty()) reaped = true;
          if (c->io_live()) {
            inside_executor in(c->sched_);
            reaped |= c->sched_.io().submit_and_reap(
                          true, std::min(until, clock_type::now() + std::chrono::microseconds(200))) > 0;
          }
        }
      } while (!reaped && clock_type::now() < until);
      if (reaped) continue;
    }
    if (next) {
      if (clock.is_virtual()) {
        clock.advance_to(*next);
      } else {
        std::this_thread::sleep_until(*next);
      }
      continue;
    }
    if (!io) throw stuck_error(stuck_report());
  }
}

void executor_core::add_service(service* s) {
  reactor& r = sched_.io();
  // Armed already (remote() and the waker's own re-arm may both ask in one turn): once is enough.
  if (s->armed()) return;
  std::erase(services_, s);
  services_.push_back(s);
  r.submit(s);
}

void executor_core::stop_services() noexcept {
  if (escalate_) escalate_->disarm();
  reactor* io = sched_.io_if_any();
  if (services_.empty() && (!io || (io->background_in_flight() == 0 && io->in_flight() == 0 && !io->rearm_pending())))
    return;
  enter_executor in(sched_);
  reactor& r = sched_.io();
  // Receive-ahead multishots belong to sockets, which may outlive the executor: they end here
  // (what they received stays with the socket), so no kernel operation outlives the executor.
  r.stop_background();
  for (service* s : services_) {
    s->stopping = true;
    s->on_stop();
    if (s->armed()) r.cancel(s);
  }
  auto armed = [&] {
    // Also what no task waits for any more: the multishot of a socket dropped at the end.
    if (r.background_in_flight() > 0 || r.in_flight() > 0) return true;
    for (service* s : services_) {
      if (s->armed()) return true;
    }
    return false;
  };
  while (armed()) {
    r.submit_and_reap(true, std::nullopt);
    sched_.drain_ready();
  }
  services_.clear();
}

executor_core::~executor_core() {
  blocking_.reset();  // every job has come home (its task has ended): this joins idle threads
  stop_services();
  escalate_.reset();
  if (group_) {
    leave_group();
  } else if (remote_) {
    core_message* left;
    {
      std::lock_guard<std::mutex> lock(remote_->m);
      ::close(remote_->efd);
      remote_->efd = -1;
      left = remote_->take_all();
    }
    while (left) {
      core_message* next = left->next;
      if (left->drop) left->drop(left);
      left = next;
    }
  }
  if (remote_) announce_finished(*remote_);  // never started, or stuck: it will not run now
}

void executor_core::escalate_after(duration grace) {
  if (done_) return;
  if (!escalate_) {
    escalate_ = std::make_unique<callback_timer>(
        [this] { cancel(cancel_level::forced, cancel_reason(cancel_kind::shutdown, "grace period expired")); });
  }
  escalate_->disarm();
  escalate_->deadline = sched_.timers().clock().now() + grace;
  sched_.timers().arm(escalate_.get());
}

void executor_core::shutdown(duration grace) {
  // Before the first turn, shutdown is cancel(): the request waits and the root never runs.
  if (!started_) cancel(cancel_level::graceful, cancel_reason(cancel_kind::shutdown));
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

const std::shared_ptr<remote_state>& executor_core::mailbox() {
  if (!remote_) {
    auto st = std::make_shared<remote_state>();
    st->efd = ::eventfd(0, EFD_CLOEXEC);
    if (st->efd < 0) throw std::system_error(errno, std::system_category(), "quell: eventfd for remote_handle");
    remote_ = st;
    waker_ = std::make_unique<waker>(*this, st);
  }
  return remote_;
}

remote_handle executor_core::remote() {
  remote_handle h(mailbox());
  if (!waker_->armed() && !waker_->stopping) add_service(waker_.get());
  return h;
}

void executor_core::join_group(core_group* g, unsigned index) {
  group_ = g;
  index_ = index;
  sched_.core_index = index;
  if (sched_.hub) sched_.hub->core = index;
  remote_ = g->boxes[index];
  {
    std::lock_guard<std::mutex> lock(remote_->m);
    remote_->root_finished = false;
  }
  waker_ = std::make_unique<waker>(*this, remote_);
  g->counts.fetch_add(core_group::one_busy, std::memory_order_acq_rel);
  g->cores[index].store(this, std::memory_order_release);
  if (!g->lockstep) add_service(waker_.get());  // in lockstep the driver reads the mailbox itself
}

void executor_core::leave_group() noexcept {
  group_->cores[index_].store(nullptr, std::memory_order_release);
  if (!quiet_) {
    const std::uint64_t now =
        group_->counts.fetch_sub(core_group::one_busy, std::memory_order_acq_rel) - core_group::one_busy;
    if (now == 0 && index_ != 0) group_->wake_core0();
  }
  quiet_ = true;
}

void executor_core::on_remote() noexcept {
  const bool ran = drain_mailbox();
  if (group_) {
    add_service(waker_.get());  // a runtime's core always listens to its mailbox
    return;
  }
  // Stay armed while some thread can still wake us; otherwise "stuck" must be detectable again.
  if (remote_->handles.load() > 0 || ran || !remote_->inbox_empty()) add_service(waker_.get());
}

// A core that waits for the reply to a cross-core call of its own, with nothing else to do, polls
// its mailbox a little before it sleeps: the reply typically arrives within microseconds, and
// waking a thread that sleeps in the kernel costs several (W10 in bench/compare/WORKLOADS.md: ~19 us per round trip
// without the spin, ~3 us with it). Only then: a core that spun after *sending* a reply kept the CPU its caller was
// being woken on (W11 measured 66 us instead of 16).
bool executor_core::spin_for_mail() noexcept {
  const auto until = clock_type::now() + std::chrono::microseconds(QUELL_CORE_SPIN_US);
  for (unsigned i = 1;; ++i) {
    if (!remote_->inbox_empty()) return true;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
    if ((i & 63) == 0 && clock_type::now() >= until) return false;
  }
}

bool executor_core::drain_mailbox() noexcept {
  core_message* msgs = remote_->take_all();
  cancel_request req;
  {
    std::lock_guard<std::mutex> lock(remote_->m);
    req = remote_->take_request();
  }
  const bool asked = req.level != cancel_level::none;
  if (group_ && (msgs || asked)) go_active();  // busy before the count of what woke it drops
  if (asked) {
    if (group_) group_->counts.fetch_sub(1, std::memory_order_acq_rel);
    cancel(req.level, std::move(req.reason));
  }
  std::uint64_t n = 0;
  while (msgs) {
    core_message* next = msgs->next;
    msgs->run(msgs);  // may free msgs
    msgs = next;
    ++n;
  }
  if (group_ && n) group_->counts.fetch_sub(n, std::memory_order_acq_rel);
  return n > 0;
}

namespace {
// A function posted through remote_handle::post.
struct posted_fn final : core_message {
  explicit posted_fn(std::function<void()> f) : fn(std::move(f)) {
    run = &run_it;
    drop = &drop_it;
  }
  std::function<void()> fn;
  static void run_it(core_message* m) noexcept {
    std::unique_ptr<posted_fn> self(static_cast<posted_fn*>(m));
    try {
      self->fn();
    } catch (const std::exception& e) {
      fatal(std::string("quell: a function posted through remote_handle threw: ") + e.what());
    } catch (...) {
      fatal("quell: a function posted through remote_handle threw");
    }
  }
  static void drop_it(core_message* m) noexcept { delete static_cast<posted_fn*>(m); }
};
}  // namespace

blocking_pool& executor_core::blocking() {
  if (group_) {
    if (group_->lockstep) {
      throw std::logic_error("quell: run_blocking in a runtime_options::one_thread runtime, which starts no threads");
    }
    return *group_->blocking;
  }
  if (!blocking_) {
    blocking_.reset(new blocking_pool(blocking_threads_ ? blocking_threads_ : blocking_pool::default_threads));
  }
  return *blocking_;
}

void executor_core::set_blocking_threads(unsigned n) {
  if (group_) {
    if (group_->blocking) group_->blocking->set_max_threads(n);
    return;
  }
  blocking_threads_ = n;
  if (blocking_) blocking_->set_max_threads(n);
}

home_core home_core::current(from who) {
  scheduler* s = tls.current;
  if (!s || !s->core) throw std::logic_error("quell: a cross-thread wait outside an executor");
  executor_core& c = *s->core;
  home_core h;
  if (c.group()) {
    h.box_ = c.mailbox();
    if (who == from::anywhere) {
      h.held_ = &c.group()->counts;
      h.held_->fetch_add(1, std::memory_order_acq_rel);
    }
  } else if (who == from::anywhere) {
    h.keep_ = c.remote();
    h.box_ = c.mailbox();
  } else {
    h.box_ = c.mailbox();  // this thread only (on(0, f)): drained before the executor waits
  }
  return h;
}

void home_core::release_hold() noexcept {
  if (auto* c = std::exchange(held_, nullptr)) c->fetch_sub(1, std::memory_order_acq_rel);
}

void mailbox_waiter::wake(core_message* m) noexcept {
  auto* w = static_cast<mailbox_waiter*>(m);
  w->home = home_core();  // the wait is over: the executor need not stay awake for it
  post_completed(w->h);
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
  s_->set_request(level, std::move(reason));
  s_->wake();
}
remote_handle::finished_awaiter remote_handle::cancel(cancel_reason reason) const {
  request(cancel_level::graceful, std::move(reason));
  return finished_awaiter(s_);
}
remote_handle::finished_awaiter remote_handle::force_cancel(cancel_reason reason) const {
  request(cancel_level::forced, std::move(reason));
  return finished_awaiter(s_);
}
void remote_handle::post(std::function<void()> fn) const {
  if (!s_) return;
  auto msg = std::make_unique<detail::posted_fn>(std::move(fn));
  std::lock_guard<std::mutex> lock(s_->m);
  if (s_->efd < 0) return;
  if (s_->push_only(msg.release())) s_->wake();
}

bool remote_handle::finished_awaiter::await_ready() {
  if (!s_) return true;
  std::lock_guard<std::mutex> lock(s_->m);
  return s_->root_finished || s_->efd < 0;
}

void remote_handle::finished_awaiter::await_suspend(std::coroutine_handle<> h) {
  w_.h = h;
  w_.home = detail::home_core::current();
  if (w_.home.box() == s_.get()) {
    w_.home = detail::home_core();
    throw std::logic_error(
        "quell: a task awaited its own executor's remote_handle::cancel(): it would wait for itself");
  }
  {
    std::lock_guard<std::mutex> lock(s_->m);
    if (!s_->root_finished && s_->efd >= 0) {
      s_->finish_waiters.push_back(&w_);
      return;
    }
  }
  w_.home.send(&w_);  // finished meanwhile: resume through the mailbox like any announcement
}

bool remote_handle::finished_awaiter::await_cancel(std::coroutine_handle<>) noexcept {
  detail::home_core home;  // released after the lock: dropping a handle may take another lock
  {
    std::lock_guard<std::mutex> lock(s_->m);
    if (!w_.linked()) return false;  // the finish was announced: its message resumes us
    w_.unlink();
    home = std::move(w_.home);
  }
  return true;
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
  if (active_ == 1 && sched_.hooks) sched_.hooks->slice_begins();  // from outside a turn
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
