// scope / with_scope: a nursery. Children run concurrently; the scope waits for all of them.
//
//   int total = co_await quell::with_scope([&](quell::scope& s) -> quell::task<int> {
//     auto a = s.spawn(fetch("a"));                  // starts now, runs concurrently
//     auto b = s.spawn(fetch("b"));
//     co_return co_await a + co_await b;             // a handle yields its child's value
//   });
//
// The body (a callable taking `scope&` and returning an awaitable) is itself a member: with_scope
// finishes when the body *and* every child have finished, and yields the body's value.
//
// Who cancels whom:
//   - The first exception (from the body or a child) cancels every other member (graceful,
//     reason sibling_failed); once all have finished, with_scope rethrows that first exception
//     with later ones attached (quell/errors.hpp).
//   - Cancelling with_scope (its awaiting task is cancelled) cancels the body and every child;
//     it completes only after each has finished its cancellation (hooks, defer cleanups). It then
//     ends cancelled, unless the body completed anyway (its value is delivered).
//   - s.cancel(reason) cancels every child, present and future, but not the body: the body is the
//     code that asked, and goes on to return (corral's "co_return cancel"; Trio's
//     nursery.cancel_scope.cancel() would also cancel the body).
//   - A child spawned into a scope that is being cancelled still starts, so that it can register
//     and run its cleanup, and is cancelled at its first suspension point.
//   - A child that ends cancelled is not an error: the others continue.
//   - The body ending cancelled on its own (e.g. it awaited a handle whose child was cancelled)
//     cancels the children; with_scope then ends cancelled.
//
// spawn(op) takes any awaitable, or a callable returning one: `s.spawn([&]() -> task<> {...})`.
// Prefer the callable form for lambda coroutines: the scope keeps the lambda alive as long as the
// child runs, whereas `s.spawn([&]() -> task<> {...}())` leaves the coroutine pointing at a closure
// that died at the end of the statement (a C++ rule for lambda coroutines, not a quell one).
//
// Handles: spawn(op) returns spawn_handle<R>. `co_await h` waits for the child (awaiting is a
// cancellation point of the waiter; cancelling the waiter does not cancel the child) and yields
// its value, once. If the child ended cancelled or threw, the waiter ends cancelled: a child's
// exception belongs to the scope, which cancels the body because of it and rethrows it.
// h.cancel() cancels that one child. Handles may be dropped: the scope still owns the child.
// A spawned task's frame (its parameters, and its value until a handle takes it) lives as long as
// the scope or a handle refers to the child; a task that ended cancelled is freed as soon as it
// ends, so its locals (a permit, a lease) are released then, whatever handles still exist.
//
// start(fn), Trio's start()/started() handshake: `T v = co_await s.start<T>(fn)` spawns
// fn(task_status<T>&) and waits until the child calls status.started(v) (e.g. "listening on
// port v"); the child then keeps running in the scope. Before started(): an exception from the
// child is thrown by start() (not by the scope); the child ending without calling started() makes
// start() throw std::logic_error; cancelling start()'s caller cancels the child, waits for it,
// and start() ends cancelled (unless started() was called meanwhile: completion wins). After
// started(), the child belongs to the scope: cancelling start()'s caller no longer reaches it.
//
// All of it runs on the executor's thread. Misuse is a std::logic_error: awaiting one handle from
// two tasks at once, taking a handle's value twice, calling started() twice.
#pragma once

#include <coroutine>
#include <cstddef>
#include <exception>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <variant>

#include "quell/cancellation.hpp"
#include "quell/detail/composite.hpp"
#include "quell/detail/driver.hpp"
#include "quell/detail/intrusive_list.hpp"
#include "quell/detail/outcome.hpp"
#include "quell/detail/scheduler.hpp"
#include "quell/errors.hpp"
#include "quell/task.hpp"

namespace quell {

class scope_core;
template <class T>
class task_status;

namespace detail {

struct start_state;
template <class T, class Fn>
class start_op;

// One spawned child. Owned by its scope until it finishes, and by each handle to it.
struct child_base : list_node {
  enum class ending : unsigned char { running, value, error, cancelled };

  scope_core* owner = nullptr;
  int refs = 1;
  bool finished = false;
  bool taken = false;              // a handle's await took the value
  ending end = ending::running;    // set just before the scope hears that it finished
  std::coroutine_handle<> waiter;  // a task awaiting a handle
  start_state* starter = nullptr;  // start(): the caller, until started() is called

  child_base() = default;
  child_base(const child_base&) = delete;
  child_base& operator=(const child_base&) = delete;
  virtual ~child_base() = default;

  // Starts the child; `pre`: a request already in force (the child still starts, and is
  // cancelled at its first suspension point). True if it finished during the call.
  virtual bool launch(const cancel_request* pre) noexcept = 0;
  // Only while the child runs.
  virtual void cancel(const cancel_request& r) noexcept = 0;
  // Only when it ended with an error.
  virtual std::exception_ptr error() const noexcept = 0;

  bool ended_cancelled() const noexcept { return end == ending::cancelled; }
  bool has_error() const noexcept { return end == ending::error; }

 protected:
  template <class T>
  void record_end(const outcome<T>& o) noexcept {
    end = o.has_error() ? ending::error : o.cancelled() ? ending::cancelled : ending::value;
  }

 public:
  void retain() noexcept { ++refs; }
  void release() noexcept {
    if (--refs == 0) delete this;
  }
};

template <class R>
struct child_of : child_base {
  // The value or the exception, once; only when it ended with one.
  virtual R take() = 0;
};

struct no_extra {};

// What a child made by a callable keeps: the callable itself (a lambda coroutine refers to its
// closure, so the closure must live as long as the child) and, for start(), the task_status.
template <class Fn>
struct made_from {
  using made = std::invoke_result_t<Fn&>;
  Fn fn;
  decltype(auto) make() { return fn(); }
};
template <class Fn, class Status>
struct started_from {
  Fn fn;
  Status status{};
  decltype(auto) make() { return fn(status); }
};

// Any awaitable, through the driver. Its outcome is moved out of the awaitable when it ends.
template <class Aw, class Extra = no_extra>
struct child final : child_of<typename driver<Aw>::result_type> {
  using R = typename driver<Aw>::result_type;

  template <class X>
  explicit child(X&& x) : d(std::forward<X>(x)) {}
  template <class Fn>
  child(std::in_place_t, Fn&& fn) : extra{std::forward<Fn>(fn)}, d(extra.make()) {}

  bool launch(const cancel_request* pre) noexcept override;
  void cancel(const cancel_request& r) noexcept override { d.cancel(r); }
  std::exception_ptr error() const noexcept override { return result.error(); }
  R take() override { return result.take(); }
  static void done(void* o, driver_base*) noexcept;

  void settle() noexcept {
    d.collect(result);
    this->record_end(result);
  }

  [[no_unique_address]] Extra extra;
  driver<Aw> d;
  outcome<R> result;
};

// A quell task, the usual child, driven directly (like a task's co_await of a task,
// task.hpp) rather than through a driver, so that a spawned task costs its frame plus this
// small record (issue 6, W3's bytes per task). The same rules as the driver around
// task::awaiter: a request is stored in the task and forwarded to what it is parked on, also
// while the task is still running inside launch(); a task that ended cancelled is freed at once;
// a failed cleanup's error is the result. The result stays in the task's frame until taken.
template <class U, class Extra = no_extra>
struct task_child final : child_of<U>, resume_target {
  explicit task_child(task<U>&& t) : resume_target(&on_resume), h(task_access<U>::take(std::move(t))) {}
  template <class Fn>
  task_child(std::in_place_t, Fn&& fn)
      : resume_target(&on_resume), extra{std::forward<Fn>(fn)}, h(task_access<U>::take(extra.make())) {}
  ~task_child() override { release_frame(h); }

  bool launch(const cancel_request* pre) noexcept override {
    if (pre) h.promise().request = *pre;  // it runs up to its first co_await, which is cancelled
    if (run_inline(h)) {
      settle();
      return true;
    }
    h.promise().continuation = handle();
    return false;
  }
  void cancel(const cancel_request& r) noexcept override { h.promise().request_cancel(r); }
  std::exception_ptr error() const noexcept override { return h.promise().result.error(); }
  U take() override { return h.promise().result.take(); }

  void settle() noexcept {
    if (settle_finished(h)) {
      this->record_end(h.promise().result);
    } else {
      this->end = child_base::ending::cancelled;  // and its frame is gone
    }
  }
  static void on_resume(void* p) noexcept {
    auto* self = static_cast<task_child*>(static_cast<resume_target*>(p));
    self->settle();
    self->owner->child_finished(self);  // may destroy *self
  }

  [[no_unique_address]] Extra extra;
  std::coroutine_handle<promise<U>> h;
};

template <class Op>
struct child_for {
  using type = child<awaiter_t<Op>>;
};
template <class U>
struct child_for<task<U>> {
  using type = task_child<U>;
};
template <class Fn, class Made = typename made_from<Fn>::made>
struct child_made_by {
  using type = child<awaiter_t<Made>, made_from<Fn>>;
};
template <class Fn, class U>
struct child_made_by<Fn, task<U>> {
  using type = task_child<U, made_from<Fn>>;
};

// A start() caller waiting for started().
struct start_state {
  child_base* c = nullptr;
  void (*on_started)(start_state*) noexcept = nullptr;  // started() was called
  void (*on_ended)(start_state*) noexcept = nullptr;    // the child ended first
};

// The child's own view of start(): where started() sends its value.
template <class T>
struct status_slot {
  start_state* state = nullptr;
  std::optional<std::conditional_t<std::is_void_v<T>, std::monostate, T>> value;
};

}  // namespace detail

// What a start()ed child calls once it is ready (see above).
template <class T = void>
class task_status {
 public:
  // Hands `v` to the start() caller, which resumes; the child keeps running in the scope.
  // Calling it twice is an error (std::logic_error); after start() was abandoned it does nothing.
  template <class U = T>
  void started(U&& v) {
    check();
    slot_.value.emplace(std::forward<U>(v));
    fire();
  }

 private:
  template <class, class>
  friend class detail::start_op;
  void check() {
    if (used_) throw std::logic_error("quell: task_status::started() called twice");
    used_ = true;
  }
  void fire() noexcept {
    if (detail::start_state* s = std::exchange(slot_.state, nullptr)) {
      s->c->starter = nullptr;
      s->on_started(s);
    }
  }
  detail::status_slot<T> slot_;
  bool used_ = false;
};

template <>
class task_status<void> {
 public:
  void started() {
    if (used_) throw std::logic_error("quell: task_status::started() called twice");
    used_ = true;
    slot_.value.emplace();
    if (detail::start_state* s = std::exchange(slot_.state, nullptr)) {
      s->c->starter = nullptr;
      s->on_started(s);
    }
  }

 private:
  template <class, class>
  friend class detail::start_op;
  detail::status_slot<void> slot_;
  bool used_ = false;
};

// A handle to a spawned child (see above). Move-only; dropping it leaves the child to the scope.
template <class R>
class spawn_handle {
 public:
  spawn_handle() noexcept = default;
  explicit spawn_handle(detail::child_of<R>* c) noexcept : c_(c) { c_->retain(); }
  spawn_handle(spawn_handle&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  spawn_handle& operator=(spawn_handle&& o) noexcept {
    if (this != &o) {
      if (c_) c_->release();
      c_ = std::exchange(o.c_, nullptr);
    }
    return *this;
  }
  ~spawn_handle() {
    if (c_) c_->release();
  }

  bool valid() const noexcept { return c_ != nullptr; }
  bool done() const noexcept { return c_ && c_->finished; }
  // Cancels this child (graceful; idempotent; nothing if it has finished).
  void cancel(cancel_reason reason = cancel_reason(cancel_kind::requested)) noexcept {
    if (c_ && !c_->finished) c_->cancel(cancel_request{cancel_level::graceful, std::move(reason)});
  }
  // The same, forced: also cancels the child's running cleanup and reaches through its shields
  // (what a second Ctrl-C means; quell/shield.hpp).
  void force_cancel(cancel_reason reason = cancel_reason(cancel_kind::requested)) noexcept {
    if (c_ && !c_->finished) c_->cancel(cancel_request{cancel_level::forced, std::move(reason)});
  }

  class awaiter {
   public:
    explicit awaiter(detail::child_of<R>* c) noexcept : c_(c) {}
    bool await_ready() const noexcept { return c_->end == detail::child_base::ending::value; }
    bool await_suspend(std::coroutine_handle<> h) {
      if (c_->finished) return false;  // ended cancelled or failed: the waiter learns it through await_must_resume
      if (c_->waiter) throw std::logic_error("quell: a spawn_handle is awaited by two tasks at once");
      c_->waiter = h;
      return true;
    }
    bool await_cancel(std::coroutine_handle<>) noexcept {  // stops waiting; the child goes on
      c_->waiter = {};
      return true;
    }
    bool await_must_resume() const noexcept { return c_->end == detail::child_base::ending::value; }
    R await_resume() {
      if (c_->taken) throw std::logic_error("quell: a spawn_handle's value was already taken");
      c_->taken = true;
      return c_->take();
    }

   private:
    detail::child_of<R>* c_;
  };

  awaiter operator co_await() const {
    if (!c_) throw std::logic_error("quell: co_await on an empty spawn_handle");
    return awaiter(c_);
  }

 private:
  detail::child_of<R>* c_ = nullptr;
};

// What scopes and task groups share: the children, the first error, the request that cancels them.
class scope_core {
 public:
  scope_core(const scope_core&) = delete;
  scope_core& operator=(const scope_core&) = delete;

  // Starts `op` (any awaitable) as a child now; it runs until its first suspension point before
  // spawn returns.
  // `op` may also be a callable returning an awaitable (e.g. a lambda coroutine): it is called
  // here and kept alive with the child, so its captures outlive the child safely.
  template <class Op>
  auto spawn(Op&& op) {
    check_open();
    if constexpr (detail::awaitable<Op>) {
      return adopt_new(new typename detail::child_for<std::remove_cvref_t<Op>>::type(std::forward<Op>(op)));
    } else {
      using Fn = std::decay_t<Op>;
      return adopt_new(new typename detail::child_made_by<Fn>::type(std::in_place, std::forward<Op>(op)));
    }
  }

  template <class T = void, class Fn>
  auto start(Fn&& fn);

  // Cancels every child, present and future (graceful; the first reason is kept).
  void cancel(cancel_reason reason = cancel_reason(cancel_kind::requested)) noexcept {
    cancel_children(cancel_request{cancel_level::graceful, std::move(reason)});
  }
  // The same, forced: running cleanup is cancelled too, and shields do not hold it back.
  void force_cancel(cancel_reason reason = cancel_reason(cancel_kind::requested)) noexcept {
    cancel_children(cancel_request{cancel_level::forced, std::move(reason)});
  }
  // Children that have not finished yet.
  std::size_t running() const noexcept { return running_; }
  bool cancel_requested() const noexcept { return req_.level != cancel_level::none; }

 protected:
  using notify_fn = void (*)(scope_core*) noexcept;
  // `idle`: called when the last running child finished; `failed`: the first error arrived
  // (the owner cancels what else it runs, e.g. the body). Neither is called during another
  // call into the scope; they wait until it returns.
  scope_core(notify_fn idle, notify_fn failed) noexcept : idle_(idle), failed_(failed) { node_.request = &req_; }
  // A call into the scope that may resume a task inline (a handle's waiter, start()'s caller)
  // learns here that the task destroyed the scope meanwhile (a task_group it owned and had
  // joined), and returns without touching it again.
  ~scope_core() {
    if (gone_) *gone_ = true;
  }

  void cancel_children(const cancel_request& r) noexcept;
  void record_error(std::exception_ptr e) noexcept;
  void enter() noexcept { ++busy_; }
  // Runs f, which may resume a task inline; true if that destroyed the scope (then *this is gone,
  // and so is every enclosing call's: each of them learns it too).
  template <class F>
  bool destroyed_by(F&& f) noexcept {
    bool gone = false;
    bool* const outer = std::exchange(gone_, &gone);
    f();
    if (gone) {
      if (outer) *outer = true;
      return true;
    }
    gone_ = outer;
    return false;
  }
  void leave() noexcept;  // may destroy *this (through the notifications)

  detail::scope_frame node_{detail::scope_node::kind::plain, nullptr};
  cancel_request req_{cancel_level::none, {}};
  std::exception_ptr error_;
  bool closed_ = false;
  // task_set: each child's end is handed to the owner (with a reference to the child) instead of
  // its exception becoming the scope's error; the owner delivers outcomes one by one.
  using ended_fn = void (*)(scope_core*, detail::child_base*) noexcept;
  ended_fn ended_ = nullptr;

 private:
  template <class, class>
  friend struct detail::child;
  template <class, class>
  friend struct detail::task_child;
  template <class, class>
  friend class detail::start_op;

  void check_open() const {
    if (closed_) throw std::logic_error("quell: spawn into a scope that has finished");
  }
  void adopt(detail::child_base* c) noexcept;
  template <class R>
  spawn_handle<R> adopt_new(detail::child_of<R>* c) noexcept {
    spawn_handle<R> h(c);
    adopt(c);
    return h;
  }
  void child_finished(detail::child_base* c) noexcept;

  detail::node_list children_;  // the running ones
  std::size_t running_ = 0;
  bool* gone_ = nullptr;  // see destroyed_by()

 protected:
  int busy_ = 0;

 private:
  bool failed_due_ = false;
  notify_fn idle_;
  notify_fn failed_;
};

namespace detail {

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

}  // namespace detail

template <class T, class Fn>
auto scope_core::start(Fn&& fn) {
  return detail::start_op<T, std::decay_t<Fn>>(*this, std::forward<Fn>(fn));
}

// The scope a with_scope body receives.
class scope : public scope_core {
 public:
  using scope_core::scope_core;
};

namespace detail {

template <class Body>
class scope_op : public composite {
  using BodyAw = awaiter_t<std::invoke_result_t<Body&, scope&>>;
  using R = typename driver<BodyAw>::result_type;

 public:
  template <class F>
  explicit scope_op(F&& body) : fn_(std::forward<F>(body)) {}
  scope_op(scope_op&& o) : composite(std::move(o)), fn_(std::move(o.fn_)) {}

  bool await_early_cancel() const noexcept { return true; }

  bool await_suspend(std::coroutine_handle<> h) noexcept {
    begin(h);
    members_.set_parent(outer_scope());
    scope_guard g(members_.node());
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
    void set_parent(scope_node* p) noexcept { node_.parent = p; }
    scope_node* node() noexcept { return &node_; }
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

}  // namespace detail

// clang-format off
template <class Body>
  requires std::is_invocable_v<std::decay_t<Body>&, scope&>
auto with_scope(Body&& body) {
  // clang-format on
  return detail::scope_op<std::decay_t<Body>>(std::forward<Body>(body));
}

}  // namespace quell
