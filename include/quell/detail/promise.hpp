// The machinery under quell::task (quell/task.hpp states the contract; read it first): the
// promise of every quell coroutine (its cancellation state, its cleanup, its result), the wrapper
// around each `co_await` inside a task (task_await), and the steps by which an owner that is not
// an awaiter drives a task's frame directly (a task awaiting a task, a scope's spawned task).
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
  bool at_yield = false;        // a generator's producer suspended at co_yield (generator.hpp)

  // Async cleanups registered with quell::defer (allocated by the first one).
  cleanup_stack* cleanup = nullptr;

  explicit promise_base(site s) noexcept { where = s; }
  // Inline, with the rare work out of line: every task frame is destroyed through here, and an
  // out-of-line call was 17% of W1's time (perf; bench/compare/WORKLOADS.md) for a task that never parked or deferred.
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
    context_node* node;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<>) const noexcept {}
    void await_resume() const noexcept { tls.context = node; }
  };
  initial_awaiter initial_suspend() noexcept { return {&static_cast<context_node&>(*this)}; }

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
    parent = tls.context;
    continuation = waiter;
    state = phase::running;
    if (tls.hooks) [[unlikely]]
      hooks_started(*this);
  }
  // start() for task_await_task: the continuation stays null until the task first suspends.
  QUELL_HOT void start_inline() noexcept {
    parent = tls.context;
    state = phase::running;
    if (tls.hooks) [[unlikely]]
      hooks_started(*this);
  }

  // The task suspended on its awaitee. Parked tasks are what a "stuck" report lists; a task that never
  // suspends (the common case for short helpers) costs the registry nothing.
  void park() noexcept {
    if (scheduler* s = this_thread().current) s->track(*this);
    if (tls.hooks) [[unlikely]]
      hook_task(hook_event::suspended, *this);
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
      const bool first = p->request.level == cancel_level::none;
      if (!merge_request(p->request, *req)) return;
      if (p->state != phase::running) return;
      if (scheduler* s = tls.current; s && first) s->note_request(p->requested_at);
      if (tls.hooks) [[unlikely]]
        hook_cancel_requested(*p);
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
      if (tls.hooks) hook_task(hook_event::cleanup_begin, *this);
      cleanup->run();
      return;
    }
    state = phase::done;
    if (tls.hooks) [[unlikely]]
      hook_task(hook_event::finished, *this);
    if (continuation) {
      // What runs now is the waiter's, which may free this frame: the context must not name it.
      tls.context = parent;
      detail::resume(continuation);
    }  // else the waiter looks at `state`
  }
  static void finish_after_cleanup(task_record* t) noexcept {
    auto* self = static_cast<promise_base*>(t);
    self->cleanup_failed = self->cleanup->error != nullptr;
    self->state = phase::done;
    if (tls.hooks) {
      hook_task(hook_event::cleanup_end, *self);
      hook_task(hook_event::finished, *self);
    }
    if (self->continuation) {
      tls.context = self->parent;  // as in finish()
      detail::resume(self->continuation);
    }
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
    if (scheduler* s = tls.current; s && requested_at != time_point::min()) s->note_confirmed(requested_at);
    finish();
  }
  // The same, from inside the task's own await_suspend: the waiter is told from the run queue,
  // so that this frame is never destroyed underneath a call that is still running in it (a
  // waiter that is still inside the call that started this task looks at `state` once that
  // call, and so this await_suspend, has returned).
  void end_cancelled_from_suspend() noexcept {
    ended_cancelled = true;
    if (scheduler* s = tls.current; s && requested_at != time_point::min()) s->note_confirmed(requested_at);
    if (cleanup && !cleanup->empty()) [[unlikely]] {
      if (tls.hooks) hook_task(hook_event::cleanup_begin, *this);
      cleanup->run_later();
      return;
    }
    state = phase::done;
    if (tls.hooks) hook_task(hook_event::finished, *this);
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
    tls.context = &p_;  // the body runs again: it is the current node
    return this->result();
  }

 private:
  static void on_done(void*, driver_base* d) noexcept {
    auto* self = static_cast<task_await*>(d);
    self->p_.unpark();
    if (self->cancelled) {
      self->p_.end_cancelled();
    } else {
      if (tls.hooks) [[unlikely]]
        hook_task(hook_event::resumed, self->p_);  // only after a suspension (await_resume is not)
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

}  // namespace quell
