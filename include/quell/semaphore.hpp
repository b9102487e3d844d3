// semaphore: counting permits, handed out in strict FIFO order, as move-only RAII `permit`s.
//
//   quell::semaphore sem{4};
//   quell::permit p = co_await sem.acquire();      // or acquire(n)
//   std::optional<quell::permit> q = sem.try_acquire();
//
// A permit releases its units when destroyed (or on release()). It is movable, so the accounting
// can follow the work: move it into a cleanup task or an on_cancel hook, and the units stay taken
// until that cleanup has finished.
//
// acquire(n) for more units than the semaphore was created with fails with std::invalid_argument
// (it could never be granted). Waiters are served first come, first served: a waiter for n units at the head of the
// queue holds back later waiters until n units are free (no starvation of large requests).
//
// Cancellation: a cancelled waiter takes nothing. Cancelled while queued, it leaves the queue
// and the units it was waiting for go to the next waiter. Cancelled after it was granted its
// units but before it resumed (the grant and the cancel in the same turn), it gives the units
// back, to the next waiter, and ends cancelled: a permit is never held by a task that will not
// use it (its async cleanup may take long), nor lost in a race's discarded loser, nor granted
// twice.
//
// Single-executor: a semaphore and all its waiters belong to one executor's thread; there are no
// locks on any path. The semaphore must outlive its permits and waiters.
#pragma once

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "quell/detail/wait_queue.hpp"

namespace quell {

class semaphore;

class [[nodiscard]] permit {
 public:
  permit() noexcept = default;
  permit(permit&& o) noexcept : sem_(std::exchange(o.sem_, nullptr)), units_(std::exchange(o.units_, 0)) {}
  permit& operator=(permit&& o) noexcept {
    if (this != &o) {
      release();
      sem_ = std::exchange(o.sem_, nullptr);
      units_ = std::exchange(o.units_, 0);
    }
    return *this;
  }
  ~permit() { release(); }

  // Gives the units back now (idempotent).
  void release() noexcept;
  std::size_t units() const noexcept { return units_; }
  explicit operator bool() const noexcept { return sem_ != nullptr; }

 private:
  friend class semaphore;
  permit(semaphore* s, std::size_t n) noexcept : sem_(s), units_(n) {}
  semaphore* sem_ = nullptr;
  std::size_t units_ = 0;
};

class semaphore {
 public:
  explicit semaphore(std::size_t units) noexcept : available_(units), total_(units) {}
  semaphore(const semaphore&) = delete;
  semaphore& operator=(const semaphore&) = delete;
  ~semaphore();

  std::size_t available() const noexcept { return available_; }
  std::size_t waiting() const noexcept;

  // A permit for n units now, if no one is queued ahead and n units are free.
  std::optional<permit> try_acquire(std::size_t n = 1) noexcept {
    if (!waiters_.empty() || available_ < n) return std::nullopt;
    available_ -= n;
    return permit(this, n);
  }

  class acquire_awaiter : public detail::queued_waiter {
   public:
    acquire_awaiter(semaphore& s, std::size_t n) noexcept : sem_(s), units_(n) {}
    bool await_ready() {
      if (units_ > sem_.total_) {
        throw std::invalid_argument("quell: semaphore::acquire(" + std::to_string(units_) +
                                    ") asks for more than the " + std::to_string(sem_.total_) +
                                    " units the semaphore has");
      }
      if (sem_.waiters_.empty() && sem_.available_ >= units_) {
        sem_.available_ -= units_;
        mark_granted_without_waiting();
        return true;
      }
      return false;
    }
    void await_suspend(std::coroutine_handle<> h) noexcept { wait_in(sem_.waiters_, h); }
    bool await_cancel(std::coroutine_handle<>) noexcept {
      if (withdraw()) {
        sem_.grant_waiters();  // it may have been holding back smaller requests behind it
        return true;
      }
      gave_back();  // granted, not resumed yet: the units go to the next waiter
      sem_.release(units_);
      return false;
    }
    permit await_resume() noexcept { return permit(&sem_, units_); }
    void describe_wait(detail::wait_note& out) const {
      out.what = "semaphore (" + std::to_string(units_) + " of " + std::to_string(sem_.total_) + ", " +
                 std::to_string(sem_.available_) + " available)";
    }

   private:
    friend class semaphore;
    semaphore& sem_;
    std::size_t units_;
  };

  acquire_awaiter acquire(std::size_t n = 1) noexcept { return acquire_awaiter(*this, n); }

 private:
  friend class permit;
  void release(std::size_t n) noexcept {
    available_ += n;
    grant_waiters();
  }
  void grant_waiters() noexcept;

  std::size_t available_;
  std::size_t total_;
  detail::node_list waiters_;
};

inline void permit::release() noexcept {
  if (semaphore* s = std::exchange(sem_, nullptr)) s->release(std::exchange(units_, 0));
}

}  // namespace quell
