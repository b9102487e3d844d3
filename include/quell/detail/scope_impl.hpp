// How with_scope, start() and a child's launch work (quell/scope.hpp states the contract). These
// need the public types of scope.hpp complete, so scope.hpp includes this file at its end.
#pragma once

#include "quell/scope.hpp"

namespace quell::detail {

template <class Aw, class Extra>
bool child<Aw, Extra>::launch(const cancel_request* pre) noexcept {
  if (pre) {
    if constexpr (requires(std::remove_reference_t<Aw> & a) {
                    { a.child_task() } -> std::same_as<task_record*>;
                  }) {
      d.awaiter().child_task()->request = *pre;  // as task_child::launch
      pre = nullptr;
    }
  }
  if (d.start(this, &done, nullptr)) {
    settle();
    return true;
  }
  if (pre) d.cancel(*pre);  // any other awaitable: started, then cancelled
  return false;
}

template <class Aw, class Extra>
void child<Aw, Extra>::done(void* o, driver_base*) noexcept {
  auto* self = static_cast<child*>(o);
  self->settle();
  self->owner->child_finished(self);
}

// start(fn): the awaiter of the caller.
template <class T, class Fn>
class start_op : public composite, start_state {
  using Status = task_status<T>;
  using Aw = awaiter_t<std::invoke_result_t<Fn&, Status&>>;
  using Child = child<Aw, started_from<Fn, Status>>;

 public:
  template <class F>
  start_op(scope_core& s, F&& fn) : scope_(s), fn_(std::forward<F>(fn)) {}
  start_op(start_op&& o) : composite(std::move(o)), scope_(o.scope_), fn_(std::move(o.fn_)) {}
  ~start_op() {
    if (c_) {
      if (c_->starter == this) c_->starter = nullptr;
      c_->extra.status.slot_.state = nullptr;
      c_->release();
    }
  }

  bool await_early_cancel() const noexcept { return true; }

  bool await_suspend(std::coroutine_handle<> h) {
    scope_.check_open();
    begin(h);
    on_started = &started_cb;
    on_ended = &ended_cb;
    c_ = new Child(std::in_place, std::move(fn_));  // the child keeps the callable alive
    c = c_;
    c_->extra.status.slot_.state = this;
    c_->starter = this;
    c_->retain();
    scope_.adopt(c_);
    return end_suspend();
  }

  bool await_cancel(std::coroutine_handle<>, const cancel_request& r) noexcept {
    enter();
    if (c_->starter == this && !c_->finished) c_->cancel(r);  // before started(): it is still ours
    leave();
    return false;
  }

  bool await_must_resume() const noexcept { return outcome_ != kind::cancelled; }

  T await_resume() {
    if (outcome_ == kind::error) std::rethrow_exception(c_->error());
    if (outcome_ == kind::no_start) {
      throw std::logic_error("quell: a task passed to start() ended without calling started()");
    }
    if constexpr (!std::is_void_v<T>) return std::move(*c_->extra.status.slot_.value);
  }

 private:
  enum class kind : unsigned char { pending, started, error, no_start, cancelled };

  static void started_cb(start_state* s) noexcept {
    auto* self = static_cast<start_op*>(s);
    self->outcome_ = kind::started;
    self->complete();  // may destroy *self
  }
  static void ended_cb(start_state* s) noexcept {
    auto* self = static_cast<start_op*>(s);
    self->c_->extra.status.slot_.state = nullptr;
    if (self->c_->has_error()) {
      self->outcome_ = kind::error;
    } else if (self->c_->ended_cancelled()) {
      self->outcome_ = kind::cancelled;
    } else {
      self->outcome_ = kind::no_start;
    }
    self->complete();  // may destroy *self
  }

  scope_core& scope_;
  Fn fn_;
  Child* c_ = nullptr;
  kind outcome_ = kind::pending;
};

template <class T, class Fn>
auto scope_core::start(Fn&& fn) {
  return detail::start_op<T, std::decay_t<Fn>>(*this, std::forward<Fn>(fn));
}

template <class Body>
class scope_op : public composite {
  using BodyAw = awaiter_t<std::invoke_result_t<Body&, scope&>>;
  using R = typename driver<BodyAw>::result_type;

 public:
  template <class F>
  explicit scope_op(F&& body) : fn_(std::forward<F>(body)) {}
  void describe_wait(wait_note& out) const { out.what = "scope"; }
  scope_op(scope_op&& o) : composite(std::move(o)), fn_(std::move(o.fn_)) {}

  bool await_early_cancel() const noexcept { return true; }

  bool await_suspend(std::coroutine_handle<> h) noexcept {
    begin(h);
    members_.set_parent(outer_context());
    context_guard g(members_.node());
    enter();
    try {
      body_.emplace(fn_(members_));
    } catch (...) {
      result_.set_error(std::current_exception());
      body_done_ = true;
      members_.close();
      complete();
      leave();
      return end_suspend();
    }
    if (body_->start(this, &body_finished_cb, nullptr)) body_finished();
    leave();
    return end_suspend();
  }

  bool await_cancel(std::coroutine_handle<>, const cancel_request& r) noexcept {
    enter();
    merge_request(req_, r);
    if (!body_done_) body_->cancel(req_);
    members_.cancel_all(req_);
    leave();  // may destroy *this
    return false;
  }

  bool await_must_resume() const noexcept { return !result_.cancelled() || members_.error(); }

  R await_resume() {
    // The first error (the body's, or a child's with the body's attached): see record_error.
    if (std::exception_ptr e = members_.error()) std::rethrow_exception(e);
    return result_.take();
  }

 private:
  // The scope part: tells this combinator when the last child finished or the first error came.
  class members : public scope {
   public:
    explicit members(scope_op* op) noexcept : scope(&on_idle, &on_failed), op_(op) {}
    void set_parent(context_node* p) noexcept { node_.parent = p; }
    context_node* node() noexcept { return &node_; }
    void close() noexcept { closed_ = true; }
    void cancel_all(const cancel_request& r) noexcept { cancel_children(r); }
    void fail(std::exception_ptr e) noexcept {
      enter();
      record_error(std::move(e));
      leave();
    }
    std::exception_ptr error() const noexcept { return error_; }
    bool busy() const noexcept { return busy_ != 0; }

   private:
    static void on_idle(scope_core* s) noexcept { static_cast<members*>(s)->op_->maybe_complete(); }
    static void on_failed(scope_core* s) noexcept { static_cast<members*>(s)->op_->failed(); }
    scope_op* op_;
  };

  static void body_finished_cb(void* o, driver_base*) noexcept { static_cast<scope_op*>(o)->body_finished(); }

  void body_finished() noexcept {
    body_done_ = true;
    body_->collect(result_);
    enter();
    if (result_.has_error()) {
      members_.fail(result_.error());  // cancels the children through failed()
    } else if (result_.cancelled() && req_.level == cancel_level::none) {
      // The body ended cancelled on its own: nothing will use the children's work.
      members_.cancel_all(cancel_request{cancel_level::graceful, cancel_reason(cancel_kind::sibling_failed)});
    }
    maybe_complete();  // inside enter/leave: the waiter hears of it only from leave()
    leave();           // may destroy *this
  }

  void failed() noexcept {
    const cancel_request r = req_.level != cancel_level::none
                                 ? req_
                                 : cancel_request{cancel_level::graceful, cancel_reason(cancel_kind::sibling_failed)};
    enter();
    if (!body_done_) body_->cancel(r);
    members_.cancel_all(r);
    leave();
  }

  // Also called by the scope when it is no longer busy, so never under one of its own calls.
  void maybe_complete() noexcept {
    if (body_done_ && members_.running() == 0 && !members_.busy() && !completing_) {
      completing_ = true;
      members_.close();
      complete();  // may destroy *this
    }
  }

  Body fn_;
  members members_{this};
  std::optional<driver<BodyAw>> body_;
  outcome<R> result_;
  cancel_request req_{cancel_level::none, {}};
  bool body_done_ = false;
  bool completing_ = false;
};

}  // namespace quell::detail
