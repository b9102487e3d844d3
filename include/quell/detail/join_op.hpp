// How join and join_settled work (quell/join.hpp states the contract): one combinator for a fixed
// list of operations and one for a vector, sharing what they do when an operation ends.
// It needs the public types of that header complete, so the header includes this file at its end.
#pragma once

#include "quell/join.hpp"

namespace quell::detail {

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
  void describe_wait(wait_note& out) const {
    out.what = "join of " + std::to_string(sizeof...(Aws));
    std::apply([&](const auto&... d) { (collect_links(d, out), ...); }, branches_);
  }
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
  void describe_wait(wait_note& out) const {
    out.what = "join of " + std::to_string(branches_.size());
    for (const auto& d : branches_) collect_links(d, out);
  }

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

}  // namespace quell::detail
