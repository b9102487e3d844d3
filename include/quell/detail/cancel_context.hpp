// The cancel context: what the code running right now is inside of, as far as cancellation is
// concerned. Not to be confused with quell::scope (the nursery): this is the tree that answers
// `this_task::cancel_requested()`, `this_task::cancel_reason()` and `this_task::deadline()`, and
// that tells a hook or cleanup started later where it belongs.
//
// Every task, and every combinator that changes what the code below it sees, is a node: a task
// holds the cancel request that reached it; a deadline (move_on_after, fail_after, with_deadline)
// holds its time; a shield hides what is above it (it holds what got through it, and its bound);
// on_cancel's operation is "held" until the hook has run, so a request above does not count for it
// yet; a scope or a lifted shield is transparent. Each node points at the node that was current
// where it started, so the tree follows the await chain from the leaf up to the executor's root,
// across tasks.
//
// What a piece of code sees is computed from its node upwards, not stored in it: the first task,
// shield or held node on the way up decides whether a request is pending; deadlines on the way are
// combined (the earliest wins, and a pending request counts as one already passed) up to the
// first shield, whose own bound still counts. So entering or leaving a shield or a deadline
// changes a pointer and nothing else, and a request reaching a task is seen at once by everything
// running beneath it.
//
// The tree is only read. A cancel request does not travel through it: it travels down the await
// chain, from each awaiter to what it awaits (quell/cancellation.hpp), which is what lets a leaf
// finish cancelling asynchronously. The tree describes, for code that asks, what has reached it.
//
// The current node is thread_state::context (detail/scheduler.hpp): a task's body sets it when it
// resumes, detail::resume restores it when the body suspends, and context_guard sets it while a
// combinator starts children from a callback.
#pragma once

#include <cstdint>

#include "quell/cancellation.hpp"
#include "quell/clock.hpp"

namespace quell::detail {

// A node of the cancel context tree (see above).
struct context_node {
  enum class kind : std::uint8_t {
    task,      // a quell task (task_record): its own cancel request
    deadline,  // timeout / move_on_after / with_deadline
    shield,    // shield(), and the implicit shield around hooks and async cleanups
    plain,     // a scope or task group, or a lifted shield: transparent
    held,      // on_cancel's operation: a request reaches it only once the hook has run
  };
  // What a frame is, for the task tree (quell/task_tree.hpp); it sits in the node's padding, so
  // naming frames costs no byte and no store beyond construction. `bounded_*` frames are
  // bounded_frame (below).
  enum class tag : std::uint8_t {
    none,
    move_on_after,
    move_on_at,
    timeout,
    with_deadline,
    on_cancel_hook,
    bounded_shield,
    bounded_cleanup,
  };
  explicit context_node(kind k, tag t = tag::none) noexcept : what(k), label(t) {}
  context_node* parent;  // set when the node starts; tasks do it in start(), the hot path
  kind what;
  tag label;
};

// Every node that is not a task: what request reached it (if it records one) and its deadline.
// A held node's request stays null until on_cancel passes the request on to its operation.
struct context_frame : context_node {
  context_frame(kind k, const cancel_request* r, tag t = tag::none) noexcept : context_node(k, t), request(r) {
    parent = nullptr;
  }
  const cancel_request* request;
  time_point deadline = time_point::max();
};

// A shield's or a cleanup's frame, with its bound (max: none) for the task tree.
struct bounded_frame : context_frame {
  bounded_frame(kind k, const cancel_request* r, tag t) noexcept : context_frame(k, r, t) {}
  duration bound = duration::max();
};

// Makes `n` the current node for the guard's lifetime (starting children from a callback).
class context_guard {
 public:
  explicit context_guard(context_node* n) noexcept;
  ~context_guard();
  context_guard(const context_guard&) = delete;
  context_guard& operator=(const context_guard&) = delete;

 private:
  context_node* saved_;
};

}  // namespace quell::detail
