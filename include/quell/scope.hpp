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

#include <type_traits>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/detail/scope_core.hpp"
#include "quell/task.hpp"

namespace quell {

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

// The scope a with_scope body receives: the children it spawns run concurrently and with_scope
// waits for all of them (see above). Its members are those of every set of children
// (detail/scope_core.hpp), listed here as the scope's API.
class scope : public detail::scope_core {
 public:
  // Starts `op` (an awaitable, or a callable returning one) as a child now; returns its handle.
  using scope_core::spawn;
  // Spawns fn(task_status<T>&) and resumes once it calls started(v), with v (Trio's start()).
  using scope_core::start;
  // Cancels every child, present and future, but not the body (graceful; the first reason is kept).
  using scope_core::cancel;
  // The same, forced: running cleanup is cancelled too, and shields do not hold it back.
  using scope_core::force_cancel;
  // Children that have not finished yet.
  using scope_core::running;
  // Whether cancel() or force_cancel() was called.
  using scope_core::cancel_requested;

 protected:
  using scope_core::scope_core;
};

// clang-format off
template <class Body>
  requires std::is_invocable_v<std::decay_t<Body>&, scope&>
auto with_scope(Body&& body) {
  // clang-format on
  return detail::scope_op<std::decay_t<Body>>(std::forward<Body>(body));
}

}  // namespace quell

#include "quell/detail/scope_impl.hpp"  // IWYU pragma: export
