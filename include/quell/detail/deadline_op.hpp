// How timeout, with_deadline, move_on_after and move_on_at work (quell/deadline.hpp states the
// contract): one combinator with its timer, and the walk of the cancel context that finds the
// effective deadline.
// It needs the public types of that header complete, so the header includes this file at its end.
#pragma once

#include "quell/deadline.hpp"

namespace quell::detail {

time_point effective_deadline(const context_node* from) noexcept;
// Whether a cancel from above `from` is already on its way to it: a requested task, a passed
// deadline or shield bound, and not held back by an on_cancel whose hook is still running.
bool enclosing_cancel_due(const context_node* from, time_point now) noexcept;

template <class OpAw, bool Optional>
class deadline_op : public composite {
  using R = typename driver<OpAw>::result_type;

 public:
  using value_type =
      std::conditional_t<Optional, std::optional<std::conditional_t<std::is_void_v<R>, std::monostate, R>>, R>;

  template <class X>
  deadline_op(time_point t, duration d, bool relative, X&& op)
      : op_(std::forward<X>(op)), alarm_(this, &on_alarm), delay_(d), relative_(relative) {
    node_.deadline = t;
    node_.label = Optional ? (relative ? context_node::tag::move_on_after : context_node::tag::move_on_at)
                           : (relative ? context_node::tag::timeout : context_node::tag::with_deadline);
  }
  deadline_op(deadline_op&& o)
      : composite(std::move(o)),
        op_(std::move(o.op_)),
        alarm_(this, &on_alarm),
        delay_(o.delay_),
        relative_(o.relative_) {
    node_.deadline = o.node_.deadline;
    node_.label = o.node_.label;
  }

  void describe_wait(wait_note& out) const {
    op_.describe(out);
    const char* name =
        Optional ? (relative_ ? "move_on_after > " : "move_on_at > ") : (relative_ ? "timeout > " : "with_deadline > ");
    out.what = name + out.what;
  }

  bool await_early_cancel() const noexcept { return true; }

  bool await_suspend(std::coroutine_handle<> h) noexcept {
    begin(h);
    node_.parent = outer_context();
    alarm_.reserve();
    const time_point t = now();
    if (relative_) node_.deadline = add_saturating(t, delay_);
    context_guard g(&node_);
    if (node_.deadline <= t) {
      const cancel_request r{cancel_level::graceful, cancel_reason(cancel_kind::deadline)};
      if (op_.start(this, &op_done, &r)) op_finished();
    } else if (op_.start(this, &op_done, nullptr)) {
      op_finished();
    } else if (node_.deadline != time_point::max()) {
      // Armed once the operation is waiting: timers fire only between turns, so one armed before
      // the start could not have fired during it, and one that finishes at once needs none. It
      // keeps the place among equal deadlines it reserved above (the outer deadline wins).
      alarm_.arm_reserved_at(node_.deadline);
    }
    return end_suspend();
  }

  bool await_cancel(std::coroutine_handle<>, const cancel_request& r) noexcept {
    enter();
    merge_request(req_, r);
    alarm_.stop();  // cancelled from outside: this deadline no longer decides anything
    if (!op_.finished()) op_.cancel(req_);
    leave();  // may destroy *this
    return false;
  }

  bool await_must_resume() const noexcept { return !result_.cancelled() || timed_out_; }

  value_type await_resume() {
    if (timed_out_) {
      if constexpr (Optional) {
        return std::nullopt;
      } else {
        throw timed_out("quell: the operation did not finish before its deadline");
      }
    }
    if constexpr (Optional) {
      if constexpr (std::is_void_v<R>) {
        result_.take();
        return value_type(std::in_place);
      } else {
        return value_type(std::in_place, result_.take());
      }
    } else {
      return result_.take();
    }
  }

 private:
  static void op_done(void* o, driver_base*) noexcept { static_cast<deadline_op*>(o)->op_finished(); }

  static void on_alarm(void* o) noexcept {
    auto* self = static_cast<deadline_op*>(o);
    if (self->op_.finished()) {
      self->complete();  // it finished while this call was queued; may destroy *self
      return;
    }
    self->enter();
    self->op_.cancel(cancel_request{cancel_level::graceful, cancel_reason(cancel_kind::deadline)});
    self->leave();  // may destroy *self
  }

  void op_finished() noexcept {
    op_.collect(result_);
    alarm_.stop();
    // The clock is monotonic: once this deadline's alarm fired (or it had passed at the start),
    // now() is at or past it.
    if (result_.cancelled() && req_.level == cancel_level::none && now() >= node_.deadline) {
      // This deadline cut the operation, unless an enclosing one has passed too: then that one
      // reports it (the outer wins), and this one ends cancelled on the way there.
      timed_out_ = !enclosing_cancel_due(node_.parent, now());
    }
    if (alarm_.pending()) return;  // on_alarm is queued and completes
    complete();                    // may destroy *this
  }

  driver<OpAw> op_;
  outcome<R> result_;
  alarm alarm_;
  context_frame node_{context_node::kind::deadline, &req_};
  cancel_request req_{cancel_level::none, {}};
  duration delay_;
  bool relative_;
  bool timed_out_ = false;
};

}  // namespace quell::detail
