// on_cancel(op, hook): run `hook` when cancellation reaches `op`, before `op` itself is cancelled.
//
// `op` is any awaitable. `hook` is any awaitable (typically a task, started only if needed), a
// callable returning an awaitable (called only if the hook is needed, e.g. a lambda returning a
// task), or a callable returning void (run synchronously). Its result, if any, is discarded.
//
//   - op finishes with a value and no cancel reached it: the value is returned; the hook never runs.
//   - A cancel request reaches op (outside-in): the hook is started first and runs to completion,
//     shielded from graceful requests (its own on_cancel hooks never run under graceful
//     cancellation); then op is cancelled with the strongest request received so far. on_cancel
//     ends the way op ends: cancelled, or with op's result if op completed anyway (completion
//     wins; this includes op finishing while the hook was still running).
//   - op throws (inside-out): the hook runs, then the exception is rethrown.
//   - A forced request while the hook runs is forwarded to the hook (cancelling the cleanup
//     itself; its own on_cancel hooks then run); a forced request while op is being cancelled is
//     forwarded to op. A forced request that arrives first still starts the hook, which is
//     cancelled at its first suspension point.
//   - on_cancel that was never started runs nothing, hook included.
//   - op ending cancelled on its own (the cancellation started below it, e.g. at a token) is not a
//     cancel reaching op from outside: the hook does not run.
//   - The hook runs at most once.
//   - If the hook throws, its exception is attached to op's exception (quell/errors.hpp); if op
//     has no exception, the hook's exception is what on_cancel throws.
#pragma once

#include <concepts>
#include <coroutine>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/detail/composite.hpp"
#include "quell/detail/driver.hpp"
#include "quell/detail/outcome.hpp"
#include "quell/errors.hpp"

namespace quell {
namespace detail {  // the machinery: detail/on_cancel_op.hpp, included at the end
template <class OpAw, class Hook>
class on_cancel_op;
}  // namespace detail

template <class Op, class Hook>
auto on_cancel(Op&& op, Hook&& hook) {
  return detail::on_cancel_op<detail::awaiter_t<Op>, std::decay_t<Hook>>(std::forward<Op>(op),
                                                                         std::forward<Hook>(hook));
}

}  // namespace quell

#include "quell/detail/on_cancel_op.hpp"  // IWYU pragma: export
