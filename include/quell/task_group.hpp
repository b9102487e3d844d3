// task_group: a set of concurrent tasks that lives inside another object (a server's connection
// table, a cache's refreshers), for when the tasks outlive the code that spawns them.
//
//   class server {
//     quell::task_group connections_;
//     ...
//     void on_accept(tcp_stream s) { connections_.spawn(serve(std::move(s))); }
//     task<> stop() { co_await connections_.cancel_and_join(); }
//   };
//
// spawn(op) / start<T>(fn) / cancel(reason) / running() work as on a scope (quell/scope.hpp):
// children start at once, on the executor's thread; the first exception a child throws cancels
// the others (reason sibling_failed), so catch inside a child what should not take the group
// down. Children do not see the deadlines or cancellation of the code that spawned them: the
// group is their parent.
//
// Closing: `co_await g.join()` waits until no child is running, then rethrows the first error
// (later ones attached) and forgets it; `co_await g.cancel_and_join()` cancels every child first.
// A join whose waiter is cancelled cancels the children, waits for all of them, and then ends
// cancelled (or rethrows a child's error: errors are never dropped). After a join the group can
// be used again. One join at a time.
//
// A child's end resumes the task awaiting its handle at once, even inside the group's cancel();
// that task may join the group (nothing running: the join is immediate) and destroy it there,
// and the call that ended the child then returns without touching the group.
//
// Destroying a group while a child is still running, while another task waits in its join(), or
// while it holds an error no join has collected, is a bug: std::terminate, with a message naming
// where the group was created.
#pragma once

#include <coroutine>
#include <exception>
#include <stdexcept>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/detail/site.hpp"
#include "quell/scope.hpp"

namespace quell {

class task_group : public detail::scope_core {
 public:
  explicit task_group(detail::site where = detail::site::here()) noexcept;
  task_group(const task_group&) = delete;
  task_group& operator=(const task_group&) = delete;
  ~task_group();

  // The members every set of children has (detail/scope_core.hpp), as for quell::scope:
  // Starts `op` (an awaitable, or a callable returning one) as a child now; returns its handle.
  using scope_core::spawn;
  // Spawns fn(task_status<T>&) and resumes once it calls started(v), with v (Trio's start()).
  using scope_core::start;
  // Cancels every child, present and future (graceful; the first reason is kept).
  using scope_core::cancel;
  // The same, forced: running cleanup is cancelled too, and shields do not hold it back.
  using scope_core::force_cancel;
  // Children that have not finished yet.
  using scope_core::running;
  // Whether cancel() or force_cancel() was called.
  using scope_core::cancel_requested;

  class join_awaiter {
   public:
    join_awaiter(task_group& g, bool cancel_first, cancel_reason reason) noexcept
        : g_(g), cancel_first_(cancel_first), reason_(std::move(reason)) {}

    bool await_ready() {
      // Cancelling may end the last child and resume its handle's waiter, which may destroy the
      // group (it owns it, and joins it at once): then there is nothing left to join.
      if (cancel_first_ && g_.destroyed_by([&] { g_.cancel(reason_); })) {
        gone_ = true;
        return true;
      }
      return g_.running() == 0;
    }
    void await_suspend(std::coroutine_handle<> h) {
      if (g_.joiner_) throw std::logic_error("quell: task_group joined by two tasks at once");
      g_.joiner_ = h;
    }
    bool await_cancel(std::coroutine_handle<>, const cancel_request& r) noexcept {
      cancelled_ = true;
      g_.cancel_children(r);  // the group ends with its waiter; the join waits for that
      return false;
    }
    bool await_must_resume() const noexcept { return !cancelled_ || g_.error_; }
    void await_resume() {
      if (gone_) return;  // destroyed with no error (that would have terminated)
      if (std::exception_ptr e = std::exchange(g_.error_, nullptr)) std::rethrow_exception(e);
    }

   private:
    task_group& g_;
    bool cancel_first_;
    bool cancelled_ = false;
    bool gone_ = false;
    cancel_reason reason_;
  };

  join_awaiter join() noexcept { return join_awaiter(*this, false, cancel_reason()); }
  join_awaiter cancel_and_join(cancel_reason reason = cancel_reason(cancel_kind::requested)) noexcept {
    return join_awaiter(*this, true, std::move(reason));
  }

 private:
  static void on_idle(scope_core* s) noexcept;
  static void on_failed(scope_core* s) noexcept;

  detail::site where_;
  std::coroutine_handle<> joiner_;
};

}  // namespace quell
