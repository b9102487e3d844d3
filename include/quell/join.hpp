// join(a, b, ...): run every operation concurrently; all must finish.
//
// All operations are started in argument order. join yields a std::tuple of their results, in
// argument order (a void result becomes std::monostate, so positions never shift). The range form
// join(std::vector<A>) yields a std::vector of results (std::vector<std::monostate> for void).
//
// Races inside the join:
//   - The first exception cancels every operation still running (graceful, reason
//     sibling_failed) and waits for all of them to finish (their hooks and async cleanup run);
//     then join rethrows that first exception, unchanged. Exceptions thrown later (by a sibling
//     while being cancelled, or by its cleanup) are attached to it (quell/errors.hpp), not lost.
//   - If join itself is cancelled, the request goes to every operation still running; join waits
//     for all of them. If they all completed anyway, join delivers the tuple; otherwise it ends
//     cancelled. An operation that the request met after its result was known (a read whose
//     bytes were reaped, a granted permit) keeps that result for the next call and ends
//     cancelled, as every quell leaf does. An operation that had *completed* before the request
//     came has delivered its result to join; join's result is all or nothing, so that value is
//     discarded with the join, as a task's locals are discarded with a cancelled task (to keep
//     every outcome, await the operations separately, or use join_settled, below).
//   - An operation that ends cancelled on its own (without join being cancelled) means the tuple
//     can never be complete: the others are cancelled too and join ends cancelled.
//   - A join that never started starts nothing.
//
// join_settled(a, b, ...) and join_settled(std::vector<A>): every operation runs to its end and
// nothing is dropped. It yields a std::tuple (a std::vector) of quell::settled<T>, one per
// operation in argument order, each holding how that operation ended: its value, its exception,
// or cancelled. It never throws, and a failure cancels nothing: the caller decides. If
// join_settled itself is cancelled, the request goes to every operation still running and it
// waits for all of them; it ends cancelled if every operation did, and yields the outcomes
// otherwise (those that completed anyway keep their values). An operation that ends cancelled on
// its own (a token it watches fired) is just that outcome.
//
//   auto [a, b] = co_await quell::join_settled(fetch("a"), fetch("b"));
//   if (a.has_value()) use(a.value());
//   else if (a.has_error()) log(a.error());
#pragma once

#include <coroutine>
#include <cstddef>
#include <exception>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "quell/cancellation.hpp"
#include "quell/detail/composite.hpp"
#include "quell/detail/driver.hpp"
#include "quell/detail/outcome.hpp"
#include "quell/errors.hpp"

namespace quell {

// How one operation of join_settled ended: with a value, with an exception, or cancelled.
// (A void operation's value is std::monostate.)
template <class T>
class settled {
  static_assert(!std::is_reference_v<T>, "quell::settled holds values, not references");
  using value_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

 public:
  settled() noexcept = default;  // cancelled
  static settled of_value(value_t v) { return settled(std::in_place_index<1>, std::move(v)); }
  static settled of_error(std::exception_ptr e) noexcept { return settled(std::in_place_index<2>, std::move(e)); }

  bool has_value() const noexcept { return v_.index() == 1; }
  bool has_error() const noexcept { return v_.index() == 2; }
  bool cancelled() const noexcept { return v_.index() == 0; }

  // The value; rethrows the exception, or throws quell::cancelled_error, if there is none.
  value_t& value() & {
    check();
    return std::get<1>(v_);
  }
  value_t&& value() && {
    check();
    return std::get<1>(std::move(v_));
  }
  // The exception, or null.
  std::exception_ptr error() const noexcept { return has_error() ? std::get<2>(v_) : nullptr; }

 private:
  template <std::size_t I, class X>
  settled(std::in_place_index_t<I> i, X&& x) : v_(i, std::forward<X>(x)) {}
  void check() const {
    if (has_error()) std::rethrow_exception(std::get<2>(v_));
    if (cancelled()) throw cancelled_error("quell: this operation of join_settled ended cancelled");
  }
  std::variant<std::monostate, value_t, std::exception_ptr> v_;
};

namespace detail {  // the machinery: detail/join_op.hpp, included at the end
template <bool Settled, class... Aws>
class join_op;
template <bool Settled, class Aw>
class join_range_op;
}  // namespace detail

// clang-format off
template <class... Ops>
  requires(sizeof...(Ops) >= 1)
auto join(Ops&&... ops) {
  // clang-format on
  return detail::join_op<false, detail::awaiter_t<Ops>...>(std::forward<Ops>(ops)...);
}

// The range form: every element is moved from `ops` into the join.
template <class A>
auto join(std::vector<A> ops) {
  return detail::join_range_op<false, detail::awaiter_t<A>>(std::move(ops));
}

// clang-format off
template <class... Ops>
  requires(sizeof...(Ops) >= 1)
auto join_settled(Ops&&... ops) {
  // clang-format on
  return detail::join_op<true, detail::awaiter_t<Ops>...>(std::forward<Ops>(ops)...);
}

template <class A>
auto join_settled(std::vector<A> ops) {
  return detail::join_range_op<true, detail::awaiter_t<A>>(std::move(ops));
}

}  // namespace quell

#include "quell/detail/join_op.hpp"  // IWYU pragma: export
