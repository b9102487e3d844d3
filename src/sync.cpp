#include "quell/event.hpp"
#include "quell/semaphore.hpp"

namespace quell {

semaphore::~semaphore() {
  if (!waiters_.empty()) {
    detail::fatal("quell: a semaphore was destroyed while tasks were waiting on it");
  }
}

std::size_t semaphore::waiting() const noexcept {
  std::size_t n = 0;
  waiters_.for_each([&](const detail::list_node*) { ++n; });
  return n;
}

void semaphore::grant_waiters() noexcept {
  while (!waiters_.empty()) {
    auto* w = static_cast<acquire_awaiter*>(waiters_.front());
    if (w->units_ > available_) return;  // strict FIFO: the head holds back the rest
    available_ -= w->units_;
    w->grant();
  }
}

event::~event() {
  if (!waiters_.empty()) detail::fatal("quell: an event was destroyed while tasks were waiting on it");
}

void event::set() noexcept {
  set_ = true;
  while (!waiters_.empty()) static_cast<wait_awaiter*>(waiters_.front())->grant();
}

}  // namespace quell
