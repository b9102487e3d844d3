// defer: register an async cleanup with the running task.
//
//   co_await quell::defer([&backend, job]() -> quell::task<> { co_await backend.stop(job); });
//   co_await quell::defer([&backend, job]() -> quell::task<> { co_await backend.stop(job); }, 2s);  // bounded
// (`backend` outlives the task, `job` is an id copied in: what a cleanup may use on every exit, below.)
//
// The cleanup (a callable returning an awaitable, an awaitable, or a callable returning void) runs
// when the task ends, on every exit (value, exception, cancelled), after the body has stopped and
// before the task's waiter hears of the end. Cleanups run one at a time, last registered first,
// each exactly once.
//
// What is alive when a cleanup runs. On *cancellation* (the exit this exists for) the body is
// suspended where the cancel reached it, so every local of the coroutine is alive and a cleanup
// may use them by reference. On *return or throw*, C++ destroys the body's block-scope locals
// before any code can suspend (the closing brace runs before final_suspend), so there a cleanup may
// use only what it owns (captured by value or moved in), the coroutine's parameters, and objects
// outside the coroutine. To use a local on every exit, move it into the cleanup:
//   auto close = [c = std::move(conn)]() mutable -> quell::task<> { co_await c.close(); };
//   co_await quell::defer(std::move(close));
// (Named first: g++ 12 miscompiles a lambda that copies or moves a non-trivial capture when it is
// written as a temporary inside a co_await expression; clang is fine: docs/decisions.md, "g++ 12
// and capturing lambdas inside co_await". Why the language leaves no other choice: docs/decisions.md,
// "defer and the body's locals".)
//
// Cancellation of cleanups: they are shielded; a graceful request (the one that made the task
// end, or a later one) does not reach them. A forced request does: it cancels the running cleanup
// (its own on_cancel hooks run) and every later one is cancelled at its first suspension point.
// With a bound `max`, a cleanup still running `max` after it started is cancelled (graceful,
// reason deadline). Inside a cleanup, this_task::cancel_reason() tells why the task is ending and
// this_task::deadline() is the cleanup's own bound.
//
// Failures: a cleanup's exception never replaces the task's exception; it is attached to it
// (quell/errors.hpp). If the task returned a value or ended cancelled, the cleanup's exception is
// what the task throws (a failed cleanup is not silently dropped); a second failing cleanup's
// exception is attached to the first.
//
// `co_await quell::defer(...)` is not a cancellation point: the registration always happens, even
// with a cancel pending, so the cleanup of something just acquired is never skipped. It must be
// awaited directly in a task's body (not inside a combinator).
#pragma once

#include <chrono>
#include <coroutine>
#include <utility>

#include "quell/clock.hpp"
#include "quell/detail/cleanup.hpp"
#include "quell/on_cancel.hpp"
#include "quell/task.hpp"

namespace quell {
namespace detail {  // the machinery: detail/defer_op.hpp, included at the end
template <class F>
class defer_awaiter;
}  // namespace detail

template <class F>
auto defer(F&& cleanup) {
  return detail::defer_awaiter<std::decay_t<F>>(std::forward<F>(cleanup), duration{}, false);
}
template <class F>
auto defer(F&& cleanup, duration max) {
  return detail::defer_awaiter<std::decay_t<F>>(std::forward<F>(cleanup), max, true);
}

}  // namespace quell

#include "quell/detail/defer_op.hpp"  // IWYU pragma: export
