// Metrics: per-executor counters, readable at any time on the executor's thread, and their
// Prometheus text form.
//
//   quell::executor_metrics m = ex.metrics();              // an executor, on its thread
//   auto all = co_await quell::current_metrics();          // from a task: every core of its runtime
//   body = quell::to_prometheus(all);                      // text exposition format 0.0.4
//
// What is counted, per executor (each core of a runtime is one):
//   tasks_alive        tasks started and not finished that have suspended at least once (a task
//                      that never suspends lives inside one resume and is never counted)
//   turns              scheduling turns since the executor was made
//   io_in_flight       I/O operations handed to the kernel and not completed (receive-ahead's
//                      standing receives included)
//   cancels_requested  tasks a cancel request reached (each task once per level)
//   cancels_confirmed  tasks with a request that ended cancelled (the request took effect)
//   cancel_latency     for each confirmed cancel, the time from the request reaching the task to
//                      the task ending cancelled, as a histogram with buckets at 1 us, 10 us,
//                      ..., 1000 s. Times are the executor's clock at each turn's start, so a
//                      cancel confirmed in the turn it was requested counts as 0.
// Counting costs no clock read of its own: requests and confirmations are rare paths, and the turn
// counter is one increment per turn.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "quell/clock.hpp"
#include "quell/task.hpp"

namespace quell {

struct executor_metrics {
  static constexpr std::size_t buckets = 10;  // upper bounds: 1 us, 10 us, ..., 1000 s
  unsigned core = 0;
  std::uint64_t tasks_alive = 0;
  std::uint64_t turns = 0;
  std::uint64_t io_in_flight = 0;
  std::uint64_t cancels_requested = 0;
  std::uint64_t cancels_confirmed = 0;
  // Non-cumulative counts per bucket; the last is "more than 1000 s".
  std::array<std::uint64_t, buckets + 1> cancel_latency{};
  duration cancel_latency_sum{};
  // The upper bound of bucket i (i < buckets).
  static duration bucket_bound(std::size_t i) noexcept;
};

// Prometheus text: quell_tasks_alive, quell_turns_total, quell_io_in_flight,
// quell_cancels_requested_total, quell_cancels_confirmed_total and the histogram
// quell_cancel_latency_seconds, each sample labelled with core="N".
std::string to_prometheus(const std::vector<executor_metrics>& cores);

// Every core's metrics of the calling task's runtime (one entry for a lone executor).
task<std::vector<executor_metrics>> current_metrics();

}  // namespace quell
