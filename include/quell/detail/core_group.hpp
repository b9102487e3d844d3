// The cores of a runtime, as the executors see them: one mailbox per core, and the count that
// tells a runtime that is waiting from one that is stuck.
//
// A core is *idle* when nothing of its own can wake it: no task ready, no timer armed, no I/O in
// the kernel but its mailbox's waker, no remote_handle given out (a signal watcher counts as I/O,
// so a runtime under run_main is never stuck, like an executor). `counts` packs the number of
// cores that are not idle (high half) with the number of messages pushed but not yet run (low
// half) into one atomic, so one load sees both at the same instant:
//   - a sender adds one message before pushing (remote_state::push), from a core that is not idle
//     or from outside the runtime;
//   - a core that wakes with messages counts itself busy *before* it runs them and subtracts them
//     after, so a message's effect is never unaccounted for;
//   - a core that is about to block with nothing of its own counts itself idle.
// counts == 0 therefore means no core can ever do anything again without help from outside the
// runtime: the runtime is stuck. Core 0 (which runs the root) decides that: the core that makes
// the count zero wakes it, and core 0's wait step reports stuck_error with every core's waiting
// tasks, each line naming its core.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "quell/detail/service.hpp"

namespace quell {
class task_tree;
}

namespace quell::detail {

class executor_core;
class blocking_pool;
// Blocks every asynchronous signal on the calling thread (a runtime's cores, run_blocking's pool).
void block_async_signals() noexcept;

struct blocking_pool_deleter {
  void operator()(blocking_pool* p) const noexcept;  // joins its threads
};

struct core_group {
  static constexpr std::uint64_t one_busy = std::uint64_t{1} << 32;

  explicit core_group(unsigned n);
  ~core_group();
  core_group(const core_group&) = delete;
  core_group& operator=(const core_group&) = delete;

  unsigned size() const noexcept { return static_cast<unsigned>(boxes.size()); }
  // Wakes core 0 to look at `counts` (the core that made it zero calls this).
  void wake_core0() noexcept;
  // Every core's waiting tasks, each line prefixed with its core (core 0 calls this once the
  // count is zero, when no other core can change anything).
  // Every core's tasks, read from core 0 while every core is idle (the stuck report).
  quell::task_tree task_tree_when_idle() const;

  std::vector<std::shared_ptr<remote_state>> boxes;  // fixed for the runtime's life
  std::vector<std::atomic<executor_core*>> cores;    // each core's executor while it exists
  std::atomic<std::uint64_t> counts{0};
  // runtime_options::one_thread: every core on one thread, turned in a fixed order by whichever
  // core's drive() is running (executor_core::drive_lockstep); no wakers, no spinning.
  bool lockstep = false;
  // run_blocking's threads, shared by every core (made by the runtime, with its options).
  std::unique_ptr<blocking_pool, blocking_pool_deleter> blocking;
};

}  // namespace quell::detail
