// executor<T>: a single-threaded loop that owns one root (a task or any awaitable).
//
//   quell::executor ex{root()};
//   bool ex.poll_once();   one scheduling turn, never blocks; true once the root has finished
//   T    ex.run();         turns until the root finishes; returns its value or rethrows its
//                          exception; throws cancelled_error if the root ended cancelled and
//                          stuck_error if nothing can make progress any more
//   void ex.cancel();      graceful cancel request to the root (idempotent)
//   void ex.force_cancel() forced request: also cancels running cleanup hooks
//   ~executor()            if the root started and has not finished: cancels it gracefully and
//                          drives the cancellation to completion; if that cannot make progress,
//                          escalates to a forced request; if even that cannot finish, reports
//                          the stuck tasks and calls std::terminate. A root that never started
//                          runs nothing.
//
// A turn: timers that are due fire, the work queued for "next turn" (yield, poll_fn) runs once,
// then everything that became ready runs, until nothing is ready. The first turn starts the root.
// Between turns, when nothing is ready, run() and the destructor take the wait step: wait for the
// nearest timer (on a virtual clock: jump to it), and, once the io_uring reactor is attached, for
// I/O. After a turn that leaves other work ready (and after every poll_once), the executor hands
// the turn's I/O to the kernel and collects what has completed without waiting; with nothing to
// submit and no completion held by the kernel, that costs no system call. With nothing to wait
// for and the root unfinished, the executor is stuck, and says so
// instead of spinning: stuck_error names every task suspended at that moment (where it was
// created, and any cancel request it has received), in the order each first suspended; a task
// that has finished, even if its frame is still held, is not named. `executor ex{root(), clock}`
// runs on another clock (quell/time.hpp).
//
// Shutdown: shutdown(grace) cancels the root gracefully and escalates to a forced request when
// the grace period ends. Every path out of run(), shutdown() and the destructor first cancels and
// drains the executor's own operations (signal watcher, cross-thread waker) and waits until no
// I/O operation is left in the kernel, so no buffer or frame is freed under it.
//
// All of an executor's work runs on the thread that calls poll_once/run. Executors may nest
// (block_on inside a task runs a separate loop to completion), but an executor's poll_once/run
// called from inside one of its own tasks throws std::logic_error. cancel() from inside one of its
// own tasks or hooks is fine: it takes effect at once as far as it can, and the rest runs in the
// turn already in progress.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/clock.hpp"
#include "quell/detail/core_group.hpp"
#include "quell/detail/driver.hpp"
#include "quell/detail/scheduler.hpp"
#include "quell/detail/service.hpp"
#include "quell/errors.hpp"
#include "quell/metrics.hpp"
#include "quell/observer.hpp"
#include "quell/task_tree.hpp"

namespace quell {

namespace detail {
class executor_core;
struct core_group;

}  // namespace detail

// A thread-safe handle to an executor (from executor::remote()): lets other threads cancel its
// root or run a function on its thread. A blocked executor wakes at once (an eventfd read in its
// io_uring). While any remote handle exists the executor is never "stuck": the handle may still
// wake it. Once the executor is gone, calls do nothing. Copyable; cheap to pass around.
//
// cancel() and force_cancel() send the request at once. What they return may be ignored, or
// awaited from a task on another executor: `co_await h.cancel()` resumes once the remote root has
// finished (its cleanup included), at once if it already had. Cancelling that wait stops only
// the waiting (synchronously, if the finish has not been announced yet; otherwise the announced
// finish is delivered: completion wins); the remote cancellation goes on.
class remote_handle {
 public:
  class finished_awaiter;

  remote_handle() noexcept = default;
  remote_handle(const remote_handle& o) noexcept;
  remote_handle& operator=(const remote_handle& o) noexcept;
  remote_handle(remote_handle&& o) noexcept : s_(std::move(o.s_)) {}
  remote_handle& operator=(remote_handle&& o) noexcept {
    remote_handle tmp(std::move(o));
    std::swap(s_, tmp.s_);
    return *this;
  }
  ~remote_handle();

  finished_awaiter cancel(cancel_reason reason = cancel_reason(cancel_kind::requested)) const;
  finished_awaiter force_cancel(cancel_reason reason = cancel_reason(cancel_kind::requested)) const;
  // Runs `fn` on the executor's thread in its next turn (dropped if the executor is gone).
  void post(std::function<void()> fn) const;

 private:
  friend class detail::executor_core;
  friend class runtime;
  explicit remote_handle(std::shared_ptr<detail::remote_state> s) noexcept;
  void request(cancel_level level, cancel_reason reason) const;
  std::shared_ptr<detail::remote_state> s_;
};

namespace detail {

// Where a task that waits for another thread is woken: its executor's mailbox. Outside a runtime
// it also holds a remote_handle, so the executor's waker stays armed while the wait lasts. A wait
// for something that may come from outside the runtime (`expect_outside`: another executor's end,
// a permit an outside thread may release) also counts, in a runtime, as a message in transit for
// as long as it lasts: the runtime is not stuck while it may still be answered.
class home_core {
 public:
  enum class from { this_runtime, anywhere };
  // The executor running on this thread (std::logic_error outside one).
  static home_core current(from who = from::anywhere);
  home_core() noexcept = default;
  home_core(home_core&& o) noexcept
      : box_(std::move(o.box_)), keep_(std::move(o.keep_)), held_(std::exchange(o.held_, nullptr)) {}
  home_core& operator=(home_core&& o) noexcept {
    if (this != &o) {
      release_hold();
      box_ = std::move(o.box_);
      keep_ = std::move(o.keep_);
      held_ = std::exchange(o.held_, nullptr);
    }
    return *this;
  }
  ~home_core() { release_hold(); }

  // Once pushed, the message may run and free whatever holds this home_core: the box is held here.
  void send(core_message* m) const noexcept {
    const std::shared_ptr<remote_state> box = box_;
    box->push(m);
  }
  const remote_state* box() const noexcept { return box_.get(); }

 private:
  void release_hold() noexcept;
  std::shared_ptr<remote_state> box_;
  remote_handle keep_;
  std::atomic<std::uint64_t>* held_ = nullptr;  // the runtime's count, while this wait is held open
};

// A waiter woken through its home core's mailbox: the message's run posts the handle, as a
// completion, on the waiter's own executor.
struct mailbox_waiter : list_node, core_message {
  mailbox_waiter() noexcept { run = &wake; }
  std::coroutine_handle<> h;
  home_core home;

 private:
  static void wake(core_message* m) noexcept;
};

}  // namespace detail

class remote_handle::finished_awaiter {
 public:
  bool await_ready();
  void await_suspend(std::coroutine_handle<> h);
  void await_resume() const noexcept {}
  bool await_cancel(std::coroutine_handle<>) noexcept;
  bool await_must_resume() const noexcept { return true; }

 private:
  friend class remote_handle;
  explicit finished_awaiter(std::shared_ptr<detail::remote_state> s) noexcept : s_(std::move(s)) {}
  std::shared_ptr<detail::remote_state> s_;
  detail::mailbox_waiter w_;
};

namespace detail {

class executor_core {
 public:
  executor_core(driver_base& root, clock_source& clock) noexcept : root_(root), sched_(clock) { sched_.core = this; }
  ~executor_core();
  executor_core(const executor_core&) = delete;
  executor_core& operator=(const executor_core&) = delete;

  bool poll_once();
  // Turns until the root finishes; throws stuck_error if it cannot.
  void drive();
  void cancel(cancel_level level, cancel_reason reason) noexcept;
  // The destructor's part: see executor's contract above.
  void shutdown() noexcept;
  // Graceful request, then forced once `grace` has passed; returns when the root has finished.
  void shutdown(duration grace);
  remote_handle remote();
  // The mailbox other threads send to (created on first use; a runtime's core: the core's).
  const std::shared_ptr<remote_state>& mailbox();
  // Makes this executor core `index` of a runtime (before its first turn); see core_group.hpp.
  void join_group(core_group* g, unsigned index);
  core_group* group() const noexcept { return group_; }
  unsigned core_index() const noexcept { return index_; }
  // A forced request (reason: shutdown, "grace period expired") once `grace` has passed, unless
  // the root finished first. On the executor's thread.
  void escalate_after(duration grace);
  // Starts a service (see detail/service.hpp); it must outlive the root.
  void add_service(service* s);
  // run_blocking's pool: the runtime's, or this executor's own (created on first use).
  blocking_pool& blocking();
  void set_blocking_threads(unsigned n);
  reactor& io() { return sched_.io(); }
  scheduler& sched() noexcept { return sched_; }
  const scheduler& sched() const noexcept { return sched_; }

  bool started() const noexcept { return started_; }
  bool done() const noexcept { return done_; }
  const cancel_request& request() const noexcept { return req_; }
  reactor* io_if_any() const noexcept { return sched_.io_if_any(); }
  std::string stuck_report() const;
  // Seeing inside (quell/task_tree.hpp, observer.hpp, metrics.hpp): on the executor's thread.
  quell::task_tree task_tree() const;
  executor_metrics metrics() const;
  void set_observer(observer* o);
  void set_stall_detector(stall_options o);
  // Cross-core calls made from this executor whose end has not come back yet (see spin_for_mail).
  unsigned replies_expected = 0;

 private:
  // turn, wait_step and io_step run inside drive() or poll_once(), which make this executor current.
  bool turn();
  // The wait step, after a turn left nothing ready: wait for the nearest timer (on a virtual
  // clock: jump to it) or an I/O completion. Returns false if nothing could ever make anything
  // ready again: the executor is stuck.
  bool wait_step();
  // Submits queued I/O and reaps completions; waits for one (or the nearest timer) if `block`.
  void io_step(bool block);
  bool io_live() const noexcept;
  bool drive_quietly() noexcept;  // false if stuck
  void stop_services() noexcept;
  void on_remote() noexcept;
  bool drain_mailbox() noexcept;  // true if a message ran
  bool step_lockstep();
  void drive_lockstep();
  bool spin_for_mail() noexcept;
  bool alone_idle() const noexcept;
  bool group_wait_step();
  void go_active() noexcept;
  void leave_group() noexcept;
  struct waker;
  static void root_done(void* self, driver_base*) noexcept;

  driver_base& root_;
  scheduler sched_;
  int active_ = 0;  // calls of turn()/cancel() in progress on the stack
  cancel_request req_{cancel_level::none, {}};
  bool started_ = false;
  bool done_ = false;
  std::vector<service*> services_;
  std::shared_ptr<remote_state> remote_;
  std::unique_ptr<service> waker_;
  std::unique_ptr<callback_timer> escalate_;
  std::unique_ptr<blocking_pool, blocking_pool_deleter>
      blocking_;                   // a lone executor's; joined after every task has ended
  unsigned blocking_threads_ = 0;  // 0: the pool's default
  core_group* group_ = nullptr;
  unsigned index_ = 0;
  bool quiet_ = false;  // in a runtime: counted as idle (see core_group)
};

template <class T>
struct root_base {
  virtual ~root_base() = default;
  virtual driver_base& drv() noexcept = 0;
  virtual T take() = 0;
};

template <class T, class Aw>
struct root_impl final : root_base<T> {
  template <class X>
  explicit root_impl(X&& x) : d(std::forward<X>(x)) {}
  driver_base& drv() noexcept override { return d; }
  T take() override { return d.result(); }
  driver<Aw> d;
};

}  // namespace detail

template <class T>
class executor {
 public:
  // clang-format off
  template <class A>
    requires(detail::awaitable<A> && std::is_same_v<detail::await_result_t<A>, T>)
  explicit executor(A&& root, clock_source& clock = steady_clock_source::instance())
      // clang-format on
      : root_(std::make_unique<detail::root_impl<T, detail::awaiter_t<A>>>(std::forward<A>(root))),
        core_(root_->drv(), clock) {}
  executor(const executor&) = delete;
  executor& operator=(const executor&) = delete;
  ~executor() { core_.shutdown(); }

  bool poll_once() { return core_.poll_once(); }

  T run() {
    if (taken_) throw std::logic_error("quell: executor::run() called again after the root's result was taken");
    core_.drive();
    taken_ = true;
    if (root_->drv().cancelled) {
      if (core_.request().level == cancel_level::none) {
        // What a user did to get here, and what to do instead: a cancellation that began inside
        // the root is an expected event where it began, and a program error once it reaches here.
        throw cancelled_error(
            "quell: the root task ended cancelled, but nothing asked the root to cancel: a cancellation "
            "that began inside it reached the top (the task awaited a spawn_handle whose child was "
            "cancelled, a with_cancellation whose token fired, or an operation that ended cancelled on "
            "its own). Stop it where it began (check spawn_handle::done() instead of awaiting, use "
            "move_on_after's optional), or cancel the root itself (executor::cancel, run_main's signals)");
      }
      throw cancelled_error("quell: the root was cancelled (" + core_.request().reason.describe() + ")");
    }
    return root_->take();
  }

  void cancel(cancel_reason reason = cancel_reason(cancel_kind::requested)) noexcept {
    core_.cancel(cancel_level::graceful, std::move(reason));
  }
  void force_cancel(cancel_reason reason = cancel_reason(cancel_kind::requested)) noexcept {
    core_.cancel(cancel_level::forced, std::move(reason));
  }
  // Cancels the root gracefully (reason: shutdown), escalates to a forced request once `grace`
  // has passed on the executor's clock, and returns when the root has finished and every I/O
  // operation has left the kernel. Throws stuck_error if even the forced request cannot finish.
  // Before the first turn it is cancel(): the root never runs (a later run() throws cancelled).
  void shutdown(duration grace) { core_.shutdown(grace); }
  // A handle other threads can use to cancel the root or post work (see remote_handle).
  remote_handle remote() { return core_.remote(); }
  // The bound on run_blocking's threads (quell/blocking.hpp; default 64). A lower bound stops no
  // thread that has started; it keeps new ones from starting.
  void set_blocking_threads(unsigned n) { core_.set_blocking_threads(n); }

  bool done() const noexcept { return core_.done(); }

  // Seeing inside, on the executor's thread (from its tasks, or between turns): the live task
  // tree (quell/task_tree.hpp), the counters (quell/metrics.hpp), one observer and the stall
  // detector (quell/observer.hpp). The observer must outlive its installation (null removes it).
  quell::task_tree task_tree() const { return core_.task_tree(); }
  executor_metrics metrics() const { return core_.metrics(); }
  void set_observer(observer* o) { core_.set_observer(o); }
  void set_stall_detector(stall_options o) { core_.set_stall_detector(std::move(o)); }

  // Diagnostics and tests: the executor's io_uring reactor, or null before its first I/O.
  detail::reactor* reactor_if_any() const noexcept { return core_.io_if_any(); }
  detail::executor_core& core() noexcept { return core_; }

 private:
  std::unique_ptr<detail::root_base<T>> root_;
  detail::executor_core core_;
  bool taken_ = false;
};

template <class A>
executor(A&&) -> executor<detail::await_result_t<A>>;
template <class A>
executor(A&&, clock_source&) -> executor<detail::await_result_t<A>>;

// Runs `a` on a fresh executor until it finishes and returns its result (see executor::run).
// clang-format off
template <class A>
  requires detail::awaitable<A>
detail::await_result_t<A> block_on(A&& a) {
  // clang-format on
  executor<detail::await_result_t<A>> ex{std::forward<A>(a)};
  return ex.run();
}

}  // namespace quell
