// Per-executor metrics (quell/metrics.hpp) and the executor's side of quell/observer.hpp.
#include "quell/metrics.hpp"

#include <cstdio>

#include "quell/detail/hooks.hpp"
#include "quell/detail/promise.hpp"
#include "quell/detail/reactor.hpp"
#include "quell/executor.hpp"
#include "quell/leaves.hpp"
#include "quell/runtime.hpp"

namespace quell {

namespace detail {

executor_metrics metrics_of(const scheduler& s) {
  executor_metrics m;
  m.core = s.core_index;
  s.for_each_registered([&](const task_record* t) {
    if (static_cast<const promise_base*>(t)->state == promise_base::phase::running) ++m.tasks_alive;
  });
  const scheduler_counters& c = s.counters;
  m.turns = c.turns;
  if (const reactor* r = s.io_if_any()) m.io_in_flight = r->in_flight() + r->background_in_flight() - r->parked;
  m.cancels_requested = c.cancels_requested;
  m.cancels_confirmed = c.cancels_confirmed;
  static_assert(executor_metrics::buckets + 1 == scheduler_counters::latency_buckets);
  for (std::size_t i = 0; i < c.latency.size(); ++i) m.cancel_latency[i] = c.latency[i];
  m.cancel_latency_sum = std::chrono::nanoseconds(c.latency_sum_ns);
  return m;
}

executor_metrics executor_core::metrics() const { return metrics_of(sched_); }

void executor_core::set_observer(observer* o) {
  hooks_of(sched_).user = o;
  update_hooks(sched_);
}

void executor_core::set_stall_detector(stall_options o) {
  hook_hub& h = hooks_of(sched_);
  h.stall = o.enabled;
  h.stall_set = true;
  h.threshold = o.threshold;
  h.clock = o.clock ? o.clock : &steady_clock_source::instance();
  h.report = std::move(o.report);
  h.has_running = false;
  update_hooks(sched_);
}

}  // namespace detail

duration executor_metrics::bucket_bound(std::size_t i) noexcept {
  duration d = std::chrono::microseconds(1);
  for (std::size_t k = 0; k < i; ++k) d *= 10;
  return d;
}

namespace {
std::string seconds_text(duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", std::chrono::duration<double>(d).count());
  return buf;
}
}  // namespace

std::string to_prometheus(const std::vector<executor_metrics>& cores) {
  std::string out;
  auto gauge = [&](const char* name, const char* type, const char* help, auto get) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    for (const executor_metrics& m : cores) {
      out += std::string(name) + "{core=\"" + std::to_string(m.core) + "\"} " + std::to_string(get(m)) + "\n";
    }
  };
  gauge("quell_tasks_alive", "gauge", "Tasks started, not finished, that have suspended at least once.",
        [](const executor_metrics& m) { return m.tasks_alive; });
  gauge("quell_turns_total", "counter", "Scheduling turns.", [](const executor_metrics& m) { return m.turns; });
  gauge("quell_io_in_flight", "gauge", "I/O operations in the kernel.",
        [](const executor_metrics& m) { return m.io_in_flight; });
  gauge("quell_cancels_requested_total", "counter", "Tasks a cancel request reached (once per level).",
        [](const executor_metrics& m) { return m.cancels_requested; });
  gauge("quell_cancels_confirmed_total", "counter", "Tasks with a request that ended cancelled.",
        [](const executor_metrics& m) { return m.cancels_confirmed; });
  const char* h = "quell_cancel_latency_seconds";
  out += std::string("# HELP ") + h + " From a cancel request reaching a task to the task ending cancelled.\n";
  out += std::string("# TYPE ") + h + " histogram\n";
  for (const executor_metrics& m : cores) {
    const std::string core = "core=\"" + std::to_string(m.core) + "\"";
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < executor_metrics::buckets; ++i) {
      cumulative += m.cancel_latency[i];
      out += std::string(h) + "_bucket{" + core + ",le=\"" + seconds_text(executor_metrics::bucket_bound(i)) + "\"} " +
             std::to_string(cumulative) + "\n";
    }
    cumulative += m.cancel_latency[executor_metrics::buckets];
    out += std::string(h) + "_bucket{" + core + ",le=\"+Inf\"} " + std::to_string(cumulative) + "\n";
    out += std::string(h) + "_sum{" + core + "} " + seconds_text(m.cancel_latency_sum) + "\n";
    out += std::string(h) + "_count{" + core + "} " + std::to_string(cumulative) + "\n";
  }
  return out;
}

task<std::vector<executor_metrics>> current_metrics() {
  auto here = [] { return ready(detail::metrics_of(*detail::tls.current)); };
  co_return co_await on_each_core(here);
}

}  // namespace quell
