// How shield works (quell/shield.hpp states the contract): the combinator that holds graceful
// requests back from its operation, with its optional bound.
// It needs the public types of that header complete, so the header includes this file at its end.
#pragma once

#include "quell/shield.hpp"

namespace quell::detail {

template <class OpAw>
class shield_op : public composite {
  using R = typename driver<OpAw>::result_type;

 public:
  template <class X>
  shield_op(X&& op, duration max, bool bounded)
      : op_(std::forward<X>(op)), alarm_(this, &on_alarm), max_(max), bounded_(bounded) {
    if (bounded) node_.bound = max;  // a bounded_frame: read by the task tree
  }
  shield_op(shield_op&& o)
      : composite(std::move(o)), op_(std::move(o.op_)), alarm_(this, &on_alarm), max_(o.max_), bounded_(o.bounded_) {
    node_.bound = o.node_.bound;
  }

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
  void describe_wait(wait_note& out) const {
    op_.describe(out);
    out.what = (lifted_ ? "unshielded > " : "shield > ") + out.what;
  }

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
  bounded_frame node_{context_node::kind::shield, &req_, context_node::tag::bounded_shield};
  duration max_;
  bool bounded_;
  bool lifted_ = false;
};

}  // namespace quell::detail
