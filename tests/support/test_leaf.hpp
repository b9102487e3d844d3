// A leaf the test drives by hand through every state of the awaiter state machine.
//
//   quell::test::leaf_control<int> c;            // shared state, owned by the test
//   co_await c.leaf();                             // in the code under test
//   c.complete(7); ex.poll_once();                 // the value arrives in the next turn
//
// How it answers a cancel request is set by `mode`:
//   sync      await_cancel returns true (cancelled at once)
//   async     await_cancel returns false; the test later calls confirm_cancel() (cancelled) or
//             complete(v) (completed anyway: completion wins)
//   inside    await_cancel resumes the waiter from inside the call and reports completed anyway
//   unaware   the leaf has no await_cancel at all (see unaware_leaf below)
// `skip_early` is the answer of await_early_cancel.
#pragma once

#include <coroutine>
#include <exception>
#include <optional>
#include <stdexcept>
#include <utility>

#include "quell/quell.hpp"

namespace quell::test {

enum class cancel_mode { sync, async, inside };
enum class leaf_state { not_started, waiting, cancelling, completed, cancelled, skipped };

template <class T = int>
class leaf_control : detail::turn_node {
 public:
  explicit leaf_control(cancel_mode m = cancel_mode::sync, bool skip_early = true) : mode(m), skip_early(skip_early) {
    run = &deliver;
  }
  leaf_control(const leaf_control&) = delete;
  ~leaf_control() { unlink(); }

  cancel_mode mode;
  bool skip_early;
  leaf_state state = leaf_state::not_started;
  int starts = 0;
  int cancel_calls = 0;
  int early_calls = 0;

  // The result arrives: the waiter resumes in the executor's next turn. Valid while waiting or
  // cancelling (then it completed anyway).
  void complete(T v) {
    require_waiting();
    value_ = std::move(v);
    state = leaf_state::completed;
    sched_->run_next_turn(this);
  }
  void fail(std::exception_ptr e) {
    require_waiting();
    error_ = std::move(e);
    state = leaf_state::completed;
    sched_->run_next_turn(this);
  }
  // An async cancellation finishes: the waiter resumes (cancelled) in the next turn.
  void confirm_cancel() {
    if (state != leaf_state::cancelling) throw std::logic_error("confirm_cancel: not cancelling");
    state = leaf_state::cancelled;
    sched_->run_next_turn(this);
  }

  struct awaiter {
    leaf_control* c;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      c->waiter_ = h;
      c->sched_ = detail::this_thread().current;
      c->state = leaf_state::waiting;
      ++c->starts;
    }
    bool await_early_cancel() noexcept {
      ++c->early_calls;
      if (c->skip_early) c->state = leaf_state::skipped;
      return c->skip_early;
    }
    bool await_cancel(std::coroutine_handle<> h) noexcept {
      ++c->cancel_calls;
      switch (c->mode) {
        case cancel_mode::sync:
          c->state = leaf_state::cancelled;
          return true;
        case cancel_mode::async:
          c->state = leaf_state::cancelling;
          return false;
        case cancel_mode::inside:
          c->value_ = T{};
          c->state = leaf_state::completed;
          h.resume();
          return false;
      }
      return false;
    }
    bool await_must_resume() const noexcept { return c->state == leaf_state::completed; }
    T await_resume() {
      if (c->error_) std::rethrow_exception(c->error_);
      return std::move(*c->value_);
    }
  };
  awaiter leaf() { return awaiter{this}; }

 private:
  void require_waiting() const {
    if (state != leaf_state::waiting && state != leaf_state::cancelling) {
      throw std::logic_error("leaf_control: the leaf is not waiting");
    }
  }
  static void deliver(detail::turn_node* n) noexcept {
    auto* self = static_cast<leaf_control*>(n);
    detail::resume(self->waiter_);
  }

  std::coroutine_handle<> waiter_;
  detail::scheduler* sched_ = nullptr;
  std::optional<T> value_;
  std::exception_ptr error_;
};

// An awaitable from "another library": no cancellation protocol at all. It completes when the
// test calls complete().
class unaware_leaf : detail::turn_node {
 public:
  unaware_leaf() { run = &deliver; }
  ~unaware_leaf() { unlink(); }
  bool started = false;
  bool finished = false;

  void complete(int v) {
    value_ = v;
    sched_->run_next_turn(this);
  }

  struct awaiter {
    unaware_leaf* c;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      c->waiter_ = h;
      c->sched_ = detail::this_thread().current;
      c->started = true;
    }
    int await_resume() const noexcept { return c->value_; }
  };
  awaiter operator co_await() { return awaiter{this}; }

 private:
  static void deliver(detail::turn_node* n) noexcept {
    auto* self = static_cast<unaware_leaf*>(n);
    self->finished = true;
    detail::resume(self->waiter_);
  }
  std::coroutine_handle<> waiter_;
  detail::scheduler* sched_ = nullptr;
  int value_ = 0;
};

}  // namespace quell::test
