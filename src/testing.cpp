#include "quell/testing.hpp"

#include "quell/errors.hpp"
#include "quell/executor.hpp"
#include "quell/runtime.hpp"
#include "quell/time.hpp"

namespace quell::testing {

std::string sweep_point::describe() const {
  if (at == 0) return "reference run";
  return std::string(level == cancel_level::forced ? "forced" : "graceful") +
         (window ? " cancel in completion window " : " cancel at suspension point ") + std::to_string(at) + " of " +
         std::to_string(of);
}

namespace {

// Queued by the scheduler's probe at the chosen suspension point: cancels the root.
struct canceller : detail::resume_target {
  detail::executor_core* core = nullptr;
  cancel_level level = cancel_level::graceful;
  canceller() noexcept : resume_target(&fire) {}
  static void fire(void* p) noexcept {
    auto* self = static_cast<canceller*>(static_cast<resume_target*>(p));
    self->core->cancel(self->level, cancel_reason(cancel_kind::requested, "cancel_sweep"));
  }
};

void run_check(const std::function<void(const sweep_point&)>& check, const sweep_point& point) {
  try {
    check(point);
  } catch (const sweep_failure&) {
    throw;
  } catch (const std::exception& e) {
    throw sweep_failure(point.describe() + ": " + e.what());
  } catch (...) {
    throw sweep_failure(point.describe() + ": the check threw a non-standard exception");
  }
}

// Runs the root to its end, recording how it ended in `point`.
template <class Run>
void record_end(sweep_point& point, Run&& run) {
  try {
    run();
    point.outcome = sweep_point::ended::value;
  } catch (const cancelled_error&) {
    point.outcome = sweep_point::ended::cancelled;
  } catch (const stuck_error& e) {
    throw sweep_failure(point.describe() + ": the executor is stuck: " + e.what());
  } catch (...) {
    point.outcome = sweep_point::ended::error;
    point.error = std::current_exception();
  }
}

// Returns the run's probe: how many suspension points and completions it had. `cores` == 0: a
// plain executor; otherwise a lockstep runtime of that many cores sharing one probe.
detail::scheduler::suspension_probe run_once(unsigned cores, const std::function<task<>(virtual_clock&)>& make,
                                             const std::function<void(const sweep_point&)>& check, sweep_point point,
                                             const sweep_options& options) {
  virtual_clock clock;
  clock.set_io_grace(options.io_grace);
  detail::scheduler::suspension_probe probe;
  canceller c;
  c.level = point.level;
  (point.window ? probe.fire_at_completion : probe.fire_at) = point.at;
  probe.action = c.handle();
  if (cores == 0) {
    executor<void> ex{make(clock), clock};
    c.core = &ex.core();
    ex.core().sched().probe = &probe;
    record_end(point, [&] { ex.run(); });
    if (ex.core().sched().has_live_tasks()) {
      throw sweep_failure(point.describe() + ": tasks are left after the root finished:\n" +
                          ex.core().task_tree().to_string());
    }
    ex.core().sched().probe = nullptr;
  } else {
    runtime rt{runtime_options{.cores = cores, .one_thread = true, .clock = &clock}};
    detail::core_group* group = nullptr;
    auto setup = [&](detail::executor_core& core0) {
      c.core = &core0;
      group = core0.group();
      for (auto& slot : group->cores) slot.load()->sched().probe = &probe;
    };
    record_end(point, [&] { rt.run_with(make(clock), setup); });
    for (unsigned i = 1; i < cores; ++i) {
      detail::executor_core* core = group->cores[i].load();
      core->sched().probe = nullptr;
      if (core->sched().has_live_tasks()) {
        throw sweep_failure(point.describe() + ": tasks are left on core " + std::to_string(i) +
                            " after the root finished:\n" + core->task_tree().to_string());
      }
    }
  }
  run_check(check, point);
  return probe;
}

sweep_report sweep(unsigned cores, const std::function<task<>(virtual_clock&)>& make,
                   const std::function<void(const sweep_point&)>& check, sweep_options options) {
  sweep_report report;
  sweep_point reference;
  const auto counted = run_once(cores, make, check, reference, options);
  report.points = counted.count;
  report.completions = options.completion_windows ? counted.completions : 0;
  report.runs = 1;
  for (bool window : {false, true}) {
    const std::uint64_t of = window ? report.completions : report.points;
    for (cancel_level level : {cancel_level::graceful, cancel_level::forced}) {
      if ((level == cancel_level::graceful && !options.graceful) ||
          (level == cancel_level::forced && !options.forced)) {
        continue;
      }
      for (std::uint64_t k = 1; k <= of; ++k) {
        sweep_point p;
        p.at = k;
        p.of = of;
        p.window = window;
        p.level = level;
        run_once(cores, make, check, p, options);
        ++report.runs;
      }
    }
  }
  return report;
}

}  // namespace

sweep_report cancel_sweep(const std::function<task<>(virtual_clock&)>& make,
                          const std::function<void(const sweep_point&)>& check, sweep_options options) {
  return sweep(0, make, check, options);
}

sweep_report cancel_sweep(unsigned cores, const std::function<task<>(virtual_clock&)>& make,
                          const std::function<void(const sweep_point&)>& check, sweep_options options) {
  if (cores == 0) throw std::invalid_argument("quell: cancel_sweep over 0 cores");
  return sweep(cores, make, check, options);
}

void ledger::acquire(const std::string& what) {
  if (++held_[what] > 1) problems_.push_back("acquired twice without a release: " + what);
}

void ledger::release(const std::string& what) {
  auto it = held_.find(what);
  if (it == held_.end()) {
    problems_.push_back("released but not held (or released twice): " + what);
    return;
  }
  if (--it->second == 0) held_.erase(it);
}

void ledger::expect_balanced() const {
  std::string msg;
  for (const auto& [what, n] : held_) msg += "\n  still held: " + what;
  for (const auto& p : problems_) msg += "\n  " + p;
  if (!msg.empty()) throw std::logic_error("ledger not balanced:" + msg);
}

}  // namespace quell::testing
