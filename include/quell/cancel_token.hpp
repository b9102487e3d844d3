// cancel_source / cancel_token / cancel_callback, and with_cancellation(token, op).
//
//   quell::cancel_source src;                       // e.g. owned by a connection
//   co_await quell::with_cancellation(src.token(), handle(request));
//   ...                                             // on any thread:
//   src.cancel(quell::cancel_reason(quell::cancel_kind::peer_disconnected));
//
// Sources and tokens are thread-safe and cheap to copy (a shared state). A source is cancelled at
// most once; the first reason is kept. A default-constructed token can never be cancelled.
//
// cancel_callback(token, f): runs f() at most once, when the source is cancelled, on the thread
// that cancels it; at once, in the constructor, if it already is. Its destructor deregisters f:
// if f is running on another thread at that moment, the destructor waits for it to return; if f
// is running on this thread (f destroys its own registration), it does not wait. f must not throw.
// Same contract as std::stop_callback.
//
// with_cancellation(token, op) runs op (any awaitable) on the executor; when the token is
// cancelled, op is cancelled (graceful, with the token's reason) on the executor's thread: from
// another thread the request is posted through the executor's remote_handle, which wakes it at
// once. Since the cancellation starts at the token rather than at the awaiting task,
// with_cancellation then ends cancelled and the cancellation travels *up* to whatever awaits it
// (a scope member, the root, ...), exactly as if the request had come from there.
//   - token already cancelled when it starts: op never starts (a pending cancel skips it).
//   - op completes while the token fires: completion wins, the value is delivered.
//   - with_cancellation itself cancelled: forwarded to op as usual.
// std::stop_token works the same: with_cancellation(stop_token, op), reason "requested: stop
// requested".
#pragma once

#include <atomic>
#include <condition_variable>
#include <coroutine>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>
#include <type_traits>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/detail/composite.hpp"
#include "quell/detail/driver.hpp"
#include "quell/detail/intrusive_list.hpp"
#include "quell/executor.hpp"

namespace quell {
namespace detail {

struct token_callback_base : list_node {
  void (*invoke)(token_callback_base*) noexcept = nullptr;
};

struct token_state {
  std::mutex m;
  std::condition_variable cv;
  std::atomic<bool> cancelled{false};
  cancel_reason reason;  // written once, before `cancelled`
  node_list callbacks;
  token_callback_base* running = nullptr;
  std::thread::id running_thread;

  bool cancel(cancel_reason r);
  // False if already cancelled (the caller then runs the callback itself).
  bool add(token_callback_base* cb);
  void remove(token_callback_base* cb);
};

}  // namespace detail

class cancel_token {
 public:
  cancel_token() noexcept = default;
  bool can_be_cancelled() const noexcept { return s_ != nullptr; }
  bool cancel_requested() const noexcept { return s_ && s_->cancelled.load(std::memory_order_acquire); }
  // The reason, once cancelled.
  std::optional<cancel_reason> reason() const {
    if (!cancel_requested()) return std::nullopt;
    return s_->reason;
  }

 private:
  friend class cancel_source;
  template <class F>
  friend class cancel_callback;
  explicit cancel_token(std::shared_ptr<detail::token_state> s) noexcept : s_(std::move(s)) {}
  std::shared_ptr<detail::token_state> s_;
};

class cancel_source {
 public:
  cancel_source() : s_(std::make_shared<detail::token_state>()) {}
  cancel_token token() const noexcept { return cancel_token(s_); }
  // Cancels every token of this source and runs their callbacks on this thread. True if this
  // call did it; false if the source was already cancelled (the first reason stays).
  // The callbacks may end, inline, the task whose frame holds this source: the call keeps the
  // shared state alive by itself and touches nothing of *this after them.
  bool cancel(cancel_reason reason = cancel_reason(cancel_kind::requested)) {
    const std::shared_ptr<detail::token_state> s = s_;
    return s->cancel(std::move(reason));
  }
  bool cancel_requested() const noexcept { return s_->cancelled.load(std::memory_order_acquire); }

 private:
  std::shared_ptr<detail::token_state> s_;
};

template <class F>
class cancel_callback : detail::token_callback_base {
 public:
  template <class X>
  cancel_callback(const cancel_token& t, X&& f) : s_(t.s_), f_(std::forward<X>(f)) {
    invoke = &run;
    if (s_ && !s_->add(this)) f_();
  }
  cancel_callback(const cancel_callback&) = delete;
  cancel_callback& operator=(const cancel_callback&) = delete;
  ~cancel_callback() {
    if (s_) s_->remove(this);
  }

 private:
  static void run(detail::token_callback_base* b) noexcept { static_cast<cancel_callback*>(b)->f_(); }
  std::shared_ptr<detail::token_state> s_;
  F f_;
};

template <class F>
cancel_callback(const cancel_token&, F) -> cancel_callback<F>;

namespace detail {

executor_core& current_core_for_tokens();

// Shared between a with_cancellation (executor thread) and its token callback (any thread).
struct token_link {
  void* target = nullptr;  // null once the combinator is gone; read and written on the executor thread
  void (*fire)(void*) noexcept = nullptr;
  std::thread::id thread;
  remote_handle remote;
};

struct token_fired {
  std::shared_ptr<token_link> link;
  void operator()() const noexcept {
    if (std::this_thread::get_id() == link->thread) {
      if (link->target) link->fire(link->target);
      return;
    }
    try {
      link->remote.post([l = link] {
        if (l->target) l->fire(l->target);
      });
    } catch (...) {
      fatal("quell: could not post a token's cancellation to its executor (out of memory)");
    }
  }
};

template <class Tok>
struct token_traits;
template <>
struct token_traits<cancel_token> {
  using registration = cancel_callback<token_fired>;
  static bool requested(const cancel_token& t) noexcept { return t.cancel_requested(); }
  static cancel_reason reason(const cancel_token& t) { return t.reason().value_or(cancel_reason()); }
};
template <>
struct token_traits<std::stop_token> {
  using registration = std::stop_callback<token_fired>;
  static bool requested(const std::stop_token& t) noexcept { return t.stop_requested(); }
  static cancel_reason reason(const std::stop_token&) {
    return cancel_reason(cancel_kind::requested, "stop requested");
  }
};

template <class Tok, class OpAw>
class token_op : public composite {
  using traits = token_traits<Tok>;
  using R = typename driver<OpAw>::result_type;

 public:
  template <class X>
  token_op(Tok t, X&& op) : token_(std::move(t)), op_(std::forward<X>(op)) {}
  token_op(token_op&& o) : composite(std::move(o)), token_(std::move(o.token_)), op_(std::move(o.op_)) {}
  ~token_op() {
    if (link_) link_->target = nullptr;
  }

  bool await_early_cancel() const noexcept { return true; }

  bool await_suspend(std::coroutine_handle<> h) {
    begin(h);
    if (traits::requested(token_)) {
      const cancel_request r{cancel_level::graceful, traits::reason(token_)};
      if (op_.start(this, &op_done, &r)) complete();
      return end_suspend();
    }
    link_ = std::make_shared<token_link>();
    link_->target = this;
    link_->fire = &on_token;
    link_->thread = std::this_thread::get_id();
    link_->remote = current_core_for_tokens().remote();
    if (op_.start(this, &op_done, nullptr)) {
      complete();
    } else {
      reg_.emplace(token_, token_fired{link_});  // may fire at once
    }
    return end_suspend();
  }

  bool await_cancel(std::coroutine_handle<>, const cancel_request& r) noexcept {
    enter();
    if (!op_.finished()) op_.cancel(r);
    leave();  // may destroy *this
    return false;
  }

  bool await_must_resume() const noexcept { return !op_.cancelled; }
  R await_resume() { return op_.result(); }

 private:
  static void on_token(void* o) noexcept {
    auto* self = static_cast<token_op*>(o);
    if (self->op_.finished()) return;
    self->enter();
    self->op_.cancel(cancel_request{cancel_level::graceful, traits::reason(self->token_)});
    self->leave();  // may destroy *self
  }
  static void op_done(void* o, driver_base*) noexcept {
    auto* self = static_cast<token_op*>(o);
    self->link_->target = nullptr;
    self->reg_.reset();  // waits if the callback is running on another thread (it only posts)
    self->complete();    // may destroy *self
  }

  Tok token_;
  driver<OpAw> op_;
  std::shared_ptr<token_link> link_;
  std::optional<typename traits::registration> reg_;
};

}  // namespace detail

template <class Op>
auto with_cancellation(cancel_token token, Op&& op) {
  return detail::token_op<cancel_token, detail::awaiter_t<Op>>(std::move(token), std::forward<Op>(op));
}
template <class Op>
auto with_cancellation(std::stop_token token, Op&& op) {
  return detail::token_op<std::stop_token, detail::awaiter_t<Op>>(std::move(token), std::forward<Op>(op));
}

}  // namespace quell
