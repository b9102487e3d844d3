// A worked example of the leaf protocol (docs/writing-a-leaf.md walks through it): wrapping a
// callback-style backend whose cancellation is itself asynchronous (send "cancel", wait for the
// acknowledgement) as a quell awaitable. Built and run as part of the test suite.
#include <coroutine>
#include <cstdio>
#include <deque>
#include <functional>
#include <string>

#include "quell/quell.hpp"

// --- A backend with a callback API, as a third-party client library would offer -------------
// Jobs finish after a number of ticks; a cancel is acknowledged one tick later, unless the job
// finished first. The backend is driven by `tick()`, called once per executor turn.
class backend {
 public:
  using done_fn = std::function<void(bool finished, int result)>;

  int submit(int ticks, int result, done_fn done) {
    jobs_.push_back(job{next_id_, ticks, result, false, std::move(done)});
    return next_id_++;
  }
  void cancel(int id) {
    for (job& j : jobs_) {
      if (j.id == id) j.cancel_requested = true;
    }
  }
  // Callbacks may resume coroutines that submit new jobs, so work on a detached batch.
  void tick() {
    std::deque<job> batch;
    batch.swap(jobs_);
    for (job& j : batch) {
      if (--j.ticks_left <= 0) {
        j.done(true, j.result);  // finished (even if a cancel was on its way: completion wins)
      } else if (j.cancel_requested) {
        j.done(false, 0);  // cancel acknowledged
      } else {
        jobs_.push_back(std::move(j));
      }
    }
  }
  bool idle() const { return jobs_.empty(); }

 private:
  struct job {
    int id;
    int ticks_left;
    int result;
    bool cancel_requested;
    done_fn done;
  };
  std::deque<job> jobs_;
  int next_id_ = 1;
};

// --- The leaf ---------------------------------------------------------------------------------
class backend_job {
 public:
  backend_job(backend& b, int ticks, int result) : b_(b), ticks_(ticks), result_(result) {}

  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    id_ = b_.submit(ticks_, result_, [this, h](bool finished, int value) {
      finished_ = finished;
      value_ = value;
      h.resume();  // on the executor's thread: tick() runs inside a task
    });
  }
  // Cancel requested before we submitted anything: skip the job entirely.
  bool await_early_cancel() noexcept { return true; }
  // Cancel requested while the job runs: ask the backend, and wait for its answer.
  bool await_cancel(std::coroutine_handle<>) noexcept {
    b_.cancel(id_);
    return false;  // we will resume h when the backend answers
  }
  // Asked whenever h was resumed: did the job produce a value?
  bool await_must_resume() const noexcept { return finished_; }
  int await_resume() const noexcept { return value_; }

 private:
  backend& b_;
  int ticks_;
  int result_;
  int id_ = 0;
  bool finished_ = false;
  int value_ = 0;
};

// --- Using it -----------------------------------------------------------------------------------
quell::task<> drive(backend& b, bool& stop) {
  while (!stop || !b.idle()) {
    b.tick();
    co_await quell::yield();
  }
}

quell::task<int> ticks(int n) {
  for (int i = 0; i < n; ++i) co_await quell::yield();
  co_return -1;
}

int main() {
  backend b;
  bool stop = false;
  int failures = 0;
  auto expect = [&](bool ok, const char* what) {
    std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok) ++failures;
  };

  auto scenario = [&]() -> quell::task<> {
    // 1. The job finishes before the deadline: its value wins.
    const int fast = co_await quell::race(backend_job(b, 2, 10), ticks(5));
    expect(fast == 10, "a job that finishes first delivers its value");

    // 2. The deadline wins: the job is cancelled, and race waits for the backend's ack.
    const int slow = co_await quell::race(backend_job(b, 50, 20), ticks(3));
    expect(slow == -1, "a slow job is cancelled; race returns after the backend acknowledged");
    expect(b.idle(), "the backend holds no job after the cancellation completed");

    stop = true;
  };
  quell::block_on(quell::race(scenario(), drive(b, stop)));

  // 3. Completion wins: the job finishes in the same tick that would have acknowledged the
  //    cancel. The value is delivered, not dropped. (Here the test ticks the backend by hand.)
  {
    quell::executor ex{backend_job(b, 2, 30)};
    ex.poll_once();  // submitted
    b.tick();        // one tick left
    ex.cancel();     // the cancel is sent; the leaf waits for the backend's answer
    expect(!ex.done(), "a cancelled job waits for the backend before it ends");
    b.tick();  // the job finishes instead of acknowledging
    expect(ex.poll_once() && ex.run() == 30, "a job that finished while being cancelled delivers its value");
  }
  return failures == 0 ? 0 : 1;
}
