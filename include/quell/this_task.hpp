// this_task::*: what the running task can ask about its own cancellation.
//
//   if (quell::this_task::cancel_requested()) ...        // cheap, never suspends
//   co_await quell::this_task::checkpoint();              // a cancellation point, nothing else
//   auto budget = quell::this_task::deadline() - quell::now();   // pass it on to a backend
//   if (auto r = quell::this_task::cancel_reason()) log(r->describe());
//
// "The running task" is the quell task whose body is executing, or, inside a hook (on_cancel) or
// an async cleanup (defer), that hook's task. Hooks and cleanups are shielded from graceful
// requests: the cancellation that made them run does not apply to them, so there
// cancel_requested() is false, but cancel_reason() still says why the enclosing operation is
// being cancelled (e.g. to log "peer disconnected"). A forced request does reach them: one that
// is pending when a cleanup starts, or arrives while it runs, is delivered at its next suspension
// point, which ends it cancelled. Until then (its synchronous start) cancel_requested() is false
// and checkpoint() passes; cancel_reason() keeps the first reason, so an on_cancel hook, not a
// question asked here, is how code learns that its cleanup was forced.
//
//   cancel_requested(): a cancel request has reached this task (sticky: it stays true).
//   checkpoint():       an awaitable that completes at once, unless a request has reached this
//                       task; then the task ends cancelled there. It does not yield to other
//                       tasks (use quell::yield() for that), so a loop can afford one per step.
//   deadline():         the effective deadline: the earliest deadline of every timeout /
//                       move_on_after / with_deadline enclosing this task, up to the nearest
//                       shield (a bounded shield counts with its bound once a cancel has reached
//                       it). time_point::max() if there is none; time_point::min() if the task
//                       is already being cancelled (no budget is left).
//   cancel_reason():    the first reason found walking outward from this task (through shields):
//                       its own request, else the request that reached the nearest enclosing
//                       hook, deadline or shield, else that of an enclosing task; nullopt when
//                       nothing is being cancelled.
//
// Outside any task (plain code, another thread) they answer as for an uncancelled task without
// deadlines. All of them are for the executor's own thread.
#pragma once

#include <optional>

#include "quell/cancellation.hpp"
#include "quell/clock.hpp"

namespace quell::this_task {

bool cancel_requested() noexcept;
quell::time_point deadline() noexcept;
std::optional<quell::cancel_reason> cancel_reason();

struct checkpoint_awaiter {
  // Only reached when no request is pending: a task's co_await checks for one first.
  bool await_ready() const noexcept { return true; }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  void await_resume() const noexcept {}
};
inline checkpoint_awaiter checkpoint() noexcept { return {}; }

}  // namespace quell::this_task
