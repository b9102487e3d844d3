// quell/testing.hpp: the tools quell uses to prove its cancellation correct, for testing your code
// the same way.
//
// cancel_sweep(make, check): runs a scenario once to count its suspension points N, then runs it
// again N times with a graceful cancel of the root at the k-th suspension point (k = 1..N), and N
// more times with a forced one. Every run uses a fresh executor on a fresh virtual clock (time
// moves only when everything is blocked, so runs are deterministic and instant). After each run it
// checks that the executor finished (no stuck task; a stuck run fails the sweep with the list of
// waiting tasks and where they were created), that no task is left, and then calls
// check(point), the scenario's own invariant (e.g. a ledger is balanced, a semaphore has all its
// permits back, hooks ran in the documented order). A throwing check fails the sweep with a
// message naming the run ("graceful cancel at suspension point 3 of 7: ...").
//
//   quell::testing::ledger held;
//   auto report = quell::testing::cancel_sweep(
//       [&](quell::virtual_clock&) { held.reset(); return my_scenario(held); },
//       [&](const quell::testing::sweep_point& p) { held.expect_balanced(); });
//
// "The k-th suspension point" is the k-th time any task of the executor suspends on an awaitable;
// the cancel is delivered right after that task has suspended (from the run queue, within the
// same turn). Memory leaks are left to LeakSanitizer (run the sweep in an ASan build).
//
// Completion windows (on by default): the reference run also counts completions M, the times a
// leaf's result became known and its waiter's resumption was queued (an I/O operation reaped, a
// semaphore, mutex, event or channel wait granted, a timer fired). The sweep then runs the
// scenario M more times per level with the cancel delivered *in* the k-th window: after the
// result is known, before the waiter has seen it. That is where a leaf that reports "completed
// anyway" for a result a combinator then discards loses data; an invariant that counts what was
// produced against what was consumed catches it.
//
// ledger: records what a scenario acquires and releases (permits, connections, "cleanup ran"),
// and fails if something is released twice, released without being held, or still held.
//
// Forced runs cancel running cleanups at their next suspension point (that is what forced
// means), so an invariant that holds under both levels checks that each cleanup *started* exactly
// once (release the job as its first statement) and that its frame *ended* (a ledger::hold local),
// rather than that it reached its last line.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "quell/cancellation.hpp"
#include "quell/clock.hpp"
#include "quell/task.hpp"

namespace quell::testing {

struct sweep_point {
  enum class ended : std::uint8_t { value, error, cancelled };

  std::uint64_t at = 0;  // 0: the reference run, not cancelled
  std::uint64_t of = 0;  // suspension points (or completions) of the reference run
  bool window = false;   // `at` counts completion windows, not suspension points
  cancel_level level = cancel_level::none;
  ended outcome = ended::value;
  std::exception_ptr error;  // when outcome == error

  // "reference run", "forced cancel at suspension point 3 of 7", or "graceful cancel in
  // completion window 2 of 5"
  std::string describe() const;
};

struct sweep_report {
  std::uint64_t points = 0;       // suspension points of the reference run
  std::uint64_t completions = 0;  // completion windows of the reference run
  std::uint64_t runs = 0;         // runs made, the reference included
};

class sweep_failure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct sweep_options {
  bool graceful = true;
  bool forced = true;
  bool completion_windows = true;  // also cancel in each completion window (see above)
  duration io_grace = duration::zero();  // see virtual_clock::set_io_grace (real sockets in the scenario)
};

// `make` is called once per run and returns the scenario's root task; `check` is its invariant.
sweep_report cancel_sweep(const std::function<task<>(virtual_clock&)>& make,
                          const std::function<void(const sweep_point&)>& check, sweep_options options = {});

// The same over a scenario that crosses cores: each run is a runtime of `cores` cores in lockstep
// (runtime_options::one_thread) on the run's virtual clock, so the suspension points and
// completion windows of every core are counted in one deterministic order, and the cancel is
// delivered to the root on core 0 from whichever core reached the chosen point. After each run no
// task may be left on any core. The scenario uses on(), on_each_core and shared_semaphore as in a
// threaded runtime.
sweep_report cancel_sweep(unsigned cores, const std::function<task<>(virtual_clock&)>& make,
                          const std::function<void(const sweep_point&)>& check, sweep_options options = {});

class ledger {
 public:
  void acquire(const std::string& what);
  void release(const std::string& what);

  // acquire() now, release() when destroyed: e.g. a local of a cleanup coroutine, released
  // whether the cleanup finishes or is cancelled part-way (forced), when its frame goes.
  class hold {
   public:
    hold(ledger& l, std::string what) : l_(&l), what_(std::move(what)) { l_->acquire(what_); }
    hold(hold&& o) noexcept : l_(std::exchange(o.l_, nullptr)), what_(std::move(o.what_)) {}
    hold& operator=(hold&&) = delete;
    ~hold() {
      if (l_) l_->release(what_);
    }

   private:
    ledger* l_;
    std::string what_;
  };

  std::size_t held() const noexcept { return held_.size(); }
  // Throws std::logic_error listing what is still held and every bad release.
  void expect_balanced() const;
  void reset() noexcept {
    held_.clear();
    problems_.clear();
  }

 private:
  std::map<std::string, int> held_;
  std::vector<std::string> problems_;
};

}  // namespace quell::testing
