// race(a, b, ...): the first operation to finish decides; the others are cancelled and awaited.
//
// All operations are started, in argument order, even if an earlier one finishes at once (so
// each gets to run its cancellation hooks). When the first one finishes with a value or an
// exception, every other one still running is cancelled (graceful, reason race_decided or
// sibling_failed), and race returns only after *all* of them have finished: a loser's async
// cleanup always completes before the caller sees the result, however many turns it takes.
//
// Result: if every operation yields the same type T, race yields T; otherwise a std::variant with
// one alternative per argument, in order (void becomes std::monostate), holding the winner at
// its argument's index.
//
// Races inside the race:
//   - The first to finish wins. A loser that *completes anyway* while being cancelled, or that
//     completes at once when it is started after the winner, does not change the winner; its
//     value is discarded. What a leaf received is not lost that way: quell's leaves that a next
//     call can take from (socket reads, accept, recv_from, signal waits, channel receives,
//     semaphore and mutex waits) end cancelled instead when the cancel meets them after their
//     result was known, and a loser race drives itself is asked to put an unused result back
//     (the leaf protocol's await_give_back: bytes back in front of the stream, a connection back
//     in the listener's queue, a value back in the channel). A value a loser *task* computed
//     cannot be put back: it is discarded (any_of, below, keeps it).
//   - An exception beats a value: if any operation throws (the winner, or a loser while being
//     cancelled), race throws the first exception after all have finished; later exceptions are
//     attached to it (quell/errors.hpp).
//   - If race itself is cancelled, the request goes to every operation still running. If all of
//     them end cancelled, race ends cancelled; if one completed anyway, its result is delivered.
//   - A race that never started starts nothing.
//
// any_of(a, b, ...): the same start, decision, cancellation of the others and waiting for them as
// race, but nothing a branch produced is dropped. It yields std::tuple<std::optional<T>...> (a
// bool for a void branch), one slot per argument, filled for every branch that completed: the
// winner, and each loser that completed anyway while it was being cancelled or at once when it
// was started after the winner. A branch that ended cancelled leaves its slot empty (a quell leaf
// that the cancel met after its result was known ends cancelled and keeps the result for the next
// call, as above, so it is not lost either). Exceptions as in race: the first one, from any
// branch, is thrown once all have finished, with later ones attached; the values are then dropped
// with the tuple, as a task's locals are when it throws. If any_of itself is cancelled, the
// request goes to every branch still running; any_of ends cancelled if all of them did, and
// yields the tuple of those that completed otherwise.
//
//   // Ask two replicas; the first answer decides, and an answer the other gave anyway is kept.
//   auto [a, b] = co_await quell::any_of(replica_a.get(key), replica_b.get(key));
#pragma once

#include <coroutine>
#include <cstddef>
#include <exception>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

#include "quell/cancellation.hpp"
#include "quell/detail/composite.hpp"
#include "quell/detail/driver.hpp"
#include "quell/detail/outcome.hpp"
#include "quell/errors.hpp"

namespace quell {
namespace detail {  // the machinery: detail/race_op.hpp, included at the end
template <class... Aws>
class race_keeps;
template <class... Aws>
class any_of_keeps;
template <class Keeps, class... Aws>
class first_done_op;
template <class... Aws>
using race_op = first_done_op<race_keeps<Aws...>, Aws...>;
template <class... Aws>
using any_of_op = first_done_op<any_of_keeps<Aws...>, Aws...>;
}  // namespace detail

// clang-format off
template <class... Ops>
  requires(sizeof...(Ops) >= 1)
auto race(Ops&&... ops) {
  // clang-format on
  return detail::race_op<detail::awaiter_t<Ops>...>(std::forward<Ops>(ops)...);
}

// clang-format off
template <class... Ops>
  requires(sizeof...(Ops) >= 1)
auto any_of(Ops&&... ops) {
  // clang-format on
  return detail::any_of_op<detail::awaiter_t<Ops>...>(std::forward<Ops>(ops)...);
}

}  // namespace quell

#include "quell/detail/race_op.hpp"  // IWYU pragma: export
