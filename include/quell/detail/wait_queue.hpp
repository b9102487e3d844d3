// The waiting half of every synchronization primitive (semaphore, mutex, event, channel): one
// FIFO of suspended awaiters, and the one rule for cancelling a waiter.
//
// A waiter is either queued or granted. Granting happens at once (the resource is moved to the
// waiter, which leaves the queue) and the waiter's coroutine is resumed from the executor's run
// queue later in the same turn, never from inside the call that granted it (a release can happen
// in a destructor, in the middle of someone else's code).
//
// Cancelling a queued waiter removes it: it takes nothing. Cancelling a granted waiter that has
// not resumed yet (the completion window) gives back what it was granted when that can be given
// back (a semaphore's units go to the next waiter, a channel value is first in line again, an
// event's wake-up needs nothing) and the waiter ends cancelled: a cancelled waiter takes nothing,
// and a combinator that would have discarded its result (a race's loser) drops nothing. What
// cannot be given back (a send whose value is already in a channel) completes (completion wins).
// Either way a resource is never lost and never granted twice.
#pragma once

#include <coroutine>

#include "quell/detail/intrusive_list.hpp"
#include "quell/detail/scheduler.hpp"
#include "quell/detail/wait_note.hpp"

namespace quell::detail {

class queued_waiter : public list_node {
 public:
  queued_waiter() = default;
  queued_waiter(queued_waiter&&) noexcept {}  // only before it waits
  queued_waiter(const queued_waiter&) = delete;
  ~queued_waiter() { unlink(); }

  bool granted() const noexcept { return granted_; }

  // Standard members every primitive's awaiter shares.
  bool await_must_resume() const noexcept { return granted_ && !returned_; }

 protected:
  void wait_in(node_list& q, std::coroutine_handle<> h) noexcept {
    if (linked() || granted_) awaited_twice();
    h_ = h;
    sched_ = this_thread().current;
    q.push_back(this);
  }
  // The resource has been handed over: leave the queue, resume soon.
  void grant() noexcept {
    granted_ = true;
    unlink();
    if (sched_) {
      sched_->post_completed(h_);
    } else {
      detail::resume(h_);
    }
  }
  // For await_cancel: true if the waiter left the queue empty-handed (cancelled synchronously),
  // false if it was already granted and its resumption is queued.
  bool withdraw() noexcept {
    if (granted_) return false;
    unlink();
    return true;
  }
  // For await_cancel, after withdraw() returned false: what was granted has been given back, so
  // the queued resumption ends the wait cancelled.
  void gave_back() noexcept { returned_ = true; }
  void mark_granted_without_waiting() noexcept {
    if (linked() || granted_) awaited_twice();
    granted_ = true;
  }
  [[noreturn]] static void awaited_twice() noexcept {
    fatal(
        "quell: a wait on a semaphore, mutex, event or channel was awaited twice; each acquire(), lock(), "
        "wait(), send() or receive() is awaited once");
  }

 private:
  std::coroutine_handle<> h_;
  scheduler* sched_ = nullptr;
  bool granted_ = false;
  bool returned_ = false;
};

}  // namespace quell::detail
