// The executor's run queue and the bounded-depth resume that every resumption goes through.
//
// quell resumes coroutines by plain calls and counts how deeply such calls nest on this thread;
// past QUELL_MAX_RESUME_DEPTH the resumption is queued instead and runs when the stack has
// unwound to the executor loop (a trampoline). This keeps the stack bounded for chains of any
// length without relying on symmetric transfer being compiled as a tail call, which g++ 12 does
// not do at -O0/-Og/-O1 or under ASan.
#pragma once

#include <array>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "quell/cancellation.hpp"
#include "quell/detail/cancel_context.hpp"
#include "quell/detail/config.hpp"
#include "quell/detail/intrusive_list.hpp"
#include "quell/detail/site.hpp"
#include "quell/detail/timer_queue.hpp"

namespace quell::detail {

class scheduler;
class reactor;
class executor_core;
struct hook_hub;
struct task_record;
struct io_op;

struct thread_state {
  scheduler* current = nullptr;
  int depth = 0;
  context_node* context = nullptr;  // the cancel context of the code running now (cancel_context.hpp)
  // The current executor's observer and stall detector (quell/observer.hpp); null when it has
  // none, so every hook point costs one load and a predicted branch.
  hook_hub* hooks = nullptr;
};
// Constant-initialised, so every access is a plain thread-local load (no init guard).
constinit inline thread_local thread_state tls{};
inline thread_state& this_thread() noexcept { return tls; }

// Work that runs at the start of the next turn (yield, poll_fn). Unlinking a node cancels it.
struct turn_node : list_node {
  void (*run)(turn_node*) noexcept = nullptr;
};

// What the scheduler knows about a started, unfinished task (the task tree, "stuck" reports).
struct task_record : list_node, context_node {
  task_record() noexcept : context_node(kind::task) {}
  site where;
  cancel_request request{cancel_level::none, {}};  // what reached the task; none = nothing yet
  time_point requested_at = time_point::min();     // when it did (the turn's time; min: unknown)
};

// The events an observer is told of (quell/observer.hpp), dispatched out of line.
enum class hook_event : std::uint8_t {
  spawned,
  started,
  suspended,
  resumed,
  cleanup_begin,
  cleanup_end,
  finished,
};
QUELL_COLD void hook_task(hook_event e, const task_record& t) noexcept;
// A task's owner starts it, and its body runs at once: spawned, then started (one check on the
// path every task start takes: W1 measures it).
QUELL_COLD void hooks_started(const task_record& t) noexcept;
// A generator's producer suspended at co_yield; `consumer` is the context its next() ran in.
QUELL_COLD void hook_yield(const task_record& producer, const context_node* consumer) noexcept;
QUELL_COLD void hook_io_submit(io_op& op, unsigned opcode, int fd) noexcept;
QUELL_COLD void hook_io_complete(const io_op& op, int result) noexcept;
// A request reached a running task (first, or made forced): the observer is told.
QUELL_COLD void hook_cancel_requested(const task_record& t) noexcept;

// Per-executor counters (quell/metrics.hpp reads them). Each is written by its own core only.
struct scheduler_counters {
  static constexpr std::size_t latency_buckets = 11;  // <= 1us, 10us, ..., 1000s, more
  std::uint64_t turns = 0;
  std::uint64_t cancels_requested = 0;
  std::uint64_t cancels_confirmed = 0;
  std::array<std::uint64_t, latency_buckets> latency{};
  std::uint64_t latency_sum_ns = 0;
};

class scheduler {
 public:
  explicit scheduler(clock_source& clock) noexcept;
  ~scheduler();
  scheduler(const scheduler&) = delete;
  scheduler& operator=(const scheduler&) = delete;

  // Runs `h` later in the current turn (FIFO). Inline: every I/O completion passes here.
  void post(std::coroutine_handle<> h) {
    if (tail_ - head_ > mask_) [[unlikely]]
      grow();
    ring_[tail_ & mask_] = h;
    ++tail_;
  }
  // Runs `n` in the next turn.
  void run_next_turn(turn_node* n) noexcept { next_turn_.push_back(n); }

  void take_next_turn(node_list& out) noexcept { out.splice(next_turn_); }
  // Both are called several times per turn, mostly with nothing to do: that check is inline.
  void run_batch(node_list& batch) {
    if (!batch.empty()) run_nodes(batch);
  }
  void drain_ready() {
    if (head_ != tail_) drain_queue();
  }

  bool has_work() const noexcept { return head_ != tail_ || !next_turn_.empty(); }

  // A turn begins: counted, and the turn's time is read again when first needed.
  void new_turn() noexcept {
    ++counters.turns;
    now_known_ = false;
  }
  // The time of this turn (read from the clock once per turn, on first use): what a cancel
  // request's age is measured from. Reading the clock at each request cost W3 (100,000 requests
  // in one turn) a clock read per task.
  time_point turn_now() noexcept {
    if (!now_known_) {
      now_ = timers_.clock().now();
      now_known_ = true;
    }
    return now_;
  }
  // A cancel request first reached a task (metrics.hpp): counted, and stamped with the turn's time.
  void note_request(time_point& stamp) noexcept {
    ++counters.cancels_requested;
    stamp = turn_now();
  }
  // A task whose request was counted ended cancelled: confirmed, its latency in the histogram.
  // Inline up to the common case, a cancel confirmed within its turn (W3 confirms 100,000).
  void note_confirmed(time_point stamp) noexcept {
    ++counters.cancels_confirmed;
    const duration d = turn_now() - stamp;
    if (d <= std::chrono::microseconds(1)) [[likely]] {
      ++counters.latency[0];
      counters.latency_sum_ns += d > duration::zero() ? static_cast<std::uint64_t>(d.count()) : 0;
      return;
    }
    note_latency(d);
  }
  QUELL_COLD void note_latency(duration d) noexcept;
  scheduler_counters counters;
  hook_hub* hooks = nullptr;      // what thread_state::hooks is while this executor runs (null: none)
  std::unique_ptr<hook_hub> hub;  // created by the first set_observer / set_stall_detector

  timer_queue& timers() noexcept { return timers_; }
  const timer_queue& timers() const noexcept { return timers_; }

  // The io_uring reactor, created on first use (throws std::system_error if unavailable).
  reactor& io() {
    if (reactor* r = io_.get()) [[likely]]
      return *r;
    return make_io();
  }
  bool has_io() const noexcept { return io_ != nullptr; }
  reactor* io_if_any() const noexcept { return io_.get(); }

  // Every suspension of a task passes here (promise_base::park). A task joins the registry at its
  // first suspension and leaves it when its frame is destroyed, not at every resumption, so a
  // task that suspends once per I/O operation does no list work per operation (unlinking writes
  // to both neighbours, other tasks' frames). Whether a registered task is waiting right now is
  // read from the task itself when a report is made. This relies on a frame being destroyed on
  // its executor's thread, which holds for every started task (each is owned inside that
  // executor's tree).
  void track(task_record& t) noexcept {
    if (!t.linked()) live_.push_back(&t);
    if (probe) [[unlikely]]
      probe_hit();
  }
  // Whether a task is suspended on something (tests: nothing may be left once the root ended).
  bool has_live_tasks() const noexcept;

  // Tests only (quell/testing.hpp): counts suspension points; at the `fire_at`-th one, `action`
  // is queued to run right after the code that suspended has returned to the executor. It also
  // counts completions (an I/O operation's result reaped, a wait granted, a timer fired: every
  // leaf that queues its waiter's resumption once its result is known, through post_completed);
  // at the `fire_at_completion`-th one, `action` is queued *in front of* that resumption, so it
  // runs in the completion window: the result is known, the waiter has not seen it yet.
  struct suspension_probe {
    std::uint64_t count = 0;
    std::uint64_t fire_at = 0;  // 0: never
    std::uint64_t completions = 0;
    std::uint64_t fire_at_completion = 0;  // 0: never
    std::coroutine_handle<> action;
  };
  suspension_probe* probe = nullptr;

  // Queues the resumption of a waiter whose operation has just produced its result.
  void post_completed(std::coroutine_handle<> h) {
    if (probe) [[unlikely]]
      probe_completion();
    post(h);
  }

  executor_core* core = nullptr;  // the executor this scheduler belongs to
  unsigned core_index = 0;        // its index in a runtime (0 for an executor)

  // The registry of tasks that suspended at least once and whose frames are alive (the task
  // tree walks it). `f` is called with each task_record.
  template <class F>
  void for_each_registered(F&& f) const {
    live_.for_each([&](const list_node* n) { f(static_cast<const task_record*>(n)); });
  }

 private:
  reactor& make_io();
  void probe_hit() noexcept {
    if (++probe->count == probe->fire_at) post(probe->action);
  }
  void probe_completion() noexcept {
    if (++probe->completions == probe->fire_at_completion) post(probe->action);
  }

  void grow();
  void run_nodes(node_list& batch);
  void drain_queue();
  void drain_queue_observed();

  std::vector<std::coroutine_handle<>> ring_ = std::vector<std::coroutine_handle<>>(64);
  std::size_t mask_ = 63;  // ring_.size() - 1 (a power of two)
  std::size_t head_ = 0;   // next to run
  std::size_t tail_ = 0;   // next free; empty when head_ == tail_
  node_list next_turn_;
  node_list live_;
  timer_queue timers_;
  std::unique_ptr<reactor> io_;
  time_point now_{};
  bool now_known_ = false;
};

// Resumes `h` now if the stack has room, else queues it on the current executor.
QUELL_HOT void resume(std::coroutine_handle<> h) {
  thread_state& t = this_thread();
  if (t.depth < QUELL_MAX_RESUME_DEPTH || t.current == nullptr) {
    context_node* const saved = t.context;  // a body that runs and suspends must not leave its node behind
    ++t.depth;
    h.resume();
    --t.depth;
    t.context = saved;
  } else {
    t.current->post(h);
  }
}

// Queues `h` on the current executor (or resumes it now if there is none).
inline void post(std::coroutine_handle<> h) {
  thread_state& t = this_thread();
  if (t.current) {
    t.current->post(h);
  } else {
    resume(h);
  }
}

// The same, for a waiter whose operation has just produced its result (see post_completed).
inline void post_completed(std::coroutine_handle<> h) {
  thread_state& t = this_thread();
  if (t.current) {
    t.current->post_completed(h);
  } else {
    resume(h);
  }
}

[[noreturn]] void fatal(const std::string& message) noexcept;

inline context_guard::context_guard(context_node* n) noexcept : saved_(std::exchange(tls.context, n)) {}
inline context_guard::~context_guard() { tls.context = saved_; }

}  // namespace quell::detail
