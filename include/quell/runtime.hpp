// runtime: one executor per core, and structure and cancellation that cross cores.
//
//   quell::runtime rt;                        // one core per CPU this process may use
//   int v = rt.run(serve());                  // serve() runs on core 0; returns its value
//
//   task<int> serve() {
//     int a = co_await quell::on(1, [] { return count_here(); });   // runs on core 1
//     std::vector<int> all = co_await quell::on_each_core([] { return count_here(); });
//   }
//
// THE MODEL
//
// A runtime of n cores is n executors, each with its own thread and its own io_uring ring. A task
// runs on the core that started it, start to end: there is no work stealing, so nothing on a
// core's own path takes a lock (Seastar, glommio and monoio make the same choice). Core 0 is the
// thread that calls run(); cores 1..n-1 are threads the runtime starts in its constructor and
// joins in its destructor. They block every asynchronous signal, so a process-directed SIGINT
// reaches the thread that watches for it (run_main).
//
// Structure crosses cores. `co_await on(core, factory)` calls factory() on that core and awaits
// the operation it returns there, as a *child of the caller*:
//   - a cancel request that reaches the caller (graceful or forced, with its reason) is sent to
//     the child; the caller resumes only once the child has ended, its cleanup included;
//   - a child cancelled before it started there never starts: factory is not called;
//   - completion wins: a value or exception the child produced is delivered, even when the
//     request crossed it on the way (the caller stays cancel-requested: docs/model.md, completion
//     wins);
//   - a child that ends cancelled on its own ends the caller cancelled, as a local child would.
// Who resumes whom: the child's core calls the factory, runs the child and, once the child has
// ended and it and the factory have been destroyed there, sends its outcome home; the caller's core resumes the caller.
// Values and exceptions cross as objects; the child's frame never leaves its core. What the child sees of its caller is
// only the requests: deadlines and shields act on the caller's side (a deadline that expires cancels the caller, which
// forwards the request; a shield keeps graceful requests from reaching it at all).
//
// `on_each_core(factory)` is `join` over `on(i, factory)` for every core: a vector of the
// values in core order; the first exception cancels and awaits the others.
//
// Wake-ups between cores go through one lock-free mailbox per core and its eventfd, read by an
// operation in the core's own ring: a core that sleeps in the kernel wakes at once.
//
// Ending. rt.cancel(), rt.force_cancel() and rt.shutdown(grace) act on the root of the run in
// progress, from any thread, and so on the whole tree on every core (every remote task is a
// child of something on core 0). Before run() has started they apply to the next run, as an
// executor's cancel before its first turn does: that root never runs. shutdown(grace) is a
// graceful request that becomes forced once `grace` has passed; called from outside the
// runtime's cores it also waits until the run has ended. A run cannot outlive run(): like an
// executor's destructor, leaving run() by an exception cancels and drains the root, every core
// included.
//
// Stuck. When every core is idle (nothing ready, no timer, no I/O but its mailbox) and no message
// is on its way between them, nothing can ever happen again: run() throws stuck_error naming every
// waiting task and its core ("core 1: task created at ..."). A live remote_handle or a signal
// watcher counts as something that may still happen, as on an executor (rt.remote()): a thread
// that will call rt.cancel() later should hold one. So does a task waiting for something that
// may be answered from outside the runtime: another executor's end (remote_handle::cancel), a
// shared_semaphore permit.
//
// Testing: runtime_options::one_thread turns every core on the caller's thread, in a fixed order,
// on one clock; with a virtual clock a scenario that crosses cores runs the same way every time
// (testing::cancel_sweep(cores, ...) is built on it).
//
// A runtime of one core behaves as an executor does. `this_core()` is 0 and `core_count()` 1
// outside a runtime; on(0, f) then runs f on the current executor like any child.
#pragma once

#include <coroutine>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "quell/cancellation.hpp"
#include "quell/clock.hpp"
#include "quell/detail/core_group.hpp"
#include "quell/detail/driver.hpp"
#include "quell/detail/outcome.hpp"
#include "quell/executor.hpp"
#include "quell/join.hpp"
#include "quell/signal.hpp"
#include "quell/task.hpp"

namespace quell {

// The core the calling task runs on (0 outside a runtime).
unsigned this_core() noexcept;
// How many cores the current task's runtime has (1 outside a runtime).
unsigned core_count() noexcept;

struct runtime_options {
  unsigned cores = 0;  // 0: one per CPU this process may use (sched_getaffinity)
  bool pin = false;    // core i runs only on the i-th of those CPUs (core 0: only during run())
  // Testing: every core on the thread that calls run(), turned one after another in a fixed
  // order, on `clock` (default: the steady clock). With a virtual clock a run is deterministic:
  // the same scenario suspends and completes in the same order every time, which is what
  // testing::cancel_sweep needs to cancel a scenario that crosses cores at each of its points.
  // No thread is started; remote_handle and rt.cancel() from other threads are not supported.
  bool one_thread = false;
  clock_source* clock = nullptr;
  // The bound on run_blocking's threads, shared by every core (quell/blocking.hpp); 0: 64.
  unsigned blocking_threads = 0;
};

namespace detail {
class runtime_core;
clock_source& runtime_clock(runtime_core& rt) noexcept;
struct run_slot {
  explicit run_slot(runtime_core& rt);
  ~run_slot();
  run_slot(const run_slot&) = delete;
  run_slot& operator=(const run_slot&) = delete;
  void attach(executor_core& core);
  runtime_core& rt;
};
}  // namespace detail

class runtime {
 public:
  explicit runtime(unsigned cores = 0) : runtime(runtime_options{cores}) {}
  explicit runtime(runtime_options options);
  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  unsigned size() const noexcept;

  // Runs `root` on core 0 (this thread) until it has ended, with cores 1..n-1 serving it; returns
  // its value or rethrows its exception, like executor::run. One run at a time.
  // clang-format off
  template <class A>
    requires detail::awaitable<A>
  detail::await_result_t<A> run(A&& root) {
    // clang-format on
    return run_with(std::forward<A>(root), [](detail::executor_core&) {});
  }

  // A handle on the root of the run in progress (or the next one), for other threads: cancel it,
  // await its end (remote_handle::cancel), post work to core 0. While one exists the runtime is
  // never stuck: its holder may still act.
  remote_handle remote();

  // The live task tree of every core (quell/task_tree.hpp), from a thread that is not one of the
  // runtime's cores (from a task, co_await quell::current_task_tree() instead): each core is
  // asked through its mailbox and answers between two resumes; one that has not answered within
  // `timeout` (busy in a long resume: see the stall detector) is left out. Not running: empty.
  quell::task_tree task_tree(duration timeout = std::chrono::seconds(1));

  void cancel(cancel_reason reason = cancel_reason(cancel_kind::requested));
  void force_cancel(cancel_reason reason = cancel_reason(cancel_kind::requested));
  void shutdown(duration grace);

  // run(), with `setup` called on core 0's executor before its first turn (run_main adds its
  // signal watcher this way).
  template <class A, class Setup>
  detail::await_result_t<A> run_with(A&& root, Setup&& setup) {
    detail::run_slot slot(*core_);  // outlives the executor: the run ends when it is drained
    executor<detail::await_result_t<A>> ex{std::forward<A>(root), detail::runtime_clock(*core_)};
    slot.attach(ex.core());
    setup(ex.core());
    return ex.run();
  }

 private:
  std::unique_ptr<detail::runtime_core> core_;
};

// run_main (quell/signal.hpp) on a runtime: the first SIGINT/SIGTERM cancels the root gracefully,
// and with it every core's part of the tree; a second one, or the grace period, forces it.
int run_main(runtime& rt, task<int> main, duration grace = std::chrono::seconds(10));
int run_main(runtime& rt, task<int> main, run_main_options options);

namespace detail {  // the machinery: detail/on_op.hpp, included at the end
template <class F>
class on_op;
}  // namespace detail

// Runs the operation `factory()` returns on core `core`, as a child of the caller (see above).
template <class F>
requires detail::awaitable < std::invoke_result_t < std::decay_t<F>
& >> auto on(unsigned core, F&& factory) { return detail::on_op<std::decay_t<F>>(core, std::forward<F>(factory)); }

// join over on(i, factory) for every core i: the values in core order (std::monostate for void).
template <class F>
requires detail::awaitable < std::invoke_result_t < std::decay_t<F>
& >> auto on_each_core(F&& factory) {
  std::vector<detail::on_op<std::decay_t<F>>> ops;
  const unsigned n = core_count();
  ops.reserve(n);
  for (unsigned i = 0; i < n; ++i) ops.emplace_back(i, factory);
  return join(std::move(ops));
}

}  // namespace quell

#include "quell/detail/on_op.hpp"  // IWYU pragma: export
