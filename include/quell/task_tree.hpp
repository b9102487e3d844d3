// task_tree: a snapshot of the live structured tree of tasks, with what each one waits on and
// where its cancellation stands.
//
//   quell::task_tree t = ex.task_tree();            // an executor, on its own thread
//   quell::task_tree t = co_await quell::current_task_tree();   // from a task: its whole runtime
//   std::puts(t.to_string().c_str());              // an indented tree for a person
//   send(t.to_json());                             // the same, for a program
//
// WHAT IT SHOWS
//
// One node per live task: a task that has started and not finished (its cleanups included). A
// task's children are the tasks started under it (awaited, raced, joined, spawned into one of its
// scopes or groups, its async cleanups); a task started with on(core, ...) appears under the
// task that awaits it on the other core. For each task:
//   - where it was created (the coroutine function, file and line) and its core;
//   - its state: `running` (on the stack now, or between its end and its cleanups), `suspended`
//     (waiting; its wake-up may already be queued), `cancelling` (suspended with a cancel request
//     it has not confirmed yet), `in cleanup` (its body has ended and its async cleanups,
//     quell/defer.hpp, are running);
//   - what it waits on: the operation (a read on fd 7, a sleep with the time left, a semaphore,
//     a race of 2, a child on core 1, ...), outermost first ("shield > move_on_after > race of 2");
//   - a pending cancel request: its level, its reason and how long ago it reached the task
//     (measured on the executor's clock at the turn the request arrived);
//   - the frames between it and its parent task that change what it sees: deadlines (time
//     left), shields (their bound, and the time left once a held request armed it), cleanup
//     shields (the cleanup's bound);
//   - its effective deadline (the earliest deadline up to the first shield, whose armed bound
//     counts too): what this_task::deadline() would say if the task had no request of its own.
//
// WHEN IT MAY BE TAKEN
//
// A snapshot reads the executor's own bookkeeping, so it is taken on the executor's thread:
// from any of its tasks, from an observer hook (quell/observer.hpp), between turns, or by the
// stuck report. Taking one changes nothing: no task is resumed, cancelled or reordered. For a
// runtime, current_task_tree() asks every core for its part through the cores' mailboxes (a core
// busy in a long resume answers when that resume ends; the stall detector names such a resume).
// The snapshot owns its strings: it stays valid after the tasks it describes have ended.
//
// The text form, one task per line, attributes on the lines below it:
//
//   - root (app.cpp:40) suspended, waiting on shield > move_on_after > race of 2
//     - loser (app.cpp:30) in cleanup
//         cancel: graceful (race decided), 30 ms ago
//         under: move_on_after (70 ms left), shield (bound 200 ms, not armed)
//         deadline: 70 ms left
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "quell/cancellation.hpp"
#include "quell/clock.hpp"
#include "quell/task.hpp"

namespace quell {

enum class task_state : std::uint8_t { running, suspended, cancelling, in_cleanup };
std::string_view to_string(task_state s) noexcept;

class task_tree {
 public:
  // A frame between a task and its parent task, innermost first: "move_on_after", "move_on_at",
  // "timeout", "with_deadline", "shield", "cleanup" (an async cleanup's shield), "on_cancel hook".
  struct frame {
    std::string what;
    std::optional<duration> left;   // a deadline: time left; a shield or cleanup: left of its armed bound
    std::optional<duration> bound;  // a shield or cleanup: its bound, if it has one
  };
  struct cancel_info {
    cancel_level level;
    std::string reason;           // cancel_reason::describe()
    std::optional<duration> age;  // since the request reached the task (unknown: nullopt)
  };
  struct node {
    std::string function;
    std::string file;
    std::uint32_t line = 0;
    unsigned core = 0;
    task_state state = task_state::running;
    std::string waits_on;               // empty unless suspended (or cancelling)
    std::optional<duration> wait_left;  // a timer it waits on: time left
    std::optional<cancel_info> cancel;
    std::vector<frame> frames;
    std::optional<duration> deadline_left;  // effective deadline (negative: already passed)
    std::vector<node> children;
  };

  std::vector<node> roots;  // by core; the chain running now first, then in first-suspension order
  unsigned cores = 1;

  // Live tasks in the snapshot.
  std::size_t size() const noexcept;
  std::string to_string() const;
  // {"cores":N,"tasks":[{"function":..,"file":..,"line":..,"core":..,"state":..,"waits_on":..,
  //  "wait_left_ns":..,"cancel":{"level":..,"reason":..,"age_ns":..},"frames":[{"what":..,
  //  "left_ns":..,"bound_ns":..}],"deadline_left_ns":..,"children":[...]}]}; absent fields are omitted.
  std::string to_json() const;
};

// The tree of the runtime (or lone executor) the calling task runs on: every core's part.
task<task_tree> current_task_tree();
// The tree of the executor running on this thread only (its own core), synchronously: for an
// observer hook or a cleanup that cannot await. std::logic_error outside an executor.
task_tree task_tree_here();

}  // namespace quell
