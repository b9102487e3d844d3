// task<T>: quell's coroutine type.
//
// A task is lazy: calling the coroutine function only creates the frame; nothing runs until the
// task is awaited (by another task, a combinator, or an executor). It is move-only and awaited at
// most once, by value: `co_await std::move(t)` or `co_await make_task()`.
//
// States: not started -> running -> finished (with a value, an exception, or cancelled).
//   - Destroying a task that was never started runs nothing (not even its cleanup hooks).
//   - Destroying a running task is a bug and ends the process with std::terminate and a message
//     naming the coroutine that was dropped: every started task must be owned until it finishes.
//   - A finished task's frame (and so its locals) is destroyed by whoever owns the task; a task
//     that ended cancelled is destroyed as soon as its waiter learns so, innermost first.
//
// Who resumes whom: the awaiter starts the task by resuming it. When the task finishes, it resumes
// its waiter. If the task ends cancelled, its waiter is told so and its own body is not resumed.
//
// Cancellation: a request reaching a running task is stored in it (sticky) and forwarded to the
// awaitable it is suspended on. Every `co_await` inside the task goes through quell's awaiter state
// machine (quell/cancellation.hpp), so every suspension point is a cancellation point; an
// operation that completed anyway delivers its result and the task is cancelled at its next
// `co_await` instead. A request stronger than the last one (forced after graceful) is forwarded
// again; one that is not is ignored.
//
// Stack use: resumptions are plain calls whose nesting is bounded (detail/scheduler.hpp), so an
// await chain of any depth, or a loop of any length over tasks that finish at once, runs in
// bounded stack with every compiler and optimisation level.
#pragma once

#include <coroutine>
#include <exception>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/detail/cleanup.hpp"
#include "quell/detail/driver.hpp"
#include "quell/detail/frame_pool.hpp"
#include "quell/detail/outcome.hpp"
#include "quell/detail/scheduler.hpp"
#include "quell/detail/site.hpp"
#include "quell/errors.hpp"

namespace quell {

template <class T = void>
class task;

namespace detail {

template <class U>
class task_await_task;

template <class T>
struct is_task : std::false_type {};
template <class T>
struct is_task<task<T>> : std::true_type {};

std::string describe_site(const site& s);

struct promise_base : task_record {
  enum class phase : unsigned char { not_started, running, done };

  // Who is told when the task ends. Null while the waiter is a task's co_await that is still
  // inside the call that started this task (task_await_task): it looks at `state` itself when
  // that call returns, so nothing is resumed.
  std::coroutine_handle<> continuation;
  driver_base* awaitee = nullptr;        // what the task is suspended on, if anything
  promise_base* awaited_task = nullptr;  // or the task it awaits directly (task_await_task)
  phase state = phase::not_started;
  bool ended_cancelled = false;
  bool cleanup_failed = false;  // set when the cleanups have finished and one of them threw

  // Async cleanups registered with quell::defer (allocated by the first one).
  cleanup_stack* cleanup = nullptr;

  explicit promise_base(site s) noexcept { where = s; }
  // Inline, with the rare work out of line: every task frame is destroyed through here, and an
  // out-of-line call was 17% of W1's time (perf) for a task that never parked or deferred.
  ~promise_base() {
    if (linked() || cleanup) [[unlikely]]
      release_rare();
  }
  QUELL_COLD void release_rare() noexcept;

  QUELL_HOT static void* operator new(std::size_t n) { return frame_alloc(n); }
  QUELL_HOT static void operator delete(void* p, std::size_t n) noexcept { frame_free(p, n); }

  // The body's first resumption makes this task the current node (this_task::*).
  // Holds the node already converted (from a reference, so without a null test on every start).
  struct initial_awaiter {
    scope_node* node;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<>) const noexcept {}
    void await_resume() const noexcept { tls.scope = node; }
  };
  initial_awaiter initial_suspend() noexcept { return {&static_cast<scope_node&>(*this)}; }

  struct final_awaiter {
    bool await_ready() const noexcept { return false; }
    template <class P>
    void await_suspend(std::coroutine_handle<P> h) noexcept {
      h.promise().finish();  // may destroy this frame; nothing touches it afterwards
    }
    void await_resume() const noexcept {}
  };
  final_awaiter final_suspend() const noexcept { return {}; }

  const cancel_request* pending() const noexcept { return request.level != cancel_level::none ? &request : nullptr; }

  QUELL_HOT void start(std::coroutine_handle<> waiter) noexcept {
    parent = tls.scope;
    continuation = waiter;
    state = phase::running;
  }
  // start() for task_await_task: the continuation stays null until the task first suspends.
  QUELL_HOT void start_inline() noexcept {
    parent = tls.scope;
    state = phase::running;
  }

  // The task suspended on its awaitee. Parked tasks are what a "stuck" report lists; a task that never
  // suspends (the common case for short helpers) costs the registry nothing.
  void park() noexcept {
    if (scheduler* s = this_thread().current) s->track(*this);
  }
  void unpark() noexcept { awaitee = nullptr; }
  // Suspended on an awaitable or a child task (what a stuck report lists).
  bool waiting() const noexcept { return state == phase::running && (awaitee || awaited_task); }

  // Stores the request (first reason wins, strongest level) and forwards it to the awaitable this
  // task is suspended on. Through chains of tasks it walks down in a loop, so cancelling an await
  // chain of any depth uses bounded stack; any other awaitable gets it through its driver.
  void request_cancel(const cancel_request& r) noexcept {
    promise_base* p = this;
    const cancel_request* req = &r;
    for (;;) {
      if (!merge_request(p->request, *req)) return;
      if (p->state != phase::running) return;
      if (promise_base* child = p->awaited_task) {
        req = &p->request;
        p = child;
        continue;
      }
      if (!p->awaitee) {
        if (p->cleanup) p->cleanup->request(p->request);  // its cleanups may be running
        return;
      }
      driver_base* d = p->awaitee;
      task_record* child = d->pass_through(p->request);
      if (!child) {
        d->cancel(p->request);
        return;
      }
      req = &p->request;
      p = static_cast<promise_base*>(child);
    }
  }

  // The body is over (returned, threw, or ended cancelled): the cleanups run first, then the
  // waiter is told.
  QUELL_HOT void finish() noexcept {
    if (cleanup && !cleanup->empty()) [[unlikely]] {
      cleanup->run();
      return;
    }
    state = phase::done;
    if (continuation) detail::resume(continuation);  // else the waiter looks at `state`
  }
  static void finish_after_cleanup(task_record* t) noexcept {
    auto* self = static_cast<promise_base*>(t);
    self->cleanup_failed = self->cleanup->error != nullptr;
    self->state = phase::done;
    if (self->continuation) detail::resume(self->continuation);
  }
  // A cleanup failed: the primary error (if any) stays, with the cleanup's attached; otherwise
  // (a value, or ended cancelled) the cleanup's error is the outcome.
  template <class T>
  void merge_cleanup_error_into(outcome<T>& result) noexcept {
    cleanup_failed = false;
    ended_cancelled = false;
    if (result.has_error()) {
      attach_error(result.error(), cleanup->error);
    } else {
      result.set_error(cleanup->error);
    }
  }
  void add_cleanup(cleanup_base* c) noexcept {
    if (!cleanup) cleanup = new cleanup_stack(*this, &finish_after_cleanup);
    cleanup->push(c);
  }

  // The operation the body awaited ended cancelled: the body is not resumed; the task ends
  // cancelled and its waiter is told.
  void end_cancelled() noexcept {
    ended_cancelled = true;
    finish();
  }
  // The same, from inside the task's own await_suspend: the waiter is told from the run queue,
  // so that this frame is never destroyed underneath a call that is still running in it (a
  // waiter that is still inside the call that started this task looks at `state` once that
  // call, and so this await_suspend, has returned).
  void end_cancelled_from_suspend() noexcept {
    ended_cancelled = true;
    if (cleanup && !cleanup->empty()) [[unlikely]] {
      cleanup->run_later();
      return;
    }
    state = phase::done;
    if (continuation) detail::post(continuation);
  }

  template <class A>
  auto await_transform(A&& a);
};

// The wrapper around every `co_await` in a task: connects the task's cancellation state to the
// awaitable through the driver.
template <class Aw>
class task_await : public driver<Aw> {
 public:
  template <class X>
  task_await(promise_base& p, X&& x) : driver<Aw>(std::forward<X>(x)), p_(p) {}
  task_await(task_await&&) = delete;

  QUELL_HOT bool await_ready() {
    if (p_.request.level != cancel_level::none) [[unlikely]]
      return false;  // a suspension point: cancel here
    if (this->awaiter().await_ready()) return true;
    ready_checked_ = true;
    return false;
  }

  QUELL_HOT bool await_suspend(std::coroutine_handle<> h) noexcept {
    body_ = h;
    // Set before starting, so that a request arriving while the awaitable is being started
    // reaches it (its driver defers it, or forwards it at once to a task).
    p_.awaitee = this;
    if (!this->start(this, &on_done, p_.pending(), ready_checked_)) [[likely]] {
      p_.park();
      return true;
    }
    p_.awaitee = nullptr;
    if (this->cancelled) [[unlikely]] {
      p_.end_cancelled_from_suspend();
      return true;
    }
    return false;
  }

  decltype(auto) await_resume() {
    tls.scope = &p_;  // the body runs again: it is the current node
    return this->result();
  }

 private:
  static void on_done(void*, driver_base* d) noexcept {
    auto* self = static_cast<task_await*>(d);
    self->p_.unpark();
    if (self->cancelled) {
      self->p_.end_cancelled();
    } else {
      detail::resume(self->body_);
    }
  }

  promise_base& p_;
  std::coroutine_handle<> body_;
  bool ready_checked_ = false;
};

// Inside a task, the operand of `co_await` lives until the end of the full-expression, which spans
// the whole suspension; so when the operand is itself the awaiter (a combinator, a leaf), the
// wrapper refers to it instead of moving it. Awaiters made by operator co_await are owned.
template <class A>
using operand_awaiter_t =
    std::conditional_t<std::is_reference_v<decltype(get_awaiter(std::declval<A>()))>,
                       std::remove_reference_t<decltype(get_awaiter(std::declval<A>()))>&, awaiter_t<A>>;

template <class A>
auto promise_base::await_transform(A&& a) {
  static_assert(!(is_task<std::remove_cvref_t<A>>::value && std::is_lvalue_reference_v<A>),
                "a quell::task is awaited by value: write co_await std::move(t)");
  if constexpr (is_task<std::remove_cvref_t<A>>::value) {
    return task_await_task<typename std::remove_cvref_t<A>::value_type>(*this, std::move(a));
  } else {
    return task_await<operand_awaiter_t<A>>(*this, std::forward<A>(a));
  }
}

template <class T>
struct promise final : promise_base {
  explicit promise(site s = site::here()) noexcept : promise_base(s) {}

  task<T> get_return_object() noexcept;
  void unhandled_exception() noexcept { result.set_error(std::current_exception()); }

  // clang-format off
  template <class U = T>
    requires(!std::is_void_v<T> && std::is_convertible_v<U &&, T>)
  void return_value(U&& v) {
    // clang-format on
    if constexpr (std::is_reference_v<T>) {
      result.set_value(v);
    } else {
      result.set_value(std::forward<U>(v));
    }
  }

  outcome<T> result;

  void merge_cleanup_error() noexcept { merge_cleanup_error_into(result); }
};

template <>
struct promise<void> final : promise_base {
  explicit promise(site s = site::here()) noexcept : promise_base(s) {}
  task<void> get_return_object() noexcept;
  void unhandled_exception() noexcept { result.set_error(std::current_exception()); }
  void return_void() noexcept { result.set_value(); }

  outcome<void> result;

  void merge_cleanup_error() noexcept { merge_cleanup_error_into(result); }
};

[[noreturn]] void dropped_running_task(const site& where) noexcept;

template <class P>
QUELL_HOT void release_frame(std::coroutine_handle<P> h) noexcept {
  if (!h) return;
  if (h.promise().state == promise_base::phase::running) [[unlikely]]
    dropped_running_task(h.promise().where);
  h.destroy();
}

// Two owners drive a quell task directly instead of through a driver around task::awaiter: a
// task's `co_await` of a task (task_await_task, below) and a scope's spawned task (scope.hpp,
// task_child). Both keep the driver's rules with these two steps.

// Starts the task by a bounded resume with a null continuation: if it finishes before the call
// returns (returns true), its finish() resumed nobody; otherwise the owner sets the continuation.
template <class U>
QUELL_HOT bool run_inline(std::coroutine_handle<promise<U>> h) noexcept {
  h.promise().start_inline();
  detail::resume(h);
  return h.promise().state == promise_base::phase::done;
}

// task::awaiter::await_must_resume for a finished task: false if it ended cancelled, in which case
// its frame is freed at once (a cancelled chain is freed innermost first) and `h` becomes null;
// a failed cleanup's error becomes the task's result.
template <class U>
QUELL_COLD bool settle_unusual(std::coroutine_handle<promise<U>>& h) noexcept {
  if (h.promise().cleanup_failed) {
    h.promise().merge_cleanup_error();  // await_resume then rethrows it like any other error
    return true;
  }
  release_frame(std::exchange(h, {}));
  return false;
}
template <class U>
QUELL_HOT bool settle_finished(std::coroutine_handle<promise<U>>& h) noexcept {
  const promise<U>& c = h.promise();
  if (!c.ended_cancelled && !c.cleanup_failed) [[likely]]
    return true;
  return settle_unusual(h);
}

// The frame of a task, taken from it by an owner that drives it directly.
template <class T>
struct task_access {
  static std::coroutine_handle<promise<T>> take(task<T>&& t) {
    if (!t.h_) throw std::logic_error("quell: co_await on an empty task (moved-from or already awaited)");
    return std::exchange(t.h_, {});
  }
};

}  // namespace detail

template <class T>
class [[nodiscard]] task {
 public:
  using promise_type = detail::promise<T>;
  using value_type = T;

  task() noexcept = default;
  task(task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  task& operator=(task&& o) noexcept {
    if (this != &o) {
      detail::release_frame(h_);
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  ~task() { detail::release_frame(h_); }

  // False for a default-constructed, moved-from or already awaited task.
  bool valid() const noexcept { return static_cast<bool>(h_); }

  // The awaiter owns the frame from here on (the task becomes empty).
  class awaiter {
   public:
    explicit awaiter(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
    awaiter(awaiter&& o) noexcept : h_(std::exchange(o.h_, {})) {}
    awaiter(const awaiter&) = delete;
    ~awaiter() { detail::release_frame(h_); }

    bool await_ready() const noexcept { return false; }
    QUELL_HOT void await_suspend(std::coroutine_handle<> waiter) noexcept {
      h_.promise().start(waiter);
      detail::resume(h_);
    }
    bool await_early_cancel() const noexcept { return true; }  // never started: nothing runs
    static constexpr bool reentrant_cancel = true;             // see driver::cancel_thunk
    bool await_cancel(std::coroutine_handle<>, const cancel_request& r) noexcept {
      h_.promise().request_cancel(r);
      return false;  // the task reports its end through its waiter, possibly during this call
    }
    // A task that ended cancelled is freed here: nothing will be taken from it, and a cancelled
    // chain then unwinds innermost first, one level at a time, instead of recursively from the top.
    bool await_must_resume() const noexcept { return detail::settle_finished(h_); }
    detail::task_record* child_task() noexcept { return &h_.promise(); }
    T await_resume() { return h_.promise().result.take(); }

   private:
    mutable std::coroutine_handle<promise_type> h_;
  };

  awaiter operator co_await() && {
    if (!h_) throw std::logic_error("quell: co_await on an empty task (moved-from or already awaited)");
    return awaiter(std::exchange(h_, {}));
  }

 private:
  friend promise_type;
  friend struct detail::task_access<T>;
  explicit task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  std::coroutine_handle<promise_type> h_;
};

namespace detail {

// `co_await` of a task inside a task, the most common await there is. It keeps the rules of
// task_await<task<U>::awaiter> (the generic driver around the task's awaiter) and is cheaper
// because the child is known to be a quell task:
//   - a request pending in the parent skips the child (the task's await_early_cancel: never
//     started, nothing of it runs) and ends the parent cancelled;
//   - a request reaching the parent while it waits is forwarded to the child through
//     `awaited_task` (promise_base::request_cancel), also while the child is still running
//     inside await_suspend, so it takes effect at the child's next suspension point;
//   - the child is started by a bounded detail::resume; if it finishes before that returns (the
//     usual case: a helper that suspends on nothing), its continuation is still null, so its
//     finish() resumes nobody and the parent's body goes on without suspending: no driver, no
//     second resume, no park;
//   - if it suspends, its continuation becomes this object (a resume_target), the parent is
//     parked for stuck reports, and on_resume later settles it like driver::on_resume would;
//   - settling is task::awaiter::await_must_resume: a failed cleanup's error is the result; a
//     child that ended cancelled is freed at once and the parent ends cancelled.
// One difference in timing only: a child that ends cancelled inside the call that started it
// (from its own await_suspend) is freed when that call returns, and the parent's waiter is told
// from the run queue; through the driver, the child's waiter was told from the run queue and the
// child freed then. Either way the chain unwinds innermost first, and nothing of the parent runs.
template <class U>
class task_await_task : resume_target {
  using phase = promise_base::phase;

 public:
  // The resume_target is armed only if the child suspends (most never do).
  task_await_task(promise_base& p, task<U>&& t) : p_(p), child_(task_access<U>::take(std::move(t))) {}
  task_await_task(task_await_task&&) = delete;
  ~task_await_task() { release_frame(child_); }

  bool await_ready() const noexcept { return false; }  // a task only runs from await_suspend

  QUELL_HOT bool await_suspend(std::coroutine_handle<> body) noexcept {
    if (p_.request.level != cancel_level::none) [[unlikely]] {
      p_.end_cancelled_from_suspend();  // the child never starts
      return true;
    }
    p_.awaited_task = &child_.promise();
    if (run_inline(child_)) [[likely]] {
      p_.awaited_task = nullptr;
      if (settle_finished(child_)) [[likely]]
        return false;  // resume the body now, with the result
      p_.end_cancelled_from_suspend();
      return true;
    }
    body_ = body;
    arm(&on_resume);
    child_.promise().continuation = handle();
    p_.park();
    return true;
  }

  U await_resume() {
    tls.scope = &p_;  // the body runs again: it is the current node
    return child_.promise().result.take();
  }

 private:
  // The child finished after suspending.
  static void on_resume(void* a) noexcept {
    auto* self = static_cast<task_await_task*>(static_cast<resume_target*>(a));
    self->p_.awaited_task = nullptr;
    self->p_.unpark();
    if (settle_finished(self->child_)) {
      detail::resume(self->body_);
    } else {
      self->p_.end_cancelled();
    }
  }

  promise_base& p_;
  std::coroutine_handle<promise<U>> child_;
  std::coroutine_handle<> body_;  // set when the child suspends
};

template <class T>
task<T> promise<T>::get_return_object() noexcept {
  return task<T>(std::coroutine_handle<promise<T>>::from_promise(*this));
}
inline task<void> promise<void>::get_return_object() noexcept {
  return task<void>(std::coroutine_handle<promise<void>>::from_promise(*this));
}
}  // namespace detail

}  // namespace quell
