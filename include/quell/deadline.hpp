// Deadlines as a property of a scope: timeout, move_on_after, with_deadline, move_on_at.
//
//   int v = co_await quell::timeout(2s, fetch());              // throws quell::timed_out
//   std::optional<int> v = co_await quell::move_on_after(2s, fetch());   // nullopt on expiry
//   co_await quell::with_deadline(quell::now() + 2s, fetch());  // absolute, throws timed_out
//   co_await quell::move_on_at(tp, fetch());                    // absolute, returns optional
//
// The operation is any awaitable. When the deadline passes, it is cancelled (graceful, reason
// `deadline`), and the combinator waits until it has finished cancelling (its hooks and async
// cleanup run) before it throws or returns nullopt. For a void operation move_on_* yields
// std::optional<std::monostate>: engaged if the operation completed.
//
// The deadline is fixed when the combinator starts; its timer is armed only once the operation
// is waiting, so an operation that finishes during its start costs no timer. Among timers due at
// the same instant it fires in the order of the combinators' starts, as if armed before its
// operation (so an outer deadline fires before an inner one due with it).
//
// Races, and how each ends:
//   - the operation finishes first: its value or exception is delivered; the timer is removed.
//   - the deadline passes and the operation still completes (it completed anyway, before the
//     cancel could land): its result is delivered (completion wins), not timed_out. A leaf that
//     can keep its result for the next call (a socket read, a permit) keeps it instead and ends
//     cancelled, so the combinator times out and nothing is lost (quell/cancellation.hpp, the
//     completion window).
//   - the deadline has already passed when the combinator starts: the operation is not started
//     (a pending cancel skips it) unless it insists on starting (await_early_cancel); either way
//     the result is timed out.
//   - nested deadlines that both expired: the outer one wins. An inner deadline whose operation
//     ended cancelled while an enclosing deadline (up to the nearest shield) has also passed
//     ends cancelled instead of timing out, so the code between the two does not run and the
//     outer one reports the expiry. An on_cancel between the two whose hook is still running
//     holds the outer request back: the inner deadline then times out, since no cancel has
//     reached its code yet.
//   - the combinator itself is cancelled: the request is forwarded; it ends cancelled (or with
//     the operation's result if that completed anyway), never with timed_out.
//   - the operation ends cancelled on its own (e.g. its token fired): the combinator ends
//     cancelled.
//
// this_task::deadline() inside the operation reports the earliest enclosing deadline, so code can
// hand its remaining budget to a backend. Deadlines use the executor's clock (virtual in tests).
#pragma once

#include <coroutine>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include "quell/cancellation.hpp"
#include "quell/clock.hpp"
#include "quell/detail/alarm.hpp"
#include "quell/detail/composite.hpp"
#include "quell/detail/driver.hpp"
#include "quell/detail/outcome.hpp"
#include "quell/time.hpp"

namespace quell {

// Thrown by timeout / with_deadline when the deadline cut the operation short.
class timed_out : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {  // the machinery: detail/deadline_op.hpp, included at the end
template <class OpAw, bool Optional>
class deadline_op;
}  // namespace detail

template <class Op>
auto timeout(duration d, Op&& op) {
  return detail::deadline_op<detail::awaiter_t<Op>, false>(time_point{}, d, true, std::forward<Op>(op));
}
template <class Op>
auto with_deadline(time_point t, Op&& op) {
  return detail::deadline_op<detail::awaiter_t<Op>, false>(t, duration{}, false, std::forward<Op>(op));
}
template <class Op>
auto move_on_after(duration d, Op&& op) {
  return detail::deadline_op<detail::awaiter_t<Op>, true>(time_point{}, d, true, std::forward<Op>(op));
}
template <class Op>
auto move_on_at(time_point t, Op&& op) {
  return detail::deadline_op<detail::awaiter_t<Op>, true>(t, duration{}, false, std::forward<Op>(op));
}

}  // namespace quell

#include "quell/detail/deadline_op.hpp"  // IWYU pragma: export
