// The machinery of run_blocking (quell/blocking.hpp): a pool of threads shared by every core of
// a runtime (or owned by a lone executor), and the job a waiting task lends it.
//
// A job is the awaiter itself: it lives in the waiting coroutine's frame, which cannot end before
// the job's message has come home (the awaiter never gives up a started job), so the pool needs
// no allocation and no reference count. Its states, under the pool's mutex:
//   queued  -> running   a thread took it (from then on a cancel can only request stop)
//   queued  -> dropped   cancelled while queued: unlinked, `fn` never runs
//   running -> done      `fn` returned or threw; the thread then sends the job, as a message,
//                        to the waiter's home core and never touches it again
#pragma once

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <stop_token>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "quell/detail/intrusive_list.hpp"
#include "quell/detail/outcome.hpp"
#include "quell/executor.hpp"

namespace quell::detail {

struct blocking_job : mailbox_waiter {
  enum class phase : unsigned char { idle, queued, running, done, dropped };
  phase state = phase::idle;  // under the pool's mutex
  std::stop_source stop;
  // Runs the function on a pool thread and stores how it ended; never throws.
  void (*invoke)(blocking_job*) noexcept = nullptr;
};

class blocking_pool {
 public:
  static constexpr unsigned default_threads = 64;

  explicit blocking_pool(unsigned max_threads = default_threads) noexcept : max_(max_threads ? max_threads : 1) {}
  // Joins every thread. Called once no job is queued or running (the executor or runtime has
  // ended every task, and a task cannot end while its job is out).
  ~blocking_pool();
  blocking_pool(const blocking_pool&) = delete;
  blocking_pool& operator=(const blocking_pool&) = delete;

  // Queues `job` (its waiter and home are set); starts a thread if none is idle and the bound
  // allows. Throws std::system_error if no thread exists and none can be started.
  void submit(blocking_job& job);
  // Cancels a queued job (true: it will never run) or requests stop of a running one (false:
  // its message will still come).
  bool cancel(blocking_job& job) noexcept;
  void set_max_threads(unsigned n) noexcept;

  // Tests and diagnostics.
  unsigned threads_started() const;
  unsigned idle_threads() const;
  unsigned max_threads() const;

 private:
  void worker() noexcept;

  mutable std::mutex m_;
  std::condition_variable work_;
  node_list queue_;
  std::size_t queued_ = 0;  // jobs in queue_
  std::vector<std::thread> threads_;
  std::size_t idle_ = 0;  // threads waiting for a job (they may not have woken yet)
  unsigned max_;
  bool stopping_ = false;
};

// The pool serving the executor running on this thread (its runtime's, in a runtime).
blocking_pool& current_blocking_pool();

template <class F>
struct blocking_result {
  static constexpr bool takes_token = std::is_invocable_v<F&, std::stop_token>;
  using type =
      typename std::conditional_t<takes_token, std::invoke_result<F&, std::stop_token>, std::invoke_result<F&>>::type;
};

template <class F>
class blocking_awaiter : blocking_job {
  using R = typename blocking_result<F>::type;

 public:
  explicit blocking_awaiter(F fn) : fn_(std::move(fn)) { invoke = &run; }
  blocking_awaiter(blocking_awaiter&& o) : fn_(std::move(o.fn_)) { invoke = &run; }
  blocking_awaiter(const blocking_awaiter&) = delete;

  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    pool_ = &current_blocking_pool();
    this->h = h;
    home = home_core::current();
    try {
      pool_->submit(*this);
    } catch (...) {
      home = home_core();
      throw;
    }
  }
  bool await_cancel(std::coroutine_handle<>) noexcept {
    if (!pool_->cancel(*this)) return false;
    home = home_core();
    return true;
  }
  // Every started job ends with how `fn` ended: completion wins, whatever the request.
  bool await_must_resume() const noexcept { return true; }
  R await_resume() { return result_.take(); }

 private:
  static void run(blocking_job* j) noexcept {
    auto* self = static_cast<blocking_awaiter*>(j);
    try {
      if constexpr (std::is_void_v<R>) {
        call(self);
        self->result_.set_value();
      } else {
        self->result_.set_value(call(self));
      }
    } catch (...) {
      self->result_.set_error(std::current_exception());
    }
  }
  static decltype(auto) call(blocking_awaiter* self) {
    if constexpr (blocking_result<F>::takes_token) {
      return self->fn_(self->stop.get_token());
    } else {
      return self->fn_();
    }
  }

  F fn_;
  blocking_pool* pool_ = nullptr;
  outcome<R> result_;
};

}  // namespace quell::detail
