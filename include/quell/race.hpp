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
//     cannot be put back: it is discarded (any_of keeps it, DESIGN.md section 8).
//   - An exception beats a value: if any operation throws (the winner, or a loser while being
//     cancelled), race throws the first exception after all have finished; later exceptions are
//     attached to it (quell/errors.hpp).
//   - If race itself is cancelled, the request goes to every operation still running. If all of
//     them end cancelled, race ends cancelled; if one completed anyway, its result is delivered.
//   - A race that never started starts nothing.
#pragma once

#include <coroutine>
#include <cstddef>
#include <exception>
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
namespace detail {

template <class T>
using monostate_if_void = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

template <class R0, class... Rs>
struct race_result {
  using type = std::conditional_t<(std::is_same_v<R0, Rs> && ...), R0,
                                  std::variant<monostate_if_void<R0>, monostate_if_void<Rs>...>>;
};

template <class... Aws>
class race_op : public composite {
  static constexpr std::size_t N = sizeof...(Aws);
  using R = typename race_result<typename driver<Aws>::result_type...>::type;
  static constexpr bool same_type =
      !std::is_same_v<R, std::variant<>> && (std::is_same_v<R, typename driver<Aws>::result_type> && ...);

 public:
  template <class... Xs>
  explicit race_op(Xs&&... xs) : branches_(std::forward<Xs>(xs)...) {}
  race_op(race_op&& o) : composite(std::move(o)), branches_(std::move(o.branches_)) {}

  bool await_early_cancel() const noexcept { return true; }

  bool await_suspend(std::coroutine_handle<> h) noexcept {
    begin(h);
    starting_ = true;
    start_all(std::index_sequence_for<Aws...>{});
    starting_ = false;
    if (remaining_ != 0 && !result_.empty() && !losers_cancelled_) cancel_losers();
    return end_suspend();
  }

  bool await_cancel(std::coroutine_handle<>, const cancel_request& r) noexcept {
    enter();
    merge_request(req_, r);
    cancel_running(req_, std::index_sequence_for<Aws...>{});
    leave();
    return false;
  }

  bool await_must_resume() const noexcept { return !result_.empty(); }
  R await_resume() { return result_.take(); }

 private:
  template <std::size_t... I>
  void start_all(std::index_sequence<I...>) noexcept {
    ((std::get<I>(branches_).start(this, &branch_done<I>, nullptr) ? branch_finished<I>() : void()), ...);
  }

  template <std::size_t... I>
  void cancel_running(const cancel_request& r, std::index_sequence<I...>) noexcept {
    ((std::get<I>(branches_).started() && !std::get<I>(branches_).finished() ? std::get<I>(branches_).cancel(r)
                                                                             : void()),
     ...);
  }

  template <std::size_t I>
  static void branch_done(void* o, driver_base*) noexcept {
    static_cast<race_op*>(o)->template branch_finished<I>();
  }

  template <std::size_t I>
  void branch_finished() noexcept {
    auto& d = std::get<I>(branches_);
    --remaining_;
    if (!d.cancelled) {
      if (result_.empty()) {
        take_winner<I>(d);
      } else if (std::exception_ptr e = d.discard_result()) {
        if (result_.has_error()) {
          attach_error(result_.error(), std::move(e));
        } else {
          result_.set_error(std::move(e));  // an exception beats a value
        }
      }
    }
    if (remaining_ == 0) {
      complete();  // may destroy *this
    } else if (!starting_ && !losers_cancelled_ && !result_.empty()) {
      cancel_losers();
    }
  }

  template <std::size_t I, class D>
  void take_winner(D& d) noexcept {
    using Ri = typename D::result_type;
    try {
      if constexpr (same_type) {
        if constexpr (std::is_void_v<R>) {
          d.result();
          result_.set_value();
        } else {
          result_.set_value(d.result());
        }
      } else if constexpr (std::is_void_v<Ri>) {
        d.result();
        result_.set_value(std::in_place_index<I>);
      } else {
        result_.set_value(std::in_place_index<I>, d.result());
      }
    } catch (...) {
      result_.set_error(std::current_exception());
    }
  }

  void cancel_losers() noexcept {
    losers_cancelled_ = true;
    cancel_request r =
        req_.level != cancel_level::none  // the race itself is being cancelled: its reason
            ? req_
            : cancel_request{cancel_level::graceful, cancel_reason(result_.has_error() ? cancel_kind::sibling_failed
                                                                                       : cancel_kind::race_decided)};
    enter();
    cancel_running(r, std::index_sequence_for<Aws...>{});
    leave();  // may destroy *this
  }

  std::tuple<driver<Aws>...> branches_;
  outcome<R> result_;
  cancel_request req_{cancel_level::none, {}};
  std::size_t remaining_ = N;
  bool starting_ = false;
  bool losers_cancelled_ = false;
};

}  // namespace detail

// clang-format off
template <class... Ops>
  requires(sizeof...(Ops) >= 1)
auto race(Ops&&... ops) {
  // clang-format on
  return detail::race_op<detail::awaiter_t<Ops>...>(std::forward<Ops>(ops)...);
}

}  // namespace quell
