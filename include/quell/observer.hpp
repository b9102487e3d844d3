// Observer hooks and the stall detector: being told what the executor's tasks do.
//
//   struct counter : quell::observer {
//     void on_cancel_requested(const quell::task_ref& t, const quell::cancel_request& r) noexcept override {...}
//   };
//   counter c;
//   ex.set_observer(&c);          // or quell::set_observer(&c) from a task, for its own core
//
// OBSERVER
//
// One optional observer per executor (each core of a runtime is one). It is told, on the
// executor's thread and synchronously, in this order for each task:
//   spawned (its owner started it) -> started (its body first runs) -> { suspended -> resumed }*
//   -> [cleanup begin -> cleanup end] -> finished (cancelled or not);
// cancel requested may come at any point between spawned and finished, once per level (a
// graceful request, then a forced one). A task that ends cancelled at a suspension point goes
// from suspended to cleanup/finished without a resume: its body never runs again. A generator's
// producer is suspended at each co_yield and resumed by the next next(); one destroyed at a
// co_yield finishes there. I/O operations are reported when handed to the kernel and when their
// final completion is reaped (an observer installed while some are in flight sees only their
// completions, named "io"); receive-ahead's standing receives are not reported.
// A hook must not throw, must not resume or destroy tasks, and must not install another
// observer; it may read anything, take a task_tree() snapshot, count, log. It runs in the middle
// of the executor's machinery, so what it does is on every task's path: keep it short.
// With no observer (and no stall detector) installed each hook point costs one load and a
// predicted branch (the comparison's W1-W3 measure it).
//
// STALL DETECTOR
//
// A resume that runs longer than a threshold without suspending blocks every other task of its
// core. The detector times each stretch of a task's code between two of the events above on a
// clock (the steady clock, or an injectable one for tests) and reports each stretch longer than
// the threshold, with the task that ran it and the time it took; a resumption from the run queue
// that took too long as a whole, in many short stretches, is reported at its end with the first
// task it ran. The default report is one line on stderr. On by default (100 ms) when quell itself is built without
// NDEBUG, off otherwise unless set_stall_detector() turns it on.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "quell/cancellation.hpp"
#include "quell/clock.hpp"

namespace quell {

// A task as an observer sees it. `id` is stable while the task lives (and may be reused after);
// `parent` is the id of the task it runs under (null for a root, and for a generator's producer
// at co_yield).
struct task_ref {
  const void* id = nullptr;
  const void* parent = nullptr;
  const char* function = "?";
  const char* file = "?";
  std::uint32_t line = 0;
  unsigned core = 0;
};

// An I/O operation: its address (matches submit and completion), its descriptor (-1 if none)
// and its kind ("read", "write", "accept", "connect", "poll", "close", ...).
struct io_ref {
  const void* id = nullptr;
  int fd = -1;
  std::string_view operation;
};

class observer {
 public:
  virtual ~observer() = default;
  virtual void on_spawn(const task_ref&) noexcept {}
  virtual void on_start(const task_ref&) noexcept {}
  virtual void on_suspend(const task_ref&) noexcept {}
  virtual void on_resume(const task_ref&) noexcept {}
  virtual void on_cancel_requested(const task_ref&, const cancel_request&) noexcept {}
  virtual void on_cleanup_begin(const task_ref&) noexcept {}
  virtual void on_cleanup_end(const task_ref&) noexcept {}
  virtual void on_finish(const task_ref&, bool /*cancelled*/) noexcept {}
  virtual void on_io_submit(const io_ref&) noexcept {}
  virtual void on_io_complete(const io_ref&, int /*result*/) noexcept {}
};

struct stall_report {
  task_ref task;  // the task whose code ran
  duration took;
};
// The default report's text: "quell: stall: `f` (file.cpp:12) on core 0 ran 153 ms without
// suspending (blocking work belongs in run_blocking)".
std::string to_string(const stall_report& r);

struct stall_options {
  bool enabled = true;
  duration threshold = std::chrono::milliseconds(100);
  clock_source* clock = nullptr;                    // null: the steady clock
  std::function<void(const stall_report&)> report;  // null: to_string(report) on stderr
};

// The current executor's (the calling task's core's) observer: null removes it. Must be called
// on that executor's thread; the observer must outlive its installation.
void set_observer(observer* o);
// The current executor's stall detector (enabled = false turns it off).
void set_stall_detector(stall_options options);

}  // namespace quell
