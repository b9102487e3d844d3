// Observer hooks, the stall detector and the metrics (quell/observer.hpp, quell/metrics.hpp).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "quell/quell.hpp"
#include "quell/testing.hpp"

using namespace std::chrono_literals;
using quell::executor;
using quell::task;
using quell::virtual_clock;

namespace {

// Checks the order the contract promises for each task:
//   spawned -> started -> { suspended -> resumed }* -> [cleanup begin -> cleanup end] -> finished,
// cancel requested anywhere in between. A task first seen after its spawn (the root, when the
// observer is installed from inside it) starts as running.
class order_checker final : public quell::observer {
 public:
  enum class st { spawned, running, suspended, cleanup, finished };

  void on_spawn(const quell::task_ref& t) noexcept override {
    auto it = tasks_.find(t.id);
    if (it != tasks_.end() && it->second != st::finished) bad("spawned twice", t);
    tasks_[t.id] = st::spawned;
    spawned_ids_.insert(t.id);
    ++spawned;
  }
  void on_start(const quell::task_ref& t) noexcept override { step(t, {st::spawned}, st::running, "started"); }
  void on_suspend(const quell::task_ref& t) noexcept override { step(t, {st::running}, st::suspended, "suspended"); }
  void on_resume(const quell::task_ref& t) noexcept override { step(t, {st::suspended}, st::running, "resumed"); }
  void on_cancel_requested(const quell::task_ref& t, const quell::cancel_request& r) noexcept override {
    ++cancels;
    if (r.level == quell::cancel_level::forced && r.reason.kind() == quell::cancel_kind::requested)
      ++forced_after_graceful;
    auto it = tasks_.find(t.id);
    if (it != tasks_.end() && it->second == st::finished) bad("cancel requested after finish", t);
  }
  void on_cleanup_begin(const quell::task_ref& t) noexcept override {
    step(t, {st::running, st::suspended}, st::cleanup, "cleanup begin");
    ++cleanups;
  }
  void on_cleanup_end(const quell::task_ref& t) noexcept override {
    step(t, {st::cleanup}, st::cleanup, "cleanup end");
    ended_cleanup_.push_back(t.id);
  }
  void on_finish(const quell::task_ref& t, bool) noexcept override {
    auto it = tasks_.find(t.id);
    const st from = it == tasks_.end() ? st::running : it->second;
    if (from == st::cleanup && std::find(ended_cleanup_.begin(), ended_cleanup_.end(), t.id) == ended_cleanup_.end())
      bad("finished before its cleanup ended", t);
    if (from == st::finished || from == st::spawned) bad("finished from a wrong state", t);
    std::erase(ended_cleanup_, t.id);
    tasks_[t.id] = st::finished;
    if (spawned_ids_.erase(t.id) != 0) ++finished;  // the root's spawn is not seen
  }
  void on_io_submit(const quell::io_ref& op) noexcept override {
    if (!io_.insert(op.id).second) errors.push_back("io submitted twice");
  }
  void on_io_complete(const quell::io_ref& op, int) noexcept override {
    if (io_.erase(op.id) == 0) errors.push_back("io completed without a submit");
  }

  // Every task seen has finished, every I/O has completed.
  void expect_all_ended() {
    if (!spawned_ids_.empty()) errors.push_back("a task never finished");
    if (!io_.empty()) errors.push_back("an I/O operation never completed");
  }

  std::vector<std::string> errors;
  int spawned = 0, finished = 0, cancels = 0, cleanups = 0, forced_after_graceful = 0;

 private:
  void bad(const std::string& what, const quell::task_ref& t) {
    errors.push_back(what + ": " + t.function + ":" + std::to_string(t.line));
  }
  void step(const quell::task_ref& t, std::initializer_list<st> from, st to, const char* what) {
    auto it = tasks_.find(t.id);
    const st cur = it == tasks_.end() ? st::running : it->second;  // the root, seen late
    if (it != tasks_.end() && std::find(from.begin(), from.end(), cur) == from.end()) {
      bad(std::string(what) + " from a wrong state", t);
    }
    tasks_[t.id] = to;
  }
  std::map<const void*, st> tasks_;
  std::set<const void*> spawned_ids_;
  std::vector<const void*> ended_cleanup_;
  std::set<const void*> io_;
};

task<> slow_cleanup() { co_await quell::sleep_for(5ms); }

task<int> worker(int i) {
  co_await quell::defer(slow_cleanup);
  co_await quell::sleep_for(std::chrono::milliseconds(i));
  co_return i;
}

task<int> hooked(int i) {
  auto hook = []() -> task<> { co_await quell::sleep_for(1ms); };
  co_return co_await quell::on_cancel(worker(i), hook);
}

// A task whose hook answers only a forced request: the scope escalates it.
task<> stubborn() {
  auto forced_only = []() -> task<> { co_await quell::on_cancel(quell::sleep_for(1h), [] {}); };
  co_await quell::on_cancel(quell::sleep_for(1h), forced_only);
}

quell::generator<int> counting() {
  for (int i = 0;; ++i) {
    co_await quell::sleep_for(1ms);
    co_yield i;
  }
}

task<> observed_scenario(order_checker& obs) {
  quell::set_observer(&obs);
  auto sum = co_await quell::join(worker(1), hooked(2), quell::race(worker(3), worker(4)));
  (void)sum;
  auto [a, b] = co_await quell::join(quell::shield(worker(1), 10ms), quell::move_on_after(2ms, worker(8)));
  (void)a;
  (void)b;
  co_await quell::with_scope([](quell::scope& s) -> task<> {
    auto h = s.spawn(stubborn);
    co_await quell::sleep_for(1ms);
    h.cancel();  // graceful: its hook waits for a forced request
    co_await quell::sleep_for(1ms);
    h.force_cancel();
  });
  {
    auto g = counting();
    co_await g.next();
    co_await g.next();
  }  // destroyed at a co_yield: it finishes there
  quell::set_observer(nullptr);
}

}  // namespace

TEST(Observer, SeesEveryTransitionOfACancelSweepInAValidOrder) {
  int runs = 0, total_spawned = 0, total_cancels = 0, total_cleanups = 0, total_forced_after_graceful = 0;
  std::unique_ptr<order_checker> obs;
  auto report = quell::testing::cancel_sweep(
      [&](virtual_clock&) {
        obs = std::make_unique<order_checker>();
        return observed_scenario(*obs);
      },
      [&](const quell::testing::sweep_point& p) {
        ++runs;
        obs->expect_all_ended();
        EXPECT_EQ(obs->errors, std::vector<std::string>{}) << p.describe();
        EXPECT_EQ(obs->spawned, obs->finished) << p.describe();
        total_spawned += obs->spawned;
        total_cancels += obs->cancels;
        total_cleanups += obs->cleanups;
        total_forced_after_graceful += obs->forced_after_graceful;
      });
  EXPECT_EQ(static_cast<std::uint64_t>(runs), report.runs);
  EXPECT_GT(runs, 20);
  EXPECT_GT(total_spawned, 100);
  EXPECT_GT(total_cancels, 10);  // the sweep's requests were seen
  EXPECT_GT(total_cleanups, 10);
  EXPECT_GT(total_forced_after_graceful, 0);
}

TEST(Observer, SeesIoSubmittedAndCompletedWithTheDescriptorAndTheOperation) {
  struct io_log final : quell::observer {
    void on_io_submit(const quell::io_ref& op) noexcept override {
      submitted.push_back(std::string(op.operation) + " " + std::to_string(op.fd));
    }
    void on_io_complete(const quell::io_ref& op, int res) noexcept override {
      completed.push_back(std::string(op.operation) + " " + std::to_string(op.fd) + " -> " + std::to_string(res));
    }
    std::vector<std::string> submitted, completed;
  } obs;
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  auto body = [&]() -> task<> {
    quell::set_observer(&obs);
    quell::pipe_stream r(fds[0]), w(fds[1]);
    co_await w.write_all("hey");
    char buf[3];
    co_await r.read_exact(buf);
    quell::set_observer(nullptr);
  };
  quell::block_on(body());
  EXPECT_EQ(obs.submitted,
            (std::vector<std::string>{"write " + std::to_string(fds[1]), "read " + std::to_string(fds[0])}));
  EXPECT_EQ(obs.completed, (std::vector<std::string>{"write " + std::to_string(fds[1]) + " -> 3",
                                                     "read " + std::to_string(fds[0]) + " -> 3"}));
}

namespace {
task<> busy_loop(virtual_clock& c, std::chrono::milliseconds d) {
  co_await quell::yield();
  c.advance(d);  // as a busy loop of that length would
  co_await quell::yield();
}
}  // namespace

TEST(StallDetector, FiresOnA150msResumeAndNotOnA50msOne) {
  virtual_clock stall_clock;  // the detector's clock; the executor runs on the steady clock
  std::vector<quell::stall_report> reports;
  auto body = [&]() -> task<> {
    quell::set_stall_detector(
        {.enabled = true, .threshold = 100ms, .clock = &stall_clock, .report = [&](const quell::stall_report& r) {
           reports.push_back(r);
         }});
    co_await busy_loop(stall_clock, 50ms);
    EXPECT_TRUE(reports.empty());
    co_await busy_loop(stall_clock, 150ms);
  };
  quell::block_on(body());
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_STREQ(reports[0].task.function, "busy_loop");
  EXPECT_EQ(reports[0].took, 150ms);
  EXPECT_NE(quell::to_string(reports[0]).find("ran 150 ms without suspending"), std::string::npos)
      << quell::to_string(reports[0]);
}

namespace {
task<> stall_child(virtual_clock& c) {
  c.advance(120ms);  // the child's own first stretch
  co_await quell::yield();
}
task<> stall_parent(virtual_clock& c, std::vector<std::string>& who) {
  quell::set_stall_detector(
      {.enabled = true, .threshold = 100ms, .clock = &c, .report = [&](const quell::stall_report& r) {
         who.push_back(r.task.function);
       }});
  co_await quell::yield();
  co_await stall_child(c);
  c.advance(110ms);  // the parent's, after its child finished
  co_await quell::yield();
  quell::set_stall_detector(quell::stall_options{.enabled = false, .threshold = {}, .clock = nullptr, .report = {}});
}
}  // namespace

TEST(StallDetector, ChargesTheStretchToTheTaskThatRanItNotToItsParent) {
  virtual_clock stall_clock;
  std::vector<std::string> who;
  quell::block_on(stall_parent(stall_clock, who));
  EXPECT_EQ(who, (std::vector<std::string>{"stall_child", "stall_parent"}));
}

namespace {
task<> quick() { co_return; }
task<> many_short_stretches(virtual_clock& c) {
  co_await quell::yield();
  for (int i = 0; i < 10; ++i) {
    co_await quick();  // completes at once: an event, but no suspension
    c.advance(20ms);
  }
  co_await quell::yield();
}
}  // namespace

TEST(StallDetector, AResumptionOfManyShortStretchesIsReportedAsAWhole) {
  virtual_clock stall_clock;
  std::vector<quell::stall_report> reports;
  auto body = [&]() -> task<> {
    quell::set_stall_detector(
        {.enabled = true, .threshold = 100ms, .clock = &stall_clock, .report = [&](const quell::stall_report& r) {
           reports.push_back(r);
         }});
    co_await many_short_stretches(stall_clock);
  };
  quell::block_on(body());
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_STREQ(reports[0].task.function, "many_short_stretches");
  EXPECT_EQ(reports[0].took, 200ms);
}

TEST(StallDetector, IsOffWhenDisabledAndTheDefaultReportNamesTheTask) {
  virtual_clock stall_clock;
  int n = 0;
  auto body = [&]() -> task<> {
    quell::set_stall_detector(
        {.enabled = false, .threshold = 1ms, .clock = &stall_clock, .report = [&](const quell::stall_report&) {
           ++n;
         }});
    co_await busy_loop(stall_clock, 500ms);
  };
  quell::block_on(body());
  EXPECT_EQ(n, 0);
  quell::stall_report r{quell::task_ref{nullptr, nullptr, "f", "src/x.cpp", 12, 1}, 153ms};
  EXPECT_EQ(quell::to_string(r),
            "quell: stall: `f` (src/x.cpp:12) on core 1 ran 153 ms without suspending (blocking work belongs in "
            "run_blocking)");
}

TEST(Metrics, CountCancelsAndTheirLatencyOnTheVirtualClock) {
  virtual_clock clock;
  auto slow_hook = []() -> task<> { co_await quell::sleep_for(3ms); };
  auto sleeper = [&]() -> task<> { co_await quell::on_cancel(quell::sleep_for(1h), slow_hook); };
  auto body = [&]() -> task<> {
    quell::task_group g;
    for (int i = 0; i < 4; ++i) g.spawn(sleeper);
    co_await quell::sleep_for(10ms);
    co_await g.cancel_and_join();
  };
  executor ex{body(), clock};
  ex.run();
  const quell::executor_metrics m = ex.metrics();
  EXPECT_EQ(m.cancels_requested, 4u);
  EXPECT_EQ(m.cancels_confirmed, 4u);
  EXPECT_EQ(m.cancel_latency_sum, 12ms);  // each waited 3 ms for its hook
  // 3 ms is in the (1 ms, 10 ms] bucket (index 4: 1us, 10us, 100us, 1ms, 10ms).
  EXPECT_EQ(m.cancel_latency[4], 4u);
  EXPECT_GT(m.turns, 2u);
  EXPECT_EQ(m.tasks_alive, 0u);
  const std::string text = quell::to_prometheus({m});
  EXPECT_NE(text.find("quell_cancels_requested_total{core=\"0\"} 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("quell_cancel_latency_seconds_bucket{core=\"0\",le=\"0.001\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("quell_cancel_latency_seconds_bucket{core=\"0\",le=\"0.01\"} 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("quell_cancel_latency_seconds_bucket{core=\"0\",le=\"+Inf\"} 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("quell_cancel_latency_seconds_sum{core=\"0\"} 0.012\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE quell_cancel_latency_seconds histogram\n"), std::string::npos) << text;
}

TEST(Metrics, TasksAliveAndIoInFlightWhileTheyWait) {
  int a[2], b[2];
  ASSERT_EQ(::pipe(a), 0);
  ASSERT_EQ(::pipe(b), 0);
  quell::executor_metrics seen;
  auto reader = [](int fd) -> task<> {
    quell::pipe_stream r(fd);
    char c;
    co_await r.read_some({&c, 1});
  };
  auto body = [&]() -> task<> {
    co_await quell::with_scope([&](quell::scope& s) -> task<> {
      s.spawn(reader(a[0]));
      s.spawn(reader(b[0]));
      co_await quell::yield();
      auto all = co_await quell::current_metrics();
      seen = all.at(0);
      s.cancel();
    });
  };
  quell::block_on(body());
  ::close(a[1]);
  ::close(b[1]);
  EXPECT_EQ(seen.io_in_flight, 2u);
  EXPECT_GE(seen.tasks_alive, 3u);  // two readers and the body (and the scope's body)
}
