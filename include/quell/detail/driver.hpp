// The awaiter state machine: the one piece of code that drives any awaitable through the leaf
// protocol (quell/cancellation.hpp) on behalf of whoever waits for it: a task's `co_await`, a
// combinator's branch, or the executor's root. Every leaf and every combinator goes through it.
//
// States: idle -> running -> (cancelling) -> done. The awaitable is handed this driver's
// resume_target as "the waiter's handle"; when the awaitable resumes it, the driver settles the
// outcome (cancelled or not, via await_must_resume) and tells its owner through `on_done`.
//
// Re-entrancy rule: while the driver is inside a call into the awaitable (await_suspend or
// await_cancel), a resumption is only recorded, and the call's caller learns about it from the
// return value (start) or through on_done once the call returned (cancel). So an awaitable may
// resume its waiter from inside either call without the waiter running on top of it.
#pragma once

#include <concepts>
#include <coroutine>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/detail/config.hpp"
#include "quell/detail/outcome.hpp"
#include "quell/detail/resume_target.hpp"
#include "quell/detail/scheduler.hpp"
#include "quell/detail/wait_note.hpp"

namespace quell::detail {

template <class A>
decltype(auto) get_awaiter(A&& a) {
  if constexpr (requires { std::forward<A>(a).operator co_await(); }) {
    return std::forward<A>(a).operator co_await();
  } else if constexpr (requires { operator co_await(std::forward<A>(a)); }) {
    return operator co_await(std::forward<A>(a));
  } else {
    return std::forward<A>(a);
  }
}

// get_awaiter, bound to the storage type (a reference member needs an lvalue).
template <class Aw, class A>
decltype(auto) get_awaiter_as(A&& a) {
  if constexpr (std::is_lvalue_reference_v<Aw>) {
    auto&& r = get_awaiter(std::forward<A>(a));
    return static_cast<Aw>(r);
  } else {
    return get_awaiter(std::forward<A>(a));
  }
}

// What the driver stores: awaiters given as prvalues or rvalues are owned; an lvalue awaiter
// (an awaitable that is its own awaiter, named by the caller) is referred to.
template <class A>
using awaiter_t = std::conditional_t<std::is_lvalue_reference_v<decltype(get_awaiter(std::declval<A>()))>,
                                     decltype(get_awaiter(std::declval<A>())),
                                     std::remove_cvref_t<decltype(get_awaiter(std::declval<A>()))>>;

template <class A>
using await_result_t = decltype(std::declval<std::remove_reference_t<awaiter_t<A>>&>().await_resume());

template <class A>
concept awaitable = requires {
  typename await_result_t<A>;
};

struct driver_base;
// A combinator's branch: what it waits on across cores (the task tree follows on() through it).
inline void collect_links(const driver_base& d, wait_note& out);

template <class A>
void describe_awaiter(const A& a, wait_note& out) {
  if constexpr (requires { a.describe_wait(out); }) {
    a.describe_wait(out);
  } else {
    out.what = type_name<A>();
  }
}

struct driver_base : resume_target {
  using done_fn = void (*)(void* owner, driver_base* self) noexcept;
  enum class phase : unsigned char { idle, running, cancelling, done };

  phase state = phase::idle;
  bool busy = false;  // inside await_suspend / await_cancel
  bool resumed_while_busy = false;
  bool cancelled = false;                  // the outcome, once done
  cancel_level sent = cancel_level::none;  // strongest request delivered to the awaitable
  done_fn on_done = nullptr;
  void* owner = nullptr;

  // What only unusual paths need, allocated only then: an exception thrown by await_ready /
  // await_suspend, and a request that arrived while the driver was inside a call into the
  // awaitable (delivered when that call has returned). Out of line, because a driver sits in
  // every suspended co_await and every combinator branch: one pointer is smaller and cheaper to
  // construct and destroy than an exception_ptr and a request (measured by W2 and W5 in
  // bench/compare/WORKLOADS.md).
  struct rare_state {
    std::exception_ptr error;
    cancel_request deferred{cancel_level::none, {}};
  };
  std::unique_ptr<rare_state> rare;
  rare_state& rare_slot() {
    if (!rare) rare = std::make_unique<rare_state>();
    return *rare;
  }
  bool has_deferred() const noexcept { return rare && rare->deferred.level != cancel_level::none; }
  void defer(const cancel_request& r) {
    rare_state& s = rare_slot();
    if (s.deferred.level == cancel_level::none) {
      s.deferred = r;
    } else if (r.level > s.deferred.level) {
      s.deferred.level = r.level;
    }
  }

  using cancel_fn = void (*)(driver_base*, const cancel_request&) noexcept;
  using start_fn = bool (*)(driver_base*, void*, done_fn, const cancel_request*) noexcept;
  using describe_fn = void (*)(const driver_base*, wait_note&);
  // One pointer to a per-type table rather than one per entry: a driver sits in every suspended
  // task's frame and in every spawned child (bytes per task: W3 in bench/compare/WORKLOADS.md).
  struct ops_table {
    cancel_fn cancel;
    start_fn start;
    describe_fn describe;
  };
  const ops_table* ops;

  driver_base(resume_target::fn on_resume, const ops_table* t) noexcept : resume_target(on_resume), ops(t) {}

  // Set when the awaitable is a quell task: lets a cancel request walk down a chain of tasks in a
  // loop instead of one nested call per level (promise_base::request_cancel).
  task_record* child_task = nullptr;

  // For that walk: marks `r` as delivered through this driver and returns the task to deliver it
  // to next; null if this driver does not drive a running task or `r` is not stronger.
  task_record* pass_through(const cancel_request& r) noexcept {
    if (!child_task || (state != phase::running && state != phase::cancelling) || r.level <= sent) return nullptr;
    sent = r.level;
    state = phase::cancelling;
    return child_task;
  }

  bool finished() const noexcept { return state == phase::done; }
  bool started() const noexcept { return state != phase::idle; }

  // Delivers a request. Ignored when idle-done, done, or not stronger than what was sent. If the
  // operation ends because of it (now or later), on_done is called.
  void cancel(const cancel_request& r) noexcept { ops->cancel(this, r); }
  // Type-erased driver<Aw>::start (for owners that do not know the awaitable's type).
  bool start_erased(void* o, done_fn fn, const cancel_request* pending) noexcept {
    return ops->start(this, o, fn, pending);
  }
  // What the awaitable waits on (the task tree); says so when a cancel request has reached it.
  void describe(wait_note& out) const { ops->describe(this, out); }
};

inline void collect_links(const driver_base& d, wait_note& out) {
  if (d.state != driver_base::phase::running && d.state != driver_base::phase::cancelling) return;
  wait_note branch;
  d.describe(branch);
  out.links.insert(out.links.end(), branch.links.begin(), branch.links.end());
}

template <class Aw>
class driver : public driver_base {
  using A = std::remove_reference_t<Aw>;

 public:
  using result_type = decltype(std::declval<A&>().await_resume());

  template <class X>
  explicit driver(X&& x) : driver_base(&on_resume, &table), aw_(get_awaiter_as<Aw>(std::forward<X>(x))) {}
  // Only before start: a started driver's address has been handed out.
  driver(driver&& o) noexcept(std::is_nothrow_move_constructible_v<Aw>)
      : driver_base(&on_resume, &table), aw_(std::forward<Aw>(o.aw_)) {}
  driver(const driver&) = delete;
  driver& operator=(const driver&) = delete;

  A& awaiter() noexcept { return aw_; }

  // Starts the awaitable. `pending` is a cancel request already in force (or null).
  // `ready_checked`: the caller already called await_ready() and it returned false.
  // Returns true if the outcome is known on return (then on_done is not called); otherwise
  // on_done is called exactly once later.
  QUELL_HOT bool start(void* o, done_fn fn, const cancel_request* pending, bool ready_checked = false) noexcept {
    if (state != phase::idle) [[unlikely]]
      awaited_twice();
    owner = o;
    on_done = fn;
    if (pending) [[unlikely]]
      return start_cancelled(*pending, ready_checked);
    if (launch(ready_checked)) return true;
    if (rare) [[unlikely]] {
      if (has_deferred()) return cancel_step(nullptr);
    }
    return false;
  }

  // The result of a finished, not-cancelled operation (rethrows its exception).
  result_type result() {
    if (rare) [[unlikely]] {
      if (rare->error) std::rethrow_exception(rare->error);
    }
    return aw_.await_resume();
  }

  // Moves the result into `out` (value or exception), or marks it cancelled.
  template <class T>
  void collect(outcome<T>& out) noexcept {
    if (cancelled) {
      out.set_cancelled();
      return;
    }
    try {
      if constexpr (std::is_void_v<result_type>) {
        result();
        out.set_value();
      } else {
        out.set_value(result());
      }
    } catch (...) {
      out.set_error(std::current_exception());
    }
  }

  // Consumes the result, keeping only an exception (for hooks and losers whose values are unused).
  // An awaitable that can put its result back where the next operation finds it does so instead
  // (await_give_back): a race's loser is then not lost, only undone.
  std::exception_ptr discard_result() noexcept {
    if (cancelled) return nullptr;
    if (!(rare && rare->error) && protocol_give_back(aw_)) return nullptr;
    try {
      (void)result();
    } catch (...) {
      return std::current_exception();
    }
    return nullptr;
  }

 private:
  QUELL_HOT void suspend_into_awaiter() {
    using R = decltype(aw_.await_suspend(handle()));
    if constexpr (std::is_void_v<R>) {
      aw_.await_suspend(handle());
    } else if constexpr (std::is_same_v<R, bool>) {
      if (!aw_.await_suspend(handle())) resumed_while_busy = true;
    } else {
      std::coroutine_handle<> next = aw_.await_suspend(handle());
      if (next.address() == handle().address()) {
        resumed_while_busy = true;
      } else {
        detail::resume(next);  // symmetric transfer, done as a bounded call
      }
    }
  }

  QUELL_COLD bool fail_start() noexcept {
    busy = false;
    rare_slot().error = std::current_exception();
    state = phase::done;
    return true;
  }

  // start() with a cancel request already in force.
  QUELL_COLD bool start_cancelled(const cancel_request& pending, bool ready_checked) noexcept {
    if (!ready_checked && protocol_early_cancel(aw_, pending)) {
      state = phase::done;
      cancelled = true;
      return true;
    }
    if (launch(ready_checked)) return true;
    return cancel_step(&pending);
  }

  // await_ready, then await_suspend. Returns true if the operation finished during them.
  QUELL_HOT bool launch(bool ready_checked) noexcept {
    busy = true;
    resumed_while_busy = false;
    try {
      if (!ready_checked && aw_.await_ready()) {
        busy = false;
        state = phase::done;
        return true;
      }
      state = phase::running;
      if constexpr (requires(A & a) {
                      { a.child_task() } -> std::same_as<task_record*>;
                    }) {
        child_task = aw_.child_task();
      }
      suspend_into_awaiter();
    } catch (...) {
      return fail_start();
    }
    busy = false;
    if (resumed_while_busy) {
      settle();
      return true;
    }
    return false;
  }

  // Delivers `r` (if not null and stronger than what was sent), then any request that arrived
  // meanwhile. Returns true if the operation is finished on return; on_done is not called.
  QUELL_HOT bool cancel_step(const cancel_request* r) noexcept {
    if (r && r->level > sent && deliver(*r)) return true;
    if (rare) [[unlikely]]
      return deliver_deferred();
    return false;
  }

  // One await_cancel call. Returns true if the operation is finished on return.
  QUELL_HOT bool deliver(const cancel_request& r) noexcept {
    const bool repeat = sent != cancel_level::none;
    sent = r.level;
    busy = true;
    resumed_while_busy = false;
    const bool sync = protocol_cancel(aw_, handle(), r, repeat);
    busy = false;
    if (sync) {
      state = phase::done;
      cancelled = true;
      return true;
    }
    state = phase::cancelling;
    if (resumed_while_busy) {
      settle();
      return true;
    }
    return false;
  }

  // Requests that arrived during a call into the awaitable, each delivered once that call returned.
  QUELL_COLD bool deliver_deferred() noexcept {
    while (has_deferred()) {
      const cancel_request held = std::exchange(rare->deferred, cancel_request{cancel_level::none, {}});
      if (held.level > sent && deliver(held)) return true;
    }
    return false;
  }

  [[noreturn]] QUELL_COLD static void awaited_twice() noexcept {
    fatal(
        "quell: an awaitable was awaited twice (or started again after it finished); every operation is "
        "awaited once");
  }

  // Asked on every resumption; an awaitable without await_must_resume always completed.
  QUELL_HOT void settle() noexcept {
    cancelled = !protocol_must_resume(aw_);
    state = phase::done;
  }

  static void on_resume(void* p) noexcept {
    auto* self = static_cast<driver*>(static_cast<resume_target*>(p));
    if (self->busy) {
      self->resumed_while_busy = true;
      return;
    }
    if (self->state != phase::running && self->state != phase::cancelling) {
      fatal("quell: an awaitable resumed its waiter although it was not waiting (resumed twice?)");
    }
    self->settle();
    self->on_done(self->owner, self);  // may destroy *self
  }

  static bool start_thunk(driver_base* b, void* o, done_fn fn, const cancel_request* p) noexcept {
    return static_cast<driver*>(b)->start(o, fn, p);
  }

  static void cancel_thunk(driver_base* b, const cancel_request& r) noexcept {
    auto* self = static_cast<driver*>(b);
    if (self->busy) {
      if constexpr (requires { A::reentrant_cancel; }) {
        // A task only records the request and forwards it to what it is parked on, which is
        // safe mid-call and makes it take effect at the task's next suspension point.
        if (r.level > self->sent) {
          const bool repeat = self->sent != cancel_level::none;
          self->sent = r.level;
          (void)protocol_cancel(self->aw_, self->handle(), r, repeat);  // reports through the waiter
        }
      } else {
        self->defer(r);  // the call in progress delivers it when it returns
      }
      return;
    }
    switch (self->state) {
      case phase::idle:
        self->state = phase::done;
        self->cancelled = true;
        return;
      case phase::done:
        return;
      case phase::running:
      case phase::cancelling:
        break;
    }
    if (self->cancel_step(&r)) self->on_done(self->owner, self);  // may destroy *self
  }

  static void describe_thunk(const driver_base* d, wait_note& out) {
    describe_awaiter(static_cast<const driver*>(d)->aw_, out);
  }

  static constexpr ops_table table{&cancel_thunk, &start_thunk, &describe_thunk};

  Aw aw_;
};

template <class A>
driver(A&&) -> driver<awaiter_t<A>>;

}  // namespace quell::detail
