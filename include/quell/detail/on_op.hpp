// How on(core, factory) works (quell/runtime.hpp states the contract): the awaiter on the caller's
// core and the call record both cores share.
// It needs the public types of that header complete, so the header includes this file at its end.
#pragma once

#include "quell/runtime.hpp"

namespace quell::detail {

// The mailbox of core `core` of the current task's runtime (std::out_of_range if there is no
// such core); outside a runtime core 0 is the current executor's own.
std::shared_ptr<remote_state> core_mailbox(unsigned core);

// on(core, factory): the awaiter on the caller's side, and the call record both cores share.
template <class F>
class on_op {
  using op_type = std::invoke_result_t<F&>;
  using Aw = awaiter_t<op_type>;

 public:
  using result_type = await_result_t<op_type>;

  on_op(unsigned core, F f) : core_(core), f_(std::move(f)) {}
  on_op(on_op&& o) noexcept(std::is_nothrow_move_constructible_v<F>)
      : core_(o.core_), f_(std::move(o.f_)), c_(std::exchange(o.c_, nullptr)) {}
  on_op(const on_op&) = delete;
  on_op& operator=(const on_op&) = delete;
  ~on_op() {
    if (c_) call::unref(c_);
  }

  bool await_ready() const noexcept { return false; }
  // Never started when a request is already pending: factory is not called (the default).
  void await_suspend(std::coroutine_handle<> h) {
    std::shared_ptr<remote_state> target = core_mailbox(core_);
    c_ = new call(std::move(*f_), std::move(target));
    f_.reset();
    c_->waiter = h;
    c_->home = home_core::current(home_core::from::this_runtime);
    c_->caller = tls.current->core;
    ++c_->caller->replies_expected;
    c_->target->push(&c_->start_m);
  }
  bool await_cancel(std::coroutine_handle<>, const cancel_request& r) noexcept {
    if (c_->done_seen) return false;  // its end is already here, queued: completion wins
    const int i = r.level == cancel_level::forced ? 1 : 0;
    c_->req[i] = r;
    c_->asked.store(r.level, std::memory_order_release);
    c_->refs.fetch_add(1, std::memory_order_relaxed);  // the message holds the record
    c_->target->push(&c_->cancel_m[i]);
    return false;  // the child's end comes back as a message
  }
  bool await_must_resume() const noexcept { return !c_->out.cancelled(); }
  // The child's tasks on the other core hang from c_->root: the task tree joins them here.
  void describe_wait(wait_note& out) const {
    out.what = "a child on core " + std::to_string(core_);
    if (c_) out.links.push_back(&c_->root);
  }
  result_type await_resume() { return c_->out.take(); }

 private:
  struct call;
  struct msg : core_message {
    call* c = nullptr;
  };

  struct call {
    call(F&& f, std::shared_ptr<remote_state> t) : factory(std::move(f)), target(std::move(t)) {
      start_m.c = cancel_m[0].c = cancel_m[1].c = done_m.c = this;
      start_m.run = &on_start;
      cancel_m[0].run = cancel_m[1].run = &on_cancel;
      done_m.run = &on_done_home;
    }

    static void unref(call* c) noexcept {
      if (c->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete c;
    }

    // On the child's core.
    static void on_start(core_message* m) noexcept {
      call* c = static_cast<msg*>(m)->c;
      if (c->asked.load(std::memory_order_acquire) != cancel_level::none) {
        c->out.set_cancelled();  // cancelled before it started here: nothing of it runs
        c->finish();
        return;
      }
      try {
        c->drv.emplace(std::invoke(*c->factory));
      } catch (...) {
        c->factory.reset();
        c->out.set_error(std::current_exception());
        c->finish();
        return;
      }
      // The factory lives until the child has ended: a coroutine lambda passed as the factory
      // runs with its captures inside this very object.
      context_guard top(&c->root);  // the child's tree starts here; its caller is on another core
      if (c->drv->start(c, &child_done, nullptr)) child_done(c, &*c->drv);
    }
    static void child_done(void* self, driver_base*) noexcept {
      call* c = static_cast<call*>(self);
      c->drv->collect(c->out);
      c->drv.reset();  // the child's frame ends on its own core
      c->factory.reset();
      c->finish();
    }
    static void on_cancel(core_message* m) noexcept {
      call* c = static_cast<msg*>(m)->c;
      const int i = m == &c->cancel_m[1] ? 1 : 0;
      if (!c->finished && c->drv) c->drv->cancel(c->req[i]);  // may finish it at once
      unref(c);
    }
    void finish() noexcept {
      finished = true;
      home.send(&done_m);  // the last touch of this record on the child's core
    }
    // On the caller's core.
    static void on_done_home(core_message* m) noexcept {
      call* c = static_cast<msg*>(m)->c;
      c->done_seen = true;
      --c->caller->replies_expected;
      post_completed(c->waiter);
    }

    std::atomic<int> refs{1};
    std::optional<F> factory;
    std::optional<driver<Aw>> drv;
    outcome<result_type> out;
    std::shared_ptr<remote_state> target;
    home_core home;
    std::coroutine_handle<> waiter;
    executor_core* caller = nullptr;
    std::atomic<cancel_level> asked{cancel_level::none};
    cancel_request req[2]{{cancel_level::none, {}}, {cancel_level::none, {}}};
    // The top of the child's cancel context: transparent, and without a parent (the caller's
    // context is on another core); the task tree matches it with the caller's describe_wait.
    context_frame root{context_node::kind::plain, nullptr};
    bool finished = false;   // the child's core
    bool done_seen = false;  // the caller's core
    msg start_m, cancel_m[2], done_m;
  };

  unsigned core_;
  std::optional<F> f_;
  call* c_ = nullptr;
};

}  // namespace quell::detail
