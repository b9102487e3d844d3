// shared_event: a set-once flag that tasks on any core of a runtime (or on any executor, on any
// thread) can wait for; set() may be called from any thread.
//
//   quell::shared_event stop;                 // outlives the runtime's run
//   co_await stop.wait();                     // in a task on any core; at once if already set
//   stop.set();                               // from any thread: every waiter, on every core, wakes
//
// It is the cross-core `event` without reset(): once set it stays set, so a waiter that starts
// after set() never waits, and a set() that races a wait() is never missed. What one would use
// for "stop, everywhere": the multi-core http::server's shutdown is one.
//
// Who resumes whom: set() takes the waiters under the event's lock, then sends each a message
// to its own core (the cross-core mailbox, as shared_semaphore's grants); that core resumes it.
//
// Cancellation (the rule of `event`): a waiter cancelled before set() leaves the queue at once
// (synchronously) and ends cancelled. A waiter that set() woke on another core while its cancel
// was on the way also ends cancelled, after the wake-up has arrived (its message refers to the
// waiter): a wake-up consumes nothing, the event stays set, and the next wait() returns at once.
//
// The event must outlive its waiters; destroying it with waiters is a fatal error. Outside a
// runtime a waiting task keeps its executor awake (a remote_handle's worth): another thread may
// set the event.
#pragma once

#include <coroutine>
#include <mutex>

#include "quell/detail/intrusive_list.hpp"
#include "quell/executor.hpp"

namespace quell {

class shared_event {
 public:
  shared_event() noexcept = default;
  shared_event(const shared_event&) = delete;
  shared_event& operator=(const shared_event&) = delete;
  ~shared_event();

  bool is_set() const;
  // Sets the event and wakes every waiter (idempotent), from any thread.
  void set() noexcept;

  class wait_awaiter {
   public:
    explicit wait_awaiter(shared_event& e) noexcept : e_(e) {}
    wait_awaiter(wait_awaiter&& o) noexcept : e_(o.e_) {}  // before it waits

    bool await_ready() const { return e_.is_set(); }
    bool await_suspend(std::coroutine_handle<> h);
    bool await_cancel(std::coroutine_handle<>) noexcept;
    bool await_must_resume() const noexcept { return !crossed_; }
    void await_resume() const noexcept {}
    void describe_wait(detail::wait_note& out) const { out.what = "shared_event"; }

   private:
    friend class shared_event;
    struct waiter : detail::mailbox_waiter {
      waiter* chain = nullptr;  // unlinked and chained by set() under the lock, woken after it
    };
    shared_event& e_;
    waiter w_;
    bool crossed_ = false;  // the waiter's own core: cancelled after set() had woken it
  };

  wait_awaiter wait() noexcept { return wait_awaiter(*this); }

 private:
  using waiter = wait_awaiter::waiter;
  mutable std::mutex m_;
  bool set_ = false;
  detail::node_list waiters_;
};

}  // namespace quell
