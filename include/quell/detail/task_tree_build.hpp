// How a task_tree is made (quell/task_tree.hpp states what it shows): each core's part is read
// on that core (or, for the stuck report, while every core is idle), then the parts are joined
// where a task on one core awaits, through on(), a child whose root is on another.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "quell/detail/scheduler.hpp"
#include "quell/task_tree.hpp"

namespace quell::detail {

struct raw_task {
  task_tree::node n;                    // its children stay empty until assemble()
  std::vector<const void*> wait_links;  // on(core, ...): the other cores' root frames it awaits
  const void* origin = nullptr;         // a root: the topmost context node above it, if any
  std::vector<raw_task> kids;
};

struct core_part {
  unsigned core = 0;
  std::vector<raw_task> roots;
};

// The live tasks of `s`. `running` is the code running now on this thread if it belongs to `s`
// (its chain of tasks is included even if they never suspended), else null.
core_part snapshot(const scheduler& s, const context_node* running);
// The snapshot of the executor running on this thread.
core_part snapshot_here();
task_tree assemble(std::vector<core_part> parts, unsigned cores);

class executor_core;
struct core_group;
// The tree of `core`'s executor, or of its whole runtime, handed to `out` as text (run_main's
// SIGQUIT): at once for a lone executor; for a runtime, by whichever core answers last, or by
// dump_task_tree_now with what has come by then (the cores missing named).
struct tree_collector;
std::shared_ptr<tree_collector> dump_task_tree(executor_core& core, std::function<void(const std::string&)> out);
void dump_task_tree_now(const std::shared_ptr<tree_collector>& c);
// Every core's part, asked for from a thread that is not one of the cores; a core that does not
// answer within `timeout` is left out.
task_tree group_task_tree(core_group& g, duration timeout);

}  // namespace quell::detail
