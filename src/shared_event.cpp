#include "quell/shared_event.hpp"

namespace quell {

shared_event::~shared_event() {
  std::lock_guard<std::mutex> lock(m_);
  if (!waiters_.empty()) detail::fatal("quell: a shared_event was destroyed while tasks were waiting on it");
}

bool shared_event::is_set() const {
  std::lock_guard<std::mutex> lock(m_);
  return set_;
}

void shared_event::set() noexcept {
  waiter* woken = nullptr;
  {
    std::lock_guard<std::mutex> lock(m_);
    if (set_) return;
    set_ = true;
    // Unlinked here, under the lock: a cancel that takes the lock after this sees its waiter
    // unlinked (woken) and waits for the wake-up; the chain is this call's alone.
    waiter** tail = &woken;
    while (detail::list_node* n = waiters_.pop_front()) {
      auto* w = static_cast<waiter*>(static_cast<detail::mailbox_waiter*>(n));
      w->chain = nullptr;
      *tail = w;
      tail = &w->chain;
    }
  }
  // After the lock: a woken waiter may resume on its core, and its frame go, as soon as it is sent.
  while (woken) {
    waiter* next = woken->chain;  // read first
    woken->home.send(woken);
    woken = next;
  }
}

bool shared_event::wait_awaiter::await_suspend(std::coroutine_handle<> h) {
  w_.h = h;
  w_.home = detail::home_core::current();  // before the lock: it may allocate
  std::lock_guard<std::mutex> lock(e_.m_);
  if (e_.set_) {  // set since await_ready
    w_.home = detail::home_core();
    return false;
  }
  e_.waiters_.push_back(&w_);
  return true;
}

bool shared_event::wait_awaiter::await_cancel(std::coroutine_handle<>) noexcept {
  bool queued;
  {
    std::lock_guard<std::mutex> lock(e_.m_);
    queued = w_.linked();
    if (queued) w_.unlink();
  }
  if (queued) {
    w_.home = detail::home_core();
    return true;
  }
  crossed_ = true;  // set() woke it on its way here: the wake-up message ends the wait, cancelled
  return false;
}

}  // namespace quell
