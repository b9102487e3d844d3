#include "quell/shared_semaphore.hpp"

#include <stdexcept>
#include <string>

namespace quell {

shared_semaphore::~shared_semaphore() {
  std::lock_guard<std::mutex> lock(m_);
  if (!waiters_.empty()) detail::fatal("quell: a shared_semaphore was destroyed while tasks were waiting on it");
}

std::size_t shared_semaphore::available() const {
  std::lock_guard<std::mutex> lock(m_);
  return available_;
}

std::size_t shared_semaphore::waiting() const {
  std::lock_guard<std::mutex> lock(m_);
  std::size_t n = 0;
  waiters_.for_each([&](const detail::list_node*) { ++n; });
  return n;
}

void shared_semaphore::check_units(std::size_t n) const {
  if (n > total_) {
    throw std::invalid_argument("quell: shared_semaphore::acquire(" + std::to_string(n) + ") asks for more than the " +
                                std::to_string(total_) + " units the semaphore has");
  }
}

std::optional<shared_permit> shared_semaphore::try_acquire(std::size_t n) {
  std::lock_guard<std::mutex> lock(m_);
  if (!waiters_.empty() || available_ < n) return std::nullopt;
  available_ -= n;
  return shared_permit(this, n);
}

shared_semaphore::waiter* shared_semaphore::grant_locked() noexcept {
  waiter* head = nullptr;
  waiter** tail = &head;
  while (detail::list_node* n = waiters_.front()) {
    auto* w = static_cast<waiter*>(static_cast<detail::mailbox_waiter*>(n));
    if (available_ < w->units) break;  // FIFO: the head holds back smaller requests behind it
    available_ -= w->units;
    w->granted = true;
    w->unlink();
    w->chain = nullptr;
    *tail = w;
    tail = &w->chain;
  }
  return head;
}

void shared_semaphore::wake_all(waiter* w) noexcept {
  while (w) {
    waiter* next = w->chain;  // read first: once sent, the waiter may resume and be gone
    w->home.send(w);
    w = next;
  }
}

void shared_semaphore::release(std::size_t n) noexcept {
  waiter* granted;
  {
    std::lock_guard<std::mutex> lock(m_);
    available_ += n;
    granted = grant_locked();
  }
  wake_all(granted);
}

bool shared_semaphore::acquire_awaiter::await_ready() {
  sem_.check_units(w_.units);
  std::lock_guard<std::mutex> lock(sem_.m_);
  if (sem_.waiters_.empty() && sem_.available_ >= w_.units) {
    sem_.available_ -= w_.units;
    w_.granted = true;
    return true;
  }
  return false;
}

bool shared_semaphore::acquire_awaiter::await_suspend(std::coroutine_handle<> h) {
  w_.h = h;
  w_.home = detail::home_core::current();  // before the lock: it may allocate
  std::lock_guard<std::mutex> lock(sem_.m_);
  if (sem_.waiters_.empty() && sem_.available_ >= w_.units) {  // released since await_ready
    sem_.available_ -= w_.units;
    w_.granted = true;
    w_.home = detail::home_core();
    return false;  // resume at once
  }
  sem_.waiters_.push_back(&w_);
  return true;
}

bool shared_semaphore::acquire_awaiter::await_cancel(std::coroutine_handle<>) noexcept {
  waiter* granted;
  bool queued;
  {
    std::lock_guard<std::mutex> lock(sem_.m_);
    queued = w_.linked();
    if (queued) {
      w_.unlink();  // still queued: it takes nothing, and may have held back others
    } else {
      // Granted on another core while this cancel was on its way; its wake-up is in flight.
      // The units go to the next waiter, and that wake-up ends this wait cancelled.
      w_.returned = true;
      sem_.available_ += w_.units;
    }
    granted = sem_.grant_locked();
  }
  if (queued) w_.home = detail::home_core();
  wake_all(granted);
  return queued;
}

}  // namespace quell
