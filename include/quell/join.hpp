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

namespace detail {

template <class T>
using join_value_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

// What join and join_settled deliver for one operation, and the policy that tells them apart:
// join stops at the first failure, join_settled keeps every outcome.
template <bool Settled, class T>
using join_element_t = std::conditional_t<Settled, settled<T>, join_value_t<T>>;

template <bool Settled, class T>
join_element_t<Settled, T> take_element(outcome<T>& o) {
  if constexpr (Settled) {
    if (o.has_error()) return settled<T>::of_error(o.error());
    if (o.cancelled()) return settled<T>();
    if constexpr (std::is_void_v<T>) {
      return settled<T>::of_value(std::monostate{});
    } else {
      return settled<T>::of_value(o.take());
    }
  } else if constexpr (std::is_void_v<T>) {
    return std::monostate{};
  } else {
    return o.take();
  }
}

// Everything both forms (tuple, vector) of join and join_settled share: starting, cancelling,
// and what happens when one operation ends. Derived provides start_all() and cancel_all(request).
template <class Derived, bool Settled>
class join_base : public composite {
 public:
  bool await_early_cancel() const noexcept { return true; }

  bool await_suspend(std::coroutine_handle<> h) noexcept {
    begin(h);
    starting_ = true;
    self().start_all();
    starting_ = false;
    if (remaining_ != 0 && (error_ || incomplete_) && !siblings_cancelled_) self().cancel_all(sibling_request());
    return end_suspend();
  }

  bool await_cancel(std::coroutine_handle<>, const cancel_request& r) noexcept {
    enter();
    merge_request(req_, r);
    self().cancel_all(req_);
    leave();
    return false;
  }

  bool await_must_resume() const noexcept {
    if constexpr (Settled) {
      return req_.level == cancel_level::none || completed_;  // cancelled only if all ended so
    } else {
      return error_ || !incomplete_;
    }
  }

 protected:
  explicit join_base(std::size_t n) noexcept : remaining_(n) {}
  join_base(join_base&& o) noexcept : composite(std::move(o)), remaining_(o.remaining_) {}

  // Moves a finished driver's outcome into `slot` and applies the policy.
  template <class D, class T>
  void finished_one(D& d, outcome<T>& slot) noexcept {
    d.collect(slot);
    --remaining_;
    if constexpr (Settled) {
      if (!slot.cancelled()) completed_ = true;
      if (remaining_ == 0) complete();  // may destroy *this
      return;
    }
    if (slot.has_error()) {
      std::exception_ptr e = slot.error();
      slot.reset();
      if (error_) {
        attach_error(error_, std::move(e));
      } else {
        error_ = std::move(e);
      }
    } else if (slot.cancelled()) {
      incomplete_ = true;
    }
    if (remaining_ == 0) {
      complete();  // may destroy *this
    } else if ((error_ || incomplete_) && !siblings_cancelled_ && !starting_) {
      self().cancel_all(sibling_request());
    }
  }

  void rethrow_if_error() const {
    if (error_) std::rethrow_exception(error_);
  }

  std::size_t remaining_;

 private:
  Derived& self() noexcept { return static_cast<Derived&>(*this); }

  cancel_request sibling_request() noexcept {
    siblings_cancelled_ = true;
    if (req_.level != cancel_level::none) return req_;  // the join itself is being cancelled: its reason
    return cancel_request{cancel_level::graceful, cancel_reason(cancel_kind::sibling_failed)};
  }

  std::exception_ptr error_;
  cancel_request req_{cancel_level::none, {}};
  bool incomplete_ = false;  // some operation ended cancelled
  bool completed_ = false;   // join_settled: some operation ended with a value or an exception
  bool starting_ = false;
  bool siblings_cancelled_ = false;
};

template <bool Settled, class... Aws>
class join_op : public join_base<join_op<Settled, Aws...>, Settled> {
  using base = join_base<join_op<Settled, Aws...>, Settled>;
  friend base;
  using results = std::tuple<outcome<typename driver<Aws>::result_type>...>;

 public:
  using value_type = std::tuple<join_element_t<Settled, typename driver<Aws>::result_type>...>;

  template <class... Xs>
  explicit join_op(Xs&&... xs) : base(sizeof...(Aws)), branches_(std::forward<Xs>(xs)...) {}
  join_op(join_op&& o) : base(std::move(o)), branches_(std::move(o.branches_)) {}

  value_type await_resume() {
    this->rethrow_if_error();
    return build(std::index_sequence_for<Aws...>{});
  }

 private:
  void start_all() noexcept { start_each(std::index_sequence_for<Aws...>{}); }
  template <std::size_t... I>
  void start_each(std::index_sequence<I...>) noexcept {
    ((std::get<I>(branches_).start(this, &branch_done<I>, nullptr) ? branch_finished<I>() : void()), ...);
  }
  void cancel_all(const cancel_request& r) noexcept {
    this->enter();
    std::apply([&](auto&... d) { ((d.started() && !d.finished() ? d.cancel(r) : void()), ...); }, branches_);
    this->leave();  // may destroy *this
  }
  template <std::size_t I>
  static void branch_done(void* o, driver_base*) noexcept {
    static_cast<join_op*>(o)->template branch_finished<I>();
  }
  template <std::size_t I>
  void branch_finished() noexcept {
    this->finished_one(std::get<I>(branches_), std::get<I>(results_));
  }
  template <std::size_t... I>
  value_type build(std::index_sequence<I...>) {
    return value_type(take_element<Settled>(std::get<I>(results_))...);
  }

  std::tuple<driver<Aws>...> branches_;
  results results_;
};

template <bool Settled, class Aw>
class join_range_op : public join_base<join_range_op<Settled, Aw>, Settled> {
  using base = join_base<join_range_op<Settled, Aw>, Settled>;
  friend base;
  using R = typename driver<Aw>::result_type;

 public:
  using value_type = std::vector<join_element_t<Settled, R>>;

  template <class Range>
  explicit join_range_op(Range&& ops) : base(0) {
    branches_.reserve(ops.size());  // drivers never move once started
    for (auto&& op : ops) branches_.emplace_back(std::move(op));
    this->remaining_ = branches_.size();
    results_ = std::vector<outcome<R>>(branches_.size());
  }
  join_range_op(join_range_op&& o)
      : base(std::move(o)), branches_(std::move(o.branches_)), results_(std::move(o.results_)) {}

  bool await_ready() const noexcept { return branches_.empty(); }

  value_type await_resume() {
    this->rethrow_if_error();
    value_type out;
    out.reserve(results_.size());
    for (auto& o : results_) out.push_back(take_element<Settled>(o));
    return out;
  }

 private:
  void start_all() noexcept {
    for (auto& d : branches_) {
      if (d.start(this, &branch_done, nullptr)) finished(d);
    }
  }
  void cancel_all(const cancel_request& r) noexcept {
    this->enter();
    for (auto& d : branches_) {
      if (d.started() && !d.finished()) d.cancel(r);
    }
    this->leave();  // may destroy *this
  }
  static void branch_done(void* o, driver_base* d) noexcept {
    static_cast<join_range_op*>(o)->finished(*static_cast<driver<Aw>*>(d));
  }
  void finished(driver<Aw>& d) noexcept {
    this->finished_one(d, results_[static_cast<std::size_t>(&d - branches_.data())]);
  }

  std::vector<driver<Aw>> branches_;
  std::vector<outcome<R>> results_;
};

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
