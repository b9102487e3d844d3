#include "quell/blocking.hpp"

#include <cerrno>
#include <stdexcept>
#include <system_error>

#include "quell/detail/core_group.hpp"
#include "quell/detail/scheduler.hpp"

namespace quell::detail {

void blocking_pool_deleter::operator()(blocking_pool* p) const noexcept { delete p; }

blocking_pool::~blocking_pool() {
  {
    std::lock_guard<std::mutex> lock(m_);
    stopping_ = true;
  }
  work_.notify_all();
  for (auto& t : threads_) t.join();
}

void blocking_pool::submit(blocking_job& job) {
  std::unique_lock<std::mutex> lock(m_);
  // A thread counts as idle until it wakes and takes a job, so several jobs submitted before it
  // wakes must not all count on it: a thread is started whenever the queued jobs outnumber the
  // idle threads (two jobs where one waits for the other would otherwise wait for ever).
  const bool start = queued_ + 1 > idle_ && threads_.size() < max_;
  if (start) threads_.reserve(threads_.size() + 1);  // the one allocation, before the job is linked
  queue_.push_back(&job);
  ++queued_;
  job.state = blocking_job::phase::queued;
  if (!start) {
    lock.unlock();
    work_.notify_one();
    return;
  }
  try {
    threads_.emplace_back([this] { worker(); });
  } catch (...) {
    // Out of threads (EAGAIN): the job waits for one of the existing threads, if any.
    if (!threads_.empty()) return;
    job.unlink();
    --queued_;
    job.state = blocking_job::phase::dropped;
    throw;
  }
}

bool blocking_pool::cancel(blocking_job& job) noexcept {
  {
    std::lock_guard<std::mutex> lock(m_);
    if (job.state == blocking_job::phase::queued) {
      job.unlink();
      --queued_;
      job.state = blocking_job::phase::dropped;
      return true;
    }
  }
  // Running, or done with its message on the way (completion wins either way). The stop request
  // runs the stop callbacks fn registered, here and now: outside the pool's lock, so a slow one
  // stalls only this core, and one that waits for fn cannot deadlock with the worker. The job
  // stays alive meanwhile: its waiter cannot resume before this call has returned.
  job.stop.request_stop();
  return false;
}

void blocking_pool::set_max_threads(unsigned n) noexcept {
  std::lock_guard<std::mutex> lock(m_);
  max_ = n ? n : 1;
}

unsigned blocking_pool::threads_started() const {
  std::lock_guard<std::mutex> lock(m_);
  return static_cast<unsigned>(threads_.size());
}

unsigned blocking_pool::idle_threads() const {
  std::lock_guard<std::mutex> lock(m_);
  return static_cast<unsigned>(idle_);
}

unsigned blocking_pool::max_threads() const {
  std::lock_guard<std::mutex> lock(m_);
  return max_;
}

void blocking_pool::worker() noexcept {
  // Asynchronous signals belong to the thread that watches for them (run_main's signal_set), as on
  // a runtime's cores: a pool thread never takes a process-directed SIGINT.
  block_async_signals();
  std::unique_lock<std::mutex> lock(m_);
  for (;;) {
    ++idle_;
    work_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    --idle_;
    if (queue_.empty()) return;  // stopping, and nothing is left to run
    auto* job = static_cast<blocking_job*>(static_cast<mailbox_waiter*>(queue_.pop_front()));
    --queued_;
    job->state = blocking_job::phase::running;
    lock.unlock();
    job->invoke(job);
    lock.lock();
    job->state = blocking_job::phase::done;
    // From here the job belongs to its home core: once sent, its waiter may resume and free it.
    lock.unlock();
    job->home.send(job);
    lock.lock();
  }
}

blocking_pool& current_blocking_pool() {
  scheduler* s = this_thread().current;
  if (!s || !s->core) throw std::logic_error("quell: run_blocking outside an executor");
  return s->core->blocking();
}

}  // namespace quell::detail
