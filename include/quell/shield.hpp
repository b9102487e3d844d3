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
// Forced cancellation reaches shielded operations (decided, see docs/decisions.md): a forced
// request is what a second Ctrl-C or an expired grace period sends, and a shield that could
// outlast it would make shutdown unbounded. A forced request pending before the shield starts
// means the operation never starts.
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
namespace detail {

template <class OpAw>
class shield_op : public composite {
  using R = typename driver<OpAw>::result_type;

 public:
  template <class X>
  shield_op(X&& op, duration max, bool bounded)
      : op_(std::forward<X>(op)), alarm_(this, &on_alarm), max_(max), bounded_(bounded) {}
  shield_op(shield_op&& o)
      : composite(std::move(o)), op_(std::move(o.op_)), alarm_(this, &on_alarm), max_(o.max_), bounded_(o.bounded_) {}

  // A graceful request pending at the start does not stop a shielded operation from starting.
  bool await_early_cancel(const cancel_request& r) const noexcept { return r.forced(); }

  bool await_suspend(std::coroutine_handle<> h) noexcept {
    begin(h);
    node_.parent = outer_context();
    context_guard g(&node_);
    if (op_.start(this, &op_done, nullptr)) op_finished();
    return end_suspend();
  }

  bool await_cancel(std::coroutine_handle<>, const cancel_request& r) noexcept {
    enter();
    merge_request(req_, r);
    if (!op_.finished()) {
      if (req_.forced() || lifted_) {
        op_.cancel(req_);
      } else if (bounded_ && !alarm_.armed() && !alarm_.pending()) {
        node_.deadline = add_saturating(now(), max_);
        alarm_.arm_at(node_.deadline);
      }
    }
    leave();  // may destroy *this
    return false;
  }

  bool await_must_resume() const noexcept { return !op_.cancelled; }
  R await_resume() { return op_.result(); }

  void unshield() noexcept {
    if (lifted_) return;
    lifted_ = true;
    node_.what = context_node::kind::plain;
    alarm_.stop();
    if (req_.level != cancel_level::none && op_.started() && !op_.finished()) {
      enter();
      op_.cancel(req_);
      leave();  // may destroy *this
    }
  }

 private:
  static void op_done(void* o, driver_base*) noexcept { static_cast<shield_op*>(o)->op_finished(); }

  static void on_alarm(void* o) noexcept {
    auto* self = static_cast<shield_op*>(o);
    if (self->op_.finished()) {
      self->complete();  // may destroy *self
      return;
    }
    self->enter();
    self->op_.cancel(self->req_);
    self->leave();  // may destroy *self
  }

  void op_finished() noexcept {
    alarm_.stop();
    if (alarm_.pending()) return;  // on_alarm is queued and completes
    complete();                    // may destroy *this
  }

  driver<OpAw> op_;
  alarm alarm_;
  cancel_request req_{cancel_level::none, {}};
  context_frame node_{context_node::kind::shield, &req_};
  duration max_;
  bool bounded_;
  bool lifted_ = false;
};

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
