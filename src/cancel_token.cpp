#include "quell/cancel_token.hpp"

#include <stdexcept>

namespace quell::detail {

bool token_state::cancel(cancel_reason r) {
  std::unique_lock<std::mutex> l(m);
  if (cancelled.load(std::memory_order_relaxed)) return false;
  reason = std::move(r);
  cancelled.store(true, std::memory_order_release);
  running_thread = std::this_thread::get_id();
  while (list_node* n = callbacks.pop_front()) {
    auto* cb = static_cast<token_callback_base*>(n);
    running = cb;
    l.unlock();
    cb->invoke(cb);  // may destroy *cb (a callback that deregisters itself)
    l.lock();
    running = nullptr;
    cv.notify_all();
  }
  return true;
}

bool token_state::add(token_callback_base* cb) {
  std::lock_guard<std::mutex> l(m);
  if (cancelled.load(std::memory_order_relaxed)) return false;
  callbacks.push_back(cb);
  return true;
}

void token_state::remove(token_callback_base* cb) {
  std::unique_lock<std::mutex> l(m);
  if (cb->linked()) {
    cb->unlink();
    return;
  }
  // Already run, or running now: wait for it unless it is this thread's own call (deregistering
  // from inside the callback).
  if (running == cb && running_thread != std::this_thread::get_id()) {
    cv.wait(l, [&] { return running != cb; });
  }
}

executor_core& current_core_for_tokens() {
  scheduler* s = tls.current;
  if (!s || !s->core) throw std::logic_error("quell: with_cancellation awaited outside an executor");
  return *s->core;
}

}  // namespace quell::detail
