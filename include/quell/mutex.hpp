// mutex: mutual exclusion between tasks, FIFO, with a move-only scoped guard.
//
//   quell::mutex m;
//   {
//     quell::mutex::guard g = co_await m.lock();
//     ... // exclusive
//   }  // unlocked here (or g.unlock())
//
// It is a semaphore of one unit, and its guard a permit: the same cancellation rules hold. A task
// cancelled while waiting for the lock takes nothing and the lock goes to the next waiter, also
// when the lock had been handed to it in the same turn but it had not resumed yet. Not recursive: locking again from the task that holds it waits forever
// (and the executor reports it as stuck).
//
// Single-executor, like semaphore.
#pragma once

#include <optional>

#include "quell/semaphore.hpp"

namespace quell {

class mutex {
 public:
  using guard = permit;

  mutex() noexcept = default;
  mutex(const mutex&) = delete;
  mutex& operator=(const mutex&) = delete;

  semaphore::acquire_awaiter lock() noexcept { return sem_.acquire(1); }
  std::optional<guard> try_lock() noexcept { return sem_.try_acquire(1); }
  bool locked() const noexcept { return sem_.available() == 0; }

 private:
  semaphore sem_{1};
};

}  // namespace quell
