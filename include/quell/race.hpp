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
namespace detail {

template <class T>
using monostate_if_void = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

template <class R0, class... Rs>
struct race_result {
  using type = std::conditional_t<(std::is_same_v<R0, Rs> && ...), R0,
                                  std::variant<monostate_if_void<R0>, monostate_if_void<Rs>...>>;
};

// What race keeps: the winner's value (or the first exception). A loser that completes later is
// asked to give its result back, and dropped if it cannot (see race() below).
template <class... Aws>
class race_keeps {
  using R = typename race_result<typename driver<Aws>::result_type...>::type;
  static constexpr bool same_type =
      !std::is_same_v<R, std::variant<>> && (std::is_same_v<R, typename driver<Aws>::result_type> && ...);

 public:
  using value_type = R;

  bool decided() const noexcept { return !result_.empty(); }
  bool failed() const noexcept { return result_.has_error(); }

  template <std::size_t I, class D>
  void winner(D& d) noexcept {
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

  template <std::size_t I, class D>
  void late(D& d) noexcept {
    if (std::exception_ptr e = d.discard_result()) {
      if (result_.has_error()) {
        attach_error(result_.error(), std::move(e));
      } else {
        result_.set_error(std::move(e));  // an exception beats a value
      }
    }
  }

  R take() { return result_.take(); }

 private:
  outcome<R> result_;
};

// What any_of keeps: every branch's value, the winner's and each late one's.
template <class T>
using any_of_slot = std::conditional_t<std::is_void_v<T>, bool, std::optional<T>>;

template <class... Aws>
class any_of_keeps {
 public:
  using value_type = std::tuple<any_of_slot<typename driver<Aws>::result_type>...>;

  bool decided() const noexcept { return decided_; }
  bool failed() const noexcept { return error_ != nullptr; }

  template <std::size_t I, class D>
  void winner(D& d) noexcept {
    decided_ = true;
    late<I>(d);
  }

  template <std::size_t I, class D>
  void late(D& d) noexcept {
    try {
      if constexpr (std::is_void_v<typename D::result_type>) {
        d.result();
        std::get<I>(values_) = true;
      } else {
        std::get<I>(values_).emplace(d.result());
      }
    } catch (...) {
      if (!error_) {
        error_ = std::current_exception();
      } else {
        attach_error(error_, std::current_exception());
      }
    }
  }

  value_type take() {
    if (error_) std::rethrow_exception(error_);
    return std::move(values_);
  }

 private:
  value_type values_{};
  std::exception_ptr error_;
  bool decided_ = false;
};

// race and any_of: every branch is started; the first to finish decides; the others are cancelled
// and awaited. `Keeps` says what is kept of the winner and of a loser that completes later.
template <class Keeps, class... Aws>
class first_done_op : public composite {
  static constexpr std::size_t N = sizeof...(Aws);

 public:
  template <class... Xs>
  explicit first_done_op(Xs&&... xs) : branches_(std::forward<Xs>(xs)...) {}
  first_done_op(first_done_op&& o) : composite(std::move(o)), branches_(std::move(o.branches_)) {}

  bool await_early_cancel() const noexcept { return true; }

  bool await_suspend(std::coroutine_handle<> h) noexcept {
    begin(h);
    starting_ = true;
    start_all(std::index_sequence_for<Aws...>{});
    starting_ = false;
    if (remaining_ != 0 && keeps_.decided() && !losers_cancelled_) cancel_losers();
    return end_suspend();
  }

  bool await_cancel(std::coroutine_handle<>, const cancel_request& r) noexcept {
    enter();
    merge_request(req_, r);
    cancel_running(req_, std::index_sequence_for<Aws...>{});
    leave();
    return false;
  }

  bool await_must_resume() const noexcept { return keeps_.decided(); }
  typename Keeps::value_type await_resume() { return keeps_.take(); }

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
    static_cast<first_done_op*>(o)->template branch_finished<I>();
  }

  template <std::size_t I>
  void branch_finished() noexcept {
    auto& d = std::get<I>(branches_);
    --remaining_;
    if (!d.cancelled) {
      if (!keeps_.decided()) {
        keeps_.template winner<I>(d);
      } else {
        keeps_.template late<I>(d);
      }
    }
    if (remaining_ == 0) {
      complete();  // may destroy *this
    } else if (!starting_ && !losers_cancelled_ && keeps_.decided()) {
      cancel_losers();
    }
  }

  void cancel_losers() noexcept {
    losers_cancelled_ = true;
    cancel_request r =
        req_.level != cancel_level::none  // the combinator itself is being cancelled: its reason
            ? req_
            : cancel_request{cancel_level::graceful,
                             cancel_reason(keeps_.failed() ? cancel_kind::sibling_failed : cancel_kind::race_decided)};
    enter();
    cancel_running(r, std::index_sequence_for<Aws...>{});
    leave();  // may destroy *this
  }

  std::tuple<driver<Aws>...> branches_;
  Keeps keeps_;
  cancel_request req_{cancel_level::none, {}};
  std::size_t remaining_ = N;
  bool starting_ = false;
  bool losers_cancelled_ = false;
};

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
