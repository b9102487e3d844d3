// How race and any_of work (quell/race.hpp states the contract): what each keeps, and the
// combinator both share, which starts every operation, takes the first to finish and cancels the rest.
// It needs the public types of that header complete, so the header includes this file at its end.
#pragma once

#include "quell/race.hpp"

namespace quell::detail {

template <class T>
using monostate_if_void = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

template <class R0, class... Rs>
struct race_result {
  using type = std::conditional_t<(std::is_same_v<R0, Rs> && ...), R0,
                                  std::variant<monostate_if_void<R0>, monostate_if_void<Rs>...>>;
};

// What race keeps: the winner's value (or the first exception). A loser that completes later is
// asked to give its result back, and dropped if it cannot (race.hpp states the rule).
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

  void describe_wait(wait_note& out) const {
    out.what = "race of " + std::to_string(N);
    std::apply([&](const auto&... d) { (collect_links(d, out), ...); }, branches_);
  }

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

}  // namespace quell::detail
