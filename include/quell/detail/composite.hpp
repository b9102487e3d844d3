// Shared skeleton of every combinator awaiter (on_cancel, race, ...): who the waiter is, and the
// rule for telling it "done" exactly once, never while the combinator is still inside one of its
// own calls (await_suspend, await_cancel, a loop over its children).
#pragma once

#include <coroutine>

#include "quell/detail/scheduler.hpp"

namespace quell::detail {

class composite {
 public:
  composite() = default;
  // Combinators are moved only before they start (e.g. into another combinator).
  composite(composite&&) noexcept {}
  composite(const composite&) = delete;
  composite& operator=(const composite&) = delete;
  composite& operator=(composite&&) = delete;

  bool await_ready() const noexcept { return false; }

 protected:
  // await_suspend: begin(h) ... return end_suspend();
  void begin(std::coroutine_handle<> h) noexcept {
    if (busy_ != 0 || done_ || waiter_) {
      fatal(
          "quell: a combinator was awaited twice (or started again after it finished); every operation is "
          "awaited once");
    }
    waiter_ = h;
    busy_ = 1;
    outer_context_ = tls.context;
  }
  // The node that was current where the combinator was awaited: children started later, from a
  // callback, are started under it (or under a node of the combinator's own whose parent it is).
  context_node* outer_context() const noexcept { return outer_context_; }
  bool end_suspend() noexcept {
    --busy_;
    if (done_) {
      notified_ = true;
      return false;  // finished without suspending
    }
    return true;
  }
  // Any other call that may finish the combinator: enter() ... leave();
  void enter() noexcept { ++busy_; }
  void leave() noexcept {
    if (--busy_ == 0 && done_) notify();  // may destroy *this
  }
  // The combinator has its outcome; the waiter hears of it as soon as no call is in progress.
  void complete() noexcept {
    done_ = true;
    if (busy_ == 0) notify();  // may destroy *this
  }

 private:
  void notify() noexcept {
    if (!notified_) {
      notified_ = true;
      detail::resume(waiter_);
    }
  }

  std::coroutine_handle<> waiter_;
  context_node* outer_context_ = nullptr;
  int busy_ = 0;
  bool done_ = false;
  bool notified_ = false;
};

}  // namespace quell::detail
