// The machinery under quell/observer.hpp: what an executor keeps for its observer and its stall
// detector. thread_state::hooks points here while the executor runs, and is null when it has
// neither, which is all a hook point tests.
#pragma once

#include <functional>

#include "quell/clock.hpp"
#include "quell/detail/scheduler.hpp"
#include "quell/observer.hpp"

namespace quell::detail {

struct hook_hub {
  observer* user = nullptr;
  unsigned core = 0;

  // The stall detector: each stretch of code between two events is charged to the task that
  // ran it (`running`, null for the executor's own code after a task suspended).
  bool stall = false;
  bool stall_set = false;  // set_stall_detector was called: the build's default no longer applies
  duration threshold{};
  clock_source* clock = nullptr;
  std::function<void(const stall_report&)> report;
  time_point mark{};
  // Held by value (its site's strings are static): the task may have ended when it is reported.
  task_ref running{};
  bool has_running = false;
  // The resumption the executor's loop is running: when it began, the first task it ran, and
  // whether one of its stretches was reported already. A resumption that ran too long as a whole
  // (many short stretches: a loop of awaits that complete at once) is reported at its end.
  time_point slice_start{};
  task_ref slice_first{};
  bool has_slice_first = false;
  bool slice_reported = false;

  bool active() const noexcept { return user != nullptr || stall; }

  // Closes the stretch that began at the last mark: reports it if it was too long.
  void stretch_ends(const task_record* next) noexcept;
  void slice_begins() noexcept;
  void slice_ends() noexcept;
  void emit(const task_ref& t, duration took) noexcept;
};

// Installs (or with null options and no observer, removes) on `s`, and on this thread if `s` is
// the executor running here.
hook_hub& hooks_of(scheduler& s);
void update_hooks(scheduler& s) noexcept;

task_ref describe_task(const task_record& t, unsigned core) noexcept;

}  // namespace quell::detail
