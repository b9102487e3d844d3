// shield(op), shield(op, max): protect an operation from outer graceful cancellation.
//
//   co_await quell::shield(send_goodbye(conn));            // runs to completion even if cancelled
//   co_await quell::shield(flush(log), 2s);                // ... but for at most 2 s after a cancel
//
// A graceful cancel request that reaches the shield is held back: the operation keeps running and
// its result is delivered; the request stays with the task outside (sticky), so that task is
// cancelled at its next suspension point. With a bound `max`, the first held-back request arms a
// timer; when it expires the request is delivered to the operation after all.
//
// Forced cancellation reaches shielded operations (docs/decisions.md, "Forced cancellation
// reaches shielded work"): a forced request is what a second Ctrl-C or an expired grace period
// sends, and a shield that could outlast it would make shutdown unbounded. A forced request
// pending before the shield starts means the operation never starts.
//
// unshield() lifts the shield of a running (or not yet started) shield: a request held back so
// far is delivered at once, waking an operation that is already blocked; later requests go
// through. Call it on the executor's thread, e.g. from a sibling task holding the awaitable
// by reference:
//
//   auto guarded = quell::shield(work());
//   co_await quell::join(guarded, [&]() -> quell::task<> { ...; guarded.unshield(); }());
//
// this_task::deadline() inside a shield ignores deadlines outside it (for a bounded shield, the
// bound counts once a request armed it); this_task::cancel_requested() inside is false until a
// request gets through; cancel_reason() still reports the held-back reason.
//
// Races: the operation finishing while the bound's timer fires: the result is delivered
// (completion wins). The operation ending cancelled on its own: the shield ends cancelled.
#pragma once

#include <coroutine>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/clock.hpp"
#include "quell/detail/alarm.hpp"
#include "quell/detail/composite.hpp"
#include "quell/detail/driver.hpp"
#include "quell/time.hpp"

namespace quell {
namespace detail {  // the machinery: detail/shield_op.hpp, included at the end
template <class OpAw>
class shield_op;
}  // namespace detail

template <class Op>
auto shield(Op&& op) {
  return detail::shield_op<detail::awaiter_t<Op>>(std::forward<Op>(op), duration{}, false);
}
template <class Op>
auto shield(Op&& op, duration max) {
  return detail::shield_op<detail::awaiter_t<Op>>(std::forward<Op>(op), max, true);
}

}  // namespace quell

#include "quell/detail/shield_op.hpp"  // IWYU pragma: export
