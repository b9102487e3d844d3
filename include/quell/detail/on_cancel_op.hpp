// How on_cancel works (quell/on_cancel.hpp states the contract): the hook runners (awaitable,
// synchronous, or a callable making an awaitable) and the combinator that holds a request back from
// the operation until the hook has run.
// It needs the public types of that header complete, so the header includes this file at its end.
#pragma once

#include "quell/on_cancel.hpp"

namespace quell::detail {

template <class H>
class hook_runner {  // an awaitable hook
 public:
  template <class X>
  explicit hook_runner(X&& h) : d_(std::forward<X>(h)) {}
  bool start(void* owner, driver_base::done_fn fn) noexcept { return d_.start(owner, fn, nullptr); }
  void cancel(const cancel_request& r) noexcept { d_.cancel(r); }
  std::exception_ptr error() noexcept { return d_.discard_result(); }

 private:
  driver<awaiter_t<H>> d_;
};

// clang-format off
template <class F>
  requires(!awaitable<F> && std::is_invocable_v<F&> && std::is_void_v<std::invoke_result_t<F&>>)
class hook_runner<F> {  // a synchronous hook
  // clang-format on
 public:
  template <class X>
  explicit hook_runner(X&& f) : f_(std::forward<X>(f)) {}
  bool start(void*, driver_base::done_fn) noexcept {
    try {
      f_();
    } catch (...) {
      error_ = std::current_exception();
    }
    return true;
  }
  void cancel(const cancel_request&) noexcept {}
  std::exception_ptr error() noexcept { return error_; }

 private:
  F f_;
  std::exception_ptr error_;
};

// clang-format off
template <class F>
  requires(!awaitable<F> && std::is_invocable_v<F&> && awaitable<std::invoke_result_t<F&>>)
class hook_runner<F> {  // a callable making the hook's awaitable (e.g. a lambda returning a task)
  // clang-format on
  using A = std::invoke_result_t<F&>;

 public:
  template <class X>
  explicit hook_runner(X&& f) : f_(std::forward<X>(f)) {}
  hook_runner(hook_runner&& o) : f_(std::move(o.f_)) {}  // only before it starts
  bool start(void* owner, driver_base::done_fn fn) noexcept {
    try {
      d_.emplace(f_());  // invoked only when the hook is needed
    } catch (...) {
      error_ = std::current_exception();
      return true;
    }
    return d_->start(owner, fn, nullptr);
  }
  void cancel(const cancel_request& r) noexcept {
    if (d_) d_->cancel(r);
  }
  std::exception_ptr error() noexcept { return error_ ? error_ : d_->discard_result(); }

 private:
  F f_;
  std::optional<driver<awaiter_t<A>>> d_;
  std::exception_ptr error_;
};

template <class OpAw, class Hook>
class on_cancel_op : public composite {
  using R = typename driver<OpAw>::result_type;

 public:
  template <class O, class H>
  on_cancel_op(O&& op, H&& hook) : op_(std::forward<O>(op)), hook_(std::forward<H>(hook)) {}
  on_cancel_op(on_cancel_op&& o) : composite(std::move(o)), op_(std::move(o.op_)), hook_(std::move(o.hook_)) {}

  bool await_early_cancel() const noexcept { return true; }
  void describe_wait(wait_note& out) const {
    op_.describe(out);
    out.what = (hook_started_ && !hook_done_ ? "on_cancel (hook running) > " : "on_cancel > ") + out.what;
  }

  bool await_suspend(std::coroutine_handle<> h) noexcept {
    begin(h);
    op_context_.parent = outer_context();
    {
      context_guard g(&op_context_);
      if (op_.start(this, &op_done, nullptr)) op_finished();
    }
    return end_suspend();
  }

  bool await_cancel(std::coroutine_handle<>, const cancel_request& r) noexcept {
    enter();
    merge_request(req_, r);
    if (!hook_started_) {
      if (!op_.finished()) start_hook();
    } else if (!hook_done_) {
      if (req_.forced()) hook_.cancel(req_);
    } else if (!op_.finished()) {
      forward();
    }
    leave();
    return false;
  }

  bool await_must_resume() const noexcept { return !result_.cancelled() || hook_error_; }

  R await_resume() {
    if (hook_error_) {
      if (result_.has_error()) {
        attach_error(result_.error(), hook_error_);
        std::rethrow_exception(result_.error());
      }
      std::rethrow_exception(hook_error_);
    }
    return result_.take();
  }

 private:
  static void op_done(void* o, driver_base*) noexcept { static_cast<on_cancel_op*>(o)->op_finished(); }
  static void hook_done(void* o, driver_base*) noexcept { static_cast<on_cancel_op*>(o)->hook_finished(); }

  void start_hook() noexcept {
    hook_started_ = true;
    hook_context_.parent = outer_context();
    context_guard g(&hook_context_);
    enter();
    if (hook_.start(this, &hook_done)) {
      hook_finished();
    } else if (req_.forced()) {
      hook_.cancel(req_);
    }
    leave();  // may destroy *this
  }

  void op_finished() noexcept {
    op_.collect(result_);
    if (!hook_started_) {
      if (result_.has_error()) {
        start_hook();  // inside-out: the hook runs, then the exception continues outward
      } else {
        complete();
      }
    } else if (hook_done_) {
      complete();
    }
    // else: op ended while the hook runs; on_cancel ends when the hook does
  }

  void hook_finished() noexcept {
    hook_done_ = true;
    hook_error_ = hook_.error();
    if (op_.finished()) {
      complete();
    } else {
      forward();  // outside-in: now the operation itself; may destroy *this
    }
  }

  void forward() noexcept {
    op_context_.request = &req_;  // from now on the operation's code sees the request
    op_.cancel(req_);
  }

  driver<OpAw> op_;
  hook_runner<Hook> hook_;
  outcome<R> result_;
  std::exception_ptr hook_error_;
  cancel_request req_{cancel_level::none, {}};
  // The hook runs shielded: this_task::deadline() inside it ignores outer deadlines, and
  // this_task::cancel_reason() still tells why the operation is being cancelled.
  context_frame hook_context_{context_node::kind::shield, &req_, context_node::tag::on_cancel_hook};
  // Until the hook has run, the request has not reached the operation: a deadline inside it that
  // expires meanwhile times out (it does not end cancelled as if the outer request were its own).
  context_frame op_context_{context_node::kind::held, nullptr};
  bool hook_started_ = false;
  bool hook_done_ = false;
};

}  // namespace quell::detail
