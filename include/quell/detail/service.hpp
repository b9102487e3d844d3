// Work the executor itself owns, beside its root: long-lived I/O operations that let something
// outside wake it (a signal watcher, the cross-thread waker), and timers that call back into it
// (a shutdown grace period). None of it is a task, and none of it outlives the root: when the
// root has finished, services are cancelled and drained (their CQEs reaped) before the executor
// returns or frees anything.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "quell/cancellation.hpp"
#include "quell/detail/intrusive_list.hpp"
#include "quell/detail/reactor.hpp"
#include "quell/detail/resume_target.hpp"
#include "quell/detail/timer_queue.hpp"

namespace quell::detail {

// An io_op whose "waiter" is a callback, resumed on the executor's thread.
struct service : io_op, resume_target {
  explicit service(prep_fn p) noexcept : io_op(p, &always_done), resume_target(&on_resume) { waiter = handle(); }
  virtual ~service() = default;
  // The op's CQE arrived (res holds its result) and the executor is not stopping it.
  virtual void fired() noexcept = 0;
  // The root has finished and the executor is stopping its services (disarm timers here).
  virtual void on_stop() noexcept {}

  bool armed() const noexcept { return state == phase::queued || state == phase::in_flight; }
  bool stopping = false;

 private:
  static bool always_done(io_op*, int) noexcept { return true; }
  static void on_resume(void* p) noexcept {
    auto* s = static_cast<service*>(static_cast<resume_target*>(p));
    if (!s->stopping) s->fired();
  }
};

// A timer that calls `fn` on the executor's thread when it fires.
struct callback_timer : timer_node, resume_target {
  explicit callback_timer(std::function<void()> f) : resume_target(&on_resume), fn(std::move(f)) { waiter = handle(); }
  ~callback_timer() { disarm(); }
  callback_timer(const callback_timer&) = delete;
  callback_timer& operator=(const callback_timer&) = delete;
  std::function<void()> fn;

 private:
  static void on_resume(void* p) noexcept { static_cast<callback_timer*>(static_cast<resume_target*>(p))->fn(); }
};

// A message from another thread (another core of a runtime, or any thread through a
// remote_handle), run on the receiving executor's thread. The one cross-thread message path:
// senders push onto a lock-free stack (no lock on either side), the receiver takes the whole
// stack at once when its waker fires and runs it in the order it was sent. `run` may free the
// message; `drop` (optional) frees one that never ran because its executor was gone.
struct core_message {
  core_message* next = nullptr;
  void (*run)(core_message*) noexcept = nullptr;
  void (*drop)(core_message*) noexcept = nullptr;
};

// What other threads share with an executor (quell::remote_handle, the cores of a runtime).
struct remote_state {
  std::mutex m;
  cancel_level level = cancel_level::none;  // under m
  cancel_reason reason;                     // under m
  int efd = -1;  // eventfd the executor's waker reads; -1 once the executor is gone (under m)
  std::atomic<int> handles{0};
  // A runtime's core: messages in transit are counted here (see detail/core_group.hpp), so the
  // runtime can tell "every core is idle and nothing is on its way" (stuck) from "waiting".
  std::atomic<std::uint64_t>* transit = nullptr;
  // The root has finished (under m), and who waits for that (remote_handle::cancel's awaitable).
  bool root_finished = false;
  node_list finish_waiters;  // under m

  // Under m: records a cancel request for the executor's root (the first reason wins). A request
  // waiting here counts as a message in transit until the executor takes it.
  void set_request(cancel_level l, cancel_reason r) noexcept {
    if (l <= level) return;
    if (level == cancel_level::none) {
      reason = std::move(r);
      if (transit) transit->fetch_add(1, std::memory_order_acq_rel);
    }
    level = l;
  }
  // Under m: takes the pending request; the caller subtracts it from `transit` (if set) once it
  // counts itself busy.
  cancel_request take_request() noexcept {
    cancel_request r{std::exchange(level, cancel_level::none), reason};
    return r;
  }

  // A runtime's core: its efd lives as long as the runtime, so waking it needs no lock.
  bool persistent = false;

  void wake() noexcept;  // under m, or persistent
  // Pushes `msg`; true if nothing was queued before (then the pusher must wake the executor).
  bool push_only(core_message* msg) noexcept {
    if (transit) transit->fetch_add(1, std::memory_order_acq_rel);
    core_message* old = inbox.load(std::memory_order_relaxed);
    do {
      msg->next = old;
    } while (!inbox.compare_exchange_weak(old, msg, std::memory_order_release, std::memory_order_relaxed));
    return old == nullptr;
  }
  // Pushes `msg` and wakes the executor if needed. The caller keeps this object alive (a
  // shared_ptr) and knows the executor is alive or persistent; not under m.
  void push(core_message* msg) noexcept {
    if (!push_only(msg)) return;
    if (persistent) {
      wake();
    } else {
      std::lock_guard<std::mutex> lock(m);
      wake();
    }
  }
  // Everything pushed so far, oldest first.
  core_message* take_all() noexcept {
    core_message* m = inbox.exchange(nullptr, std::memory_order_acquire);
    core_message* fifo = nullptr;
    while (m) {
      core_message* next = m->next;
      m->next = fifo;
      fifo = m;
      m = next;
    }
    return fifo;
  }
  bool inbox_empty() const noexcept { return inbox.load(std::memory_order_acquire) == nullptr; }

 private:
  std::atomic<core_message*> inbox{nullptr};
};

// Tells everyone awaiting remote_handle::cancel() on `st` that its root has finished (once).
void announce_finished(remote_state& st) noexcept;

}  // namespace quell::detail
