// event: a manual-reset flag that tasks can wait for.
//
//   quell::event ready;
//   co_await ready.wait();   // returns at once if set
//   ready.set();             // wakes every waiter; stays set until reset()
//   ready.reset();
//
// Waiters woken by set() resume later in the same turn, in the order they started waiting.
// Cancellation: a waiter cancelled before set() is simply removed; a waiter woken by set() that
// is cancelled before it resumed (the same turn) ends cancelled too, since a wake-up consumes
// nothing: the event stays set for the next wait. reset() does not un-wake waiters that set()
// already woke.
//
// Single-executor: an event and its waiters belong to one executor's thread; no locks. The
// event must outlive its waiters.
#pragma once

#include "quell/detail/wait_queue.hpp"

namespace quell {

class event {
 public:
  event() noexcept = default;
  explicit event(bool set) noexcept : set_(set) {}
  event(const event&) = delete;
  event& operator=(const event&) = delete;
  ~event();

  bool is_set() const noexcept { return set_; }
  void set() noexcept;
  void reset() noexcept { set_ = false; }

  class wait_awaiter : public detail::queued_waiter {
   public:
    explicit wait_awaiter(event& e) noexcept : e_(e) {}
    bool await_ready() const noexcept { return e_.set_; }
    void await_suspend(std::coroutine_handle<> h) noexcept { wait_in(e_.waiters_, h); }
    bool await_cancel(std::coroutine_handle<>) noexcept {
      if (withdraw()) return true;
      gave_back();  // woken, not resumed yet: nothing was consumed
      return false;
    }
    void await_resume() const noexcept {}
    void describe_wait(detail::wait_note& out) const { out.what = "event"; }

   private:
    friend class event;
    event& e_;
  };

  wait_awaiter wait() noexcept { return wait_awaiter(*this); }

 private:
  bool set_ = false;
  detail::node_list waiters_;
};

}  // namespace quell
