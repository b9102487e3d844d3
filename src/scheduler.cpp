#include "quell/detail/scheduler.hpp"

#include <cstdio>
#include <exception>
#include <string>

#include "quell/cancellation.hpp"
#include "quell/detail/hooks.hpp"
#include "quell/detail/reactor.hpp"
#include "quell/detail/resume_target.hpp"
#include "quell/task.hpp"

namespace quell {

std::string_view to_string(cancel_kind k) noexcept {
  switch (k) {
    case cancel_kind::requested:
      return "requested";
    case cancel_kind::race_decided:
      return "race decided";
    case cancel_kind::sibling_failed:
      return "sibling failed";
    case cancel_kind::deadline:
      return "deadline";
    case cancel_kind::shutdown:
      return "shutdown";
    case cancel_kind::peer_disconnected:
      return "peer disconnected";
    case cancel_kind::signal:
      return "signal";
  }
  return "unknown";
}

std::string cancel_reason::describe() const {
  std::string s(to_string(kind_));
  if (message_ && !message_->empty()) {
    s += ": ";
    s += *message_;
  }
  return s;
}

namespace detail {

void fatal(const std::string& message) noexcept {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  std::terminate();
}

void resume_target::refuse_destroy(void*) noexcept {
  fatal("quell: an awaitable called destroy() on its waiter's handle; waiters are owned by quell");
}

std::string describe_site(const site& s) {
  return std::string("coroutine `") + s.function + "` at " + s.file + ":" + std::to_string(s.line);
}

void dropped_running_task(const site& where) noexcept {
  fatal("quell: a running task was destroyed before it finished: " + describe_site(where) +
        " was created and started, then dropped. Every started task must be awaited to the end "
        "(by a task, a combinator, a scope or the executor).");
}

scheduler::scheduler(clock_source& clock) noexcept : timers_(clock) {}
scheduler::~scheduler() = default;

reactor& scheduler::make_io() {
  io_ = std::make_unique<reactor>();
  io_->home = this;
  return *io_;
}

void scheduler::grow() {
  const std::size_t cap = ring_.size();
  std::vector<std::coroutine_handle<>> bigger(cap * 2);
  for (std::size_t i = head_; i != tail_; ++i) bigger[i - head_] = ring_[i & mask_];
  tail_ -= head_;
  head_ = 0;
  ring_.swap(bigger);
  mask_ = ring_.size() - 1;
}

namespace {
// The loops below are where trampolined resumptions land, so they count nesting from zero (and
// restore the caller's count): otherwise a loop entered at the depth limit would only re-queue.
class depth_reset {
 public:
  depth_reset() noexcept : saved_(tls.depth) { tls.depth = 0; }
  ~depth_reset() { tls.depth = saved_; }
  depth_reset(const depth_reset&) = delete;
  depth_reset& operator=(const depth_reset&) = delete;

 private:
  int saved_;
};
}  // namespace

void scheduler::drain_queue() {
  if (hooks && hooks->stall) [[unlikely]] {
    drain_queue_observed();
    return;
  }
  depth_reset d;
  while (head_ != tail_) {
    std::coroutine_handle<> h = ring_[head_ & mask_];
    ++head_;
    detail::resume(h);
  }
  head_ = tail_ = 0;
}

// The same, timing each resumption for the stall detector (the stretch a resumed task runs is
// closed by its next event, or here when the resumption returns).
void scheduler::drain_queue_observed() {
  depth_reset d;
  while (head_ != tail_) {
    std::coroutine_handle<> h = ring_[head_ & mask_];
    ++head_;
    hook_hub* const watching = hooks;  // a resumption may install or remove it
    if (watching) watching->slice_begins();
    detail::resume(h);
    if (watching && hooks == watching) watching->slice_ends();
  }
  head_ = tail_ = 0;
}

void scheduler::run_nodes(node_list& batch) {
  depth_reset d;
  while (list_node* n = batch.pop_front()) {
    auto* t = static_cast<turn_node*>(n);
    hook_hub* const watching = hooks && hooks->stall ? hooks : nullptr;
    if (watching) [[unlikely]]
      watching->slice_begins();
    t->run(t);
    if (watching && hooks == watching) [[unlikely]]
      watching->slice_ends();
    drain_ready();
  }
}

namespace {
// A registered task that is suspended now (every task_record in the registry is a task's promise).
bool waiting_now(const list_node* n) noexcept {
  return static_cast<const promise_base*>(static_cast<const task_record*>(n))->waiting();
}
}  // namespace

bool scheduler::has_live_tasks() const noexcept {
  bool any = false;
  live_.for_each([&](const list_node* n) { any = any || waiting_now(n); });
  return any;
}

}  // namespace detail
}  // namespace quell
