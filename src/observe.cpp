// Observer hooks, the stall detector, and the cancel counters (quell/observer.hpp,
// quell/metrics.hpp): everything a hook point calls once it has seen thread_state::hooks set, or
// a cancel request reach a task.
#include <liburing.h>

#include <cstdio>
#include <stdexcept>
#include <string>

#include "quell/detail/hooks.hpp"
#include "quell/detail/promise.hpp"
#include "quell/detail/reactor.hpp"
#include "quell/executor.hpp"
#include "quell/observer.hpp"

namespace quell {

std::string to_string(const stall_report& r) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(r.took).count();
  return std::string("quell: stall: `") + r.task.function + "` (" + r.task.file + ":" + std::to_string(r.task.line) +
         ") on core " + std::to_string(r.task.core) + " ran " + std::to_string(ms) +
         " ms without suspending (blocking work belongs in run_blocking)";
}

namespace {
detail::executor_core& current_core(const char* what) {
  detail::scheduler* s = detail::tls.current;
  if (!s || !s->core)
    throw std::logic_error(std::string("quell: ") + what + " must be called on an executor's thread, inside it");
  return *s->core;
}
}  // namespace

void set_observer(observer* o) { current_core("set_observer()").set_observer(o); }

void set_stall_detector(stall_options options) {
  current_core("set_stall_detector()").set_stall_detector(std::move(options));
}

namespace detail {

hook_hub& hooks_of(scheduler& s) {
  if (!s.hub) {
    s.hub = std::make_unique<hook_hub>();
    s.hub->core = s.core_index;
  }
  return *s.hub;
}

void update_hooks(scheduler& s) noexcept {
  s.hooks = s.hub && s.hub->active() ? s.hub.get() : nullptr;
  if (tls.current == &s) tls.hooks = s.hooks;
}

namespace {
// The nearest task above `n` (the task a task runs under).
const task_record* task_above(const context_node* n) noexcept {
  for (; n; n = n->parent) {
    if (n->what == context_node::kind::task) return static_cast<const task_record*>(n);
  }
  return nullptr;
}
}  // namespace

task_ref describe_task(const task_record& t, unsigned core) noexcept {
  task_ref r;
  r.id = &t;
  r.parent = task_above(t.parent);
  r.function = t.where.function;
  r.file = t.where.file;
  r.line = t.where.line;
  r.core = core;
  return r;
}

void hook_hub::emit(const task_ref& t, duration took) noexcept {
  slice_reported = true;
  stall_report r{t, took};
  try {
    if (report) {
      report(r);
    } else {
      const std::string line = to_string(r) + "\n";
      std::fputs(line.c_str(), stderr);
    }
  } catch (...) {  // a report that throws loses that report, not the executor
  }
}

void hook_hub::stretch_ends(const task_record* next) noexcept {
  if (!stall) return;
  const time_point t = clock->now();
  if (has_running && t - mark > threshold) emit(running, t - mark);
  has_running = next != nullptr;
  if (next) {
    running = task_ref{next, nullptr, next->where.function, next->where.file, next->where.line, core};
    if (!has_slice_first) {
      slice_first = running;
      has_slice_first = true;
    }
  }
  mark = t;
}

void hook_hub::slice_begins() noexcept {
  if (!stall) return;
  has_running = has_slice_first = slice_reported = false;
  slice_start = mark = clock->now();
}

void hook_hub::slice_ends() noexcept {
  if (!stall) return;
  stretch_ends(nullptr);
  if (!slice_reported && has_slice_first && mark - slice_start > threshold) emit(slice_first, mark - slice_start);
  has_slice_first = false;
}

namespace {
// While an observer runs, the current context is the task it is told about: what ran before may
// have freed the frame the context named (a finished cleanup, a released scope child), and the
// observer may take a snapshot, which starts from the current context.
class observing {
 public:
  explicit observing(const task_record& t) noexcept : g_(const_cast<task_record*>(&t)) {}

 private:
  context_guard g_;
};
}  // namespace

void hook_task(hook_event e, const task_record& t) noexcept {
  hook_hub* h = tls.hooks;
  if (!h) return;
  const auto& p = static_cast<const promise_base&>(t);
  switch (e) {
    case hook_event::started:
    case hook_event::resumed:
      h->stretch_ends(&t);
      break;
    case hook_event::suspended:
      h->stretch_ends(nullptr);
      break;
    case hook_event::finished:
      h->stretch_ends(task_above(t.parent));
      break;
    default:
      break;
  }
  observer* o = h->user;
  if (!o) return;
  observing guard(t);
  const task_ref r = describe_task(t, h->core);
  switch (e) {
    case hook_event::spawned:
      o->on_spawn(r);
      break;
    case hook_event::started:
      o->on_start(r);
      break;
    case hook_event::suspended:
      o->on_suspend(r);
      break;
    case hook_event::resumed:
      o->on_resume(r);
      break;
    case hook_event::cleanup_begin:
      o->on_cleanup_begin(r);
      break;
    case hook_event::cleanup_end:
      o->on_cleanup_end(r);
      break;
    case hook_event::finished:
      o->on_finish(r, p.ended_cancelled);
      break;
  }
}

void hook_yield(const task_record& producer, const context_node* consumer) noexcept {
  hook_hub* h = tls.hooks;
  if (!h) return;
  h->stretch_ends(task_above(consumer));  // the consumer's code runs on
  if (observer* o = h->user) {
    observing guard(producer);
    o->on_suspend(describe_task(producer, h->core));
  }
}

void hooks_started(const task_record& t) noexcept {
  hook_task(hook_event::spawned, t);
  hook_task(hook_event::started, t);
}

void hook_cancel_requested(const task_record& t) noexcept {
  if (hook_hub* h = tls.hooks; h && h->user) {
    observing guard(t);
    h->user->on_cancel_requested(describe_task(t, h->core), t.request);
  }
}

void scheduler::note_latency(duration d) noexcept {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
  const std::uint64_t v = static_cast<std::uint64_t>(ns);
  counters.latency_sum_ns += v;
  std::size_t i = 0;
  for (std::uint64_t bound = 1000; i + 1 < scheduler_counters::latency_buckets && v > bound; bound *= 10) ++i;
  ++counters.latency[i];
}

namespace {
std::string_view opcode_name(unsigned op) noexcept {
  switch (op) {
    case IORING_OP_READ:
    case IORING_OP_READV:
    case IORING_OP_READ_FIXED:
      return "read";
    case IORING_OP_WRITE:
    case IORING_OP_WRITEV:
    case IORING_OP_WRITE_FIXED:
      return "write";
    case IORING_OP_RECV:
    case IORING_OP_RECVMSG:
      return "recv";
    case IORING_OP_SEND:
    case IORING_OP_SENDMSG:
      return "send";
    case IORING_OP_ACCEPT:
      return "accept";
    case IORING_OP_CONNECT:
      return "connect";
    case IORING_OP_POLL_ADD:
      return "poll";
    case IORING_OP_CLOSE:
      return "close";
    case IORING_OP_TIMEOUT:
      return "timeout";
    case IORING_OP_OPENAT:
      return "open";
    case IORING_OP_FSYNC:
      return "fsync";
    case IORING_OP_SHUTDOWN:
      return "shutdown";
    case IORING_OP_MSG_RING:
      return "msg_ring";
    default:
      return "io";
  }
}
}  // namespace

void hook_io_submit(io_op& op, unsigned opcode, int fd) noexcept {
  op.opcode = static_cast<std::uint8_t>(opcode);
  hook_hub* h = tls.hooks;
  if (!h || !h->user) return;
  h->user->on_io_submit(io_ref{&op, fd, opcode_name(opcode)});
}

void hook_io_complete(const io_op& op, int result) noexcept {
  hook_hub* h = tls.hooks;
  if (!h || !h->user) return;
  h->user->on_io_complete(io_ref{&op, op.object ? op.object->fd : -1, opcode_name(op.opcode)}, result);
}

}  // namespace detail
}  // namespace quell
