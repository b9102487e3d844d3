// The child machinery shared by scopes, task groups and task sets (quell/scope.hpp states the
// contract; read it first): the record each child lives in (child_base, child, task_child), what
// start() and task_status share, and scope_core, the set of children with its first error and the
// request that cancels them. quell::scope, quell::task_group and quell::task_set are built on it.
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

template <class T>
class task_status;
template <class R>
class spawn_handle;

namespace detail {

class scope_core;
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
// small record (bytes per spawned task: W3 in bench/compare/WORKLOADS.md). The same rules as the driver around
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

template <class Body>
class scope_op;

// What scopes, task groups and task sets share: the children, the first error, the request that cancels them.
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

  detail::context_frame node_{detail::context_node::kind::plain, nullptr};
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

}  // namespace detail
}  // namespace quell
