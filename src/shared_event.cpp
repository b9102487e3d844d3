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
  detail::node_list woken;
  {
    std::lock_guard<std::mutex> lock(m_);
    if (set_) return;
    set_ = true;
    while (detail::list_node* n = waiters_.pop_front()) woken.push_back(n);
  }
  // After the lock: a woken waiter may resume on its core, and its frame go, as soon as it is sent.
  while (detail::list_node* n = woken.pop_front()) {
    auto* w = static_cast<detail::mailbox_waiter*>(n);
    w->home.send(w);
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
