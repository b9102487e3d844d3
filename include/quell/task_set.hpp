// task_set<T>: tasks added at any time, their results taken in the order they finish.
//
//   quell::task_set<std::string> set;
//   for (auto& url : urls) set.spawn(fetch(url));
//   set.close();                                        // nothing more will be added
//   while (auto page = co_await set.next()) use(*page); // first finished, first out
//
//   co_await quell::with_task_set<int>([&](quell::task_set<int>& s) -> quell::task<> { ... });
//
// spawn(op) starts op (any awaitable yielding T, or a callable returning one) at once as a child
// of the set, like task_group::spawn (quell/task_group.hpp: the same child machinery; children do
// not see the deadlines or cancellation of the code that spawned them).
//
// next() waits for the next child to finish and yields its value (std::optional<T>; a bool for
// T = void), in completion order; a child's exception is thrown by the next() that takes it, and
// cancels nothing: the consumer decides. A child that ended cancelled yields nothing and is
// skipped. next() yields std::nullopt (false) once the set is closed, nothing runs and every result
// was taken; on a set not closed, next() with nothing running waits for a spawn. One next() at a
// time.
//
// Cancellation:
//   - Cancelling a task waiting in next() stops its wait and cancels nothing in the set. A result
//     handed to that next() in the same turn, before it resumed, goes back to the front of the
//     set's results and the next() ends cancelled (the next next() takes it), as a channel
//     receive does.
//   - `co_await s.cancel_and_join(reason)` cancels every child, waits until each has finished
//     (hooks and async cleanups included), closes the set and drops the results no next() took;
//     an exception among them is thrown (later ones attached), since an error is never dropped.
//     Cancelling the task that waits in it lets the children's cancellation finish first.
//
// Closing: like a task_group, a task_set must be finished with before it is destroyed: by
// cancel_and_join(), or by taking every result (next() yielded nullopt after close()). Destroying
// it while a child runs, while a task waits in next() or cancel_and_join(), or while it holds an
// exception nobody took, is a bug: std::terminate with a message naming where the set was created.
// Values nobody took are destroyed with it, as a channel's are.
// with_task_set(body) runs body(set) and then closes the set for you with cancel_and_join(),
// however the body ends (returned, threw, cancelled), and yields the body's value.
#pragma once

#include <coroutine>
#include <cstddef>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "quell/defer.hpp"
#include "quell/detail/site.hpp"
#include "quell/detail/wait_queue.hpp"
#include "quell/errors.hpp"
#include "quell/scope.hpp"
#include "quell/task.hpp"

namespace quell {

template <class T = void>
class task_set : private detail::scope_core {  // its spawn only: no handles, no start()
  using child_t = detail::child_of<T>;

 public:
  using scope_core::cancel;   // cancels every member (graceful); next() still yields what ends
  using scope_core::running;  // members that have not finished yet

  using value_type = std::conditional_t<std::is_void_v<T>, bool, std::optional<T>>;

  explicit task_set(detail::site where = detail::site::here()) noexcept
      : scope_core(&on_idle, &on_failed), where_(where) {
    ended_ = &on_ended;
  }
  task_set(const task_set&) = delete;
  task_set& operator=(const task_set&) = delete;
  ~task_set() {
    if (running() != 0 || next_ || joiner_ || has_undelivered_error()) {
      detail::fatal("quell: a task_set created at " + std::string(where_.file) + ":" + std::to_string(where_.line) +
                    " was destroyed " +
                    (running() != 0     ? std::to_string(running()) + " task(s) still running"
                     : next_ || joiner_ ? std::string("while a task waited on it")
                                        : std::string("holding an exception no next() took")) +
                    "; close it first with co_await s.cancel_and_join(), or take every result");
    }
    for (child_t* c : done_) c->release();
  }

  // Starts `op` as a member of the set (see above). Throws std::logic_error once the set is closed.
  template <class Op>
  void spawn(Op&& op) {
    if (closed_) throw std::logic_error("quell: spawn into a task_set that was closed");
    auto h = scope_core::spawn(std::forward<Op>(op));
    static_assert(std::is_same_v<decltype(h), spawn_handle<T>>, "quell: a task_set<T>'s members must yield T");
  }
  // Nothing more will be spawned: next() yields nullopt once every result was taken.
  void close() noexcept {
    closed_ = true;
    wake_next();
  }
  bool closed() const noexcept { return closed_; }
  // Results waiting for next().
  std::size_t ready() const noexcept { return done_.size(); }

  class next_awaiter : public detail::queued_waiter {
   public:
    explicit next_awaiter(task_set& s) noexcept : s_(s) {}
    next_awaiter(next_awaiter&& o) noexcept  // only before it waits
        : queued_waiter(std::move(o)), s_(o.s_), taken_(std::exchange(o.taken_, nullptr)) {}
    bool await_ready() {
      if (s_.next_) throw std::logic_error("quell: a task_set's next() awaited by two tasks at once");
      if (!s_.done_.empty()) {
        taken_ = s_.take_front();
      } else if (!s_.can_still_yield()) {
        // closed and drained: end of the set
      } else {
        return false;
      }
      mark_granted_without_waiting();
      return true;
    }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      s_.next_ = this;
      wait_in(s_.waiting_, h);
    }
    bool await_cancel(std::coroutine_handle<>) noexcept {
      if (withdraw()) {
        s_.next_ = nullptr;
        return true;
      }
      if (taken_) s_.done_.push_front(std::exchange(taken_, nullptr));  // first in line again
      gave_back();
      return false;
    }
    value_type await_resume() {
      std::unique_ptr<child_t, releaser> c(std::exchange(taken_, nullptr));
      if (!c) {
        if constexpr (std::is_void_v<T>) {
          return false;
        } else {
          return std::nullopt;
        }
      }
      if constexpr (std::is_void_v<T>) {
        c->take();  // rethrows its exception
        return true;
      } else {
        return value_type(c->take());
      }
    }
    ~next_awaiter() {
      if (taken_) s_.done_.push_front(taken_);  // never resumed (its task was destroyed): keep it
    }

   private:
    friend class task_set;
    struct releaser {
      void operator()(child_t* c) const noexcept { c->release(); }
    };
    task_set& s_;
    child_t* taken_ = nullptr;
  };

  next_awaiter next() noexcept { return next_awaiter(*this); }

  class join_awaiter {
   public:
    join_awaiter(task_set& s, cancel_reason reason) noexcept : s_(s), reason_(std::move(reason)) {}
    bool await_ready() {
      s_.closed_ = true;
      s_.cancel(reason_);
      return s_.running() == 0;
    }
    void await_suspend(std::coroutine_handle<> h) {
      if (s_.joiner_) throw std::logic_error("quell: a task_set's cancel_and_join() awaited by two tasks at once");
      s_.joiner_ = h;
    }
    bool await_cancel(std::coroutine_handle<>, const cancel_request& r) noexcept {
      cancelled_ = true;
      s_.cancel_children(r);  // a forced request reaches the children's cleanups
      return false;
    }
    bool await_must_resume() const noexcept { return !cancelled_ || s_.has_undelivered_error(); }
    void await_resume() { s_.drop_results(); }

   private:
    task_set& s_;
    cancel_reason reason_;
    bool cancelled_ = false;
  };

  join_awaiter cancel_and_join(cancel_reason reason = cancel_reason(cancel_kind::requested)) noexcept {
    return join_awaiter(*this, std::move(reason));
  }

 private:
  bool can_still_yield() const noexcept { return !closed_ || running() != 0; }
  bool has_undelivered_error() const noexcept {
    for (child_t* c : done_) {
      if (c->has_error()) return true;
    }
    return false;
  }
  child_t* take_front() noexcept {
    child_t* c = done_.front();
    done_.pop_front();
    return c;
  }
  // A child finished (the scope holds a reference to it for us): queue its result, or skip it.
  static void on_ended(scope_core* s, detail::child_base* c) noexcept {
    auto* self = static_cast<task_set*>(s);
    auto* child = static_cast<child_t*>(c);
    if (child->ended_cancelled()) {
      child->release();
    } else {
      self->done_.push_back(child);
    }
    self->wake_next();
  }
  // Hands the waiting next() its result, or the end of the set.
  void wake_next() noexcept {
    if (!next_) return;
    if (!done_.empty()) {
      next_->taken_ = take_front();
    } else if (can_still_yield()) {
      return;
    }
    std::exchange(next_, nullptr)->grant();  // resumes it from the run queue, not from here
  }
  // Thrown by cancel_and_join: the first exception no next() took (later ones attached).
  void drop_results() {
    std::exception_ptr first;
    while (!done_.empty()) {
      std::unique_ptr<child_t, typename next_awaiter::releaser> c(take_front());
      if (!c->has_error()) continue;
      if (!first) {
        first = c->error();
      } else {
        attach_error(first, c->error());
      }
    }
    if (first) std::rethrow_exception(first);
  }
  static void on_idle(scope_core* s) noexcept {
    auto* self = static_cast<task_set*>(s);
    self->wake_next();
    // Last: the joiner may destroy the set.
    if (std::coroutine_handle<> j = std::exchange(self->joiner_, {})) detail::resume(j);
  }
  static void on_failed(scope_core*) noexcept {}  // a child's exception is next()'s to deliver

  detail::site where_;
  std::deque<child_t*> done_;  // finished, not taken, in the order they finished
  detail::node_list waiting_;  // the one next() waiting
  next_awaiter* next_ = nullptr;
  std::coroutine_handle<> joiner_;
};

// Runs body(set) and closes the set with cancel_and_join() however the body ends; yields the
// body's value.
template <class T = void, class Body>
auto with_task_set(Body body) -> task<detail::await_result_t<std::invoke_result_t<Body&, task_set<T>&>>> {
  // The set belongs to the cleanup, which outlives every exit of the body (a local would be
  // destroyed before a cleanup runs on a return, quell/defer.hpp).
  auto owned = std::make_unique<task_set<T>>();
  task_set<T>& set = *owned;
  auto close = [s = std::move(owned)]() -> task<> { co_await s->cancel_and_join(); };
  co_await defer(std::move(close));
  co_return co_await body(set);
}

}  // namespace quell
