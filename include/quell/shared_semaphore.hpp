// shared_semaphore: a permit pool shared by every core of a runtime (or any executors on any
// threads), handed out in strict FIFO order as move-only RAII `shared_permit`s.
//
//   quell::shared_semaphore backend_slots{64};                  // outlives the runtime's run
//   quell::shared_permit p = co_await backend_slots.acquire();  // from a task on any core
//
// The same contract as `semaphore` (quell/semaphore.hpp), across threads:
//   - a waiter is granted in the order it queued, whatever its core; a waiter for n units at
//     the head holds back later ones until n are free;
//   - a permit may be moved anywhere, to another core included, and released there (or by its
//     destructor); the units go to the next waiter, whose own core resumes it;
//   - a cancelled waiter takes nothing. Cancelled while queued, it leaves the queue (synchronously)
//     and what it was waiting for goes to the next waiter. If a release on another core granted it
//     its units while the cancel was on its way (the grant and the cancel crossed), it gives the
//     units back, to the next waiter, and ends cancelled: the units are never lost, never granted
//     twice and never held by a task that will not use them;
//   - acquire(n) for more units than the semaphore has fails with std::invalid_argument.
//
// Who resumes whom: a release grants under the semaphore's lock and then sends each granted
// waiter a message to its own core (the cross-core mailbox); that core resumes it. Only grants
// and releases take the lock; a task on one core never runs on another.
//
// The semaphore must outlive its permits and waiters; destroying it with waiters is a fatal
// error. Outside a runtime a waiting task keeps its executor awake (a remote_handle's worth):
// another thread may release.
#pragma once

#include <coroutine>
#include <cstddef>
#include <mutex>
#include <optional>
#include <utility>

#include "quell/detail/intrusive_list.hpp"
#include "quell/executor.hpp"

namespace quell {

class shared_semaphore;

class [[nodiscard]] shared_permit {
 public:
  shared_permit() noexcept = default;
  shared_permit(shared_permit&& o) noexcept
      : sem_(std::exchange(o.sem_, nullptr)), units_(std::exchange(o.units_, 0)) {}
  shared_permit& operator=(shared_permit&& o) noexcept {
    if (this != &o) {
      release();
      sem_ = std::exchange(o.sem_, nullptr);
      units_ = std::exchange(o.units_, 0);
    }
    return *this;
  }
  ~shared_permit() { release(); }

  // Gives the units back now, from any thread (idempotent).
  void release() noexcept;
  std::size_t units() const noexcept { return units_; }
  explicit operator bool() const noexcept { return sem_ != nullptr; }

 private:
  friend class shared_semaphore;
  shared_permit(shared_semaphore* s, std::size_t n) noexcept : sem_(s), units_(n) {}
  shared_semaphore* sem_ = nullptr;
  std::size_t units_ = 0;
};

class shared_semaphore {
 public:
  explicit shared_semaphore(std::size_t units) noexcept : available_(units), total_(units) {}
  shared_semaphore(const shared_semaphore&) = delete;
  shared_semaphore& operator=(const shared_semaphore&) = delete;
  ~shared_semaphore();

  std::size_t available() const;
  std::size_t waiting() const;

  // A permit for n units now, if no one is queued ahead and n units are free.
  std::optional<shared_permit> try_acquire(std::size_t n = 1);

  class acquire_awaiter {
   public:
    acquire_awaiter(shared_semaphore& s, std::size_t n) noexcept : sem_(s) { w_.units = n; }
    acquire_awaiter(acquire_awaiter&& o) noexcept : sem_(o.sem_) { w_.units = o.w_.units; }  // before it waits

    bool await_ready();
    bool await_suspend(std::coroutine_handle<> h);
    bool await_cancel(std::coroutine_handle<>) noexcept;
    bool await_must_resume() const noexcept { return w_.granted && !w_.returned; }
    shared_permit await_resume() noexcept { return shared_permit(&sem_, w_.units); }
    void describe_wait(detail::wait_note& out) const {
      out.what = "shared_semaphore (" + std::to_string(w_.units) + " units)";
    }

   private:
    friend class shared_semaphore;
    shared_semaphore& sem_;
    struct waiter : detail::mailbox_waiter {
      std::size_t units = 0;
      bool granted = false;     // under the semaphore's lock
      bool returned = false;    // the waiter's own core: a crossed grant was given back
      waiter* chain = nullptr;  // granted under the lock, woken after it
    } w_;
  };

  acquire_awaiter acquire(std::size_t n = 1) noexcept { return acquire_awaiter(*this, n); }

 private:
  friend class shared_permit;
  using waiter = acquire_awaiter::waiter;
  void release(std::size_t n) noexcept;
  // Under m_: grants what can be granted; returns the granted waiters, to wake once unlocked.
  waiter* grant_locked() noexcept;
  static void wake_all(waiter* granted) noexcept;
  void check_units(std::size_t n) const;

  mutable std::mutex m_;
  std::size_t available_;
  std::size_t total_;
  detail::node_list waiters_;
};

inline void shared_permit::release() noexcept {
  if (shared_semaphore* s = std::exchange(sem_, nullptr)) s->release(std::exchange(units_, 0));
}

}  // namespace quell
