// The task tree (quell/task_tree.hpp): the exact text and JSON of a scenario on the virtual clock,
// what each kind of wait says, trees across cores, and a snapshot taken while tasks end.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "quell/quell.hpp"
#include "quell/testing.hpp"
#include "support/json.hpp"

using namespace std::chrono_literals;
using quell::executor;
using quell::task;
using quell::virtual_clock;

namespace {

// The scenario of the contract: a race whose loser is in an async cleanup, with a graceful
// request 30 ms old, under a move_on_after with 70 ms left, inside a shield with a bound.
// Each coroutine is on one line: the line a site names is the compiler's choice within the
// coroutine (g++ 12 names its last statement), so only a one-line coroutine has one answer.
// clang-format off
constexpr int cleanup_line = __LINE__ + 1;
task<> loser_cleanup() { co_await quell::sleep_for(50ms); }
task<int> fast_winner() { co_await quell::yield(); co_return 1; }
constexpr int loser_line = __LINE__ + 1;
task<int> slow_loser() { co_await quell::defer(loser_cleanup, 100ms); co_await quell::sleep_for(1h); co_return 2; }
constexpr int root_line = __LINE__ + 1;
task<> scenario_root() { co_await quell::shield(quell::move_on_after(100ms, quell::race(fast_winner(), slow_loser())), 200ms); }
// clang-format on

std::string file_of_this_test() {
  std::string f = __FILE__;
  return f.substr(f.find_last_of('/') + 1);
}

std::string site(const char* fn, int line) {
  return std::string(fn) + " (" + file_of_this_test() + ":" + std::to_string(line) + ")";
}

// Turns the executor at the current virtual time until nothing is ready.
template <class Ex>
void settle(Ex& ex) {
  for (int i = 0; i < 10; ++i) ex.poll_once();
}

}  // namespace

TEST(TaskTree, TheScenarioOfTheContractReadsExactlyAsWritten) {
  virtual_clock clock;
  executor ex{scenario_root(), clock};
  settle(ex);
  clock.advance(30ms);
  settle(ex);
  const quell::task_tree t = ex.task_tree();
  const std::string expected = "- " + site("scenario_root", root_line) +
                               " suspended, waiting on shield > move_on_after > race of 2\n"
                               "  - " +
                               site("slow_loser", loser_line) +
                               " in cleanup, waiting on its cleanup\n"
                               "      cancel: graceful (race decided), 30 ms ago\n"
                               "      under: move_on_after (70 ms left), shield (bound 200 ms, not armed)\n"
                               "      deadline: 70 ms left\n"
                               "    - " +
                               site("loser_cleanup", cleanup_line) +
                               " suspended, waiting on sleep (20 ms left)\n"
                               "        under: cleanup (bound 100 ms, 70 ms left)\n"
                               "        deadline: 70 ms left\n";
  EXPECT_EQ(t.to_string(), expected);
  EXPECT_EQ(t.size(), 3u);
  ex.run();
  EXPECT_EQ(clock.now().time_since_epoch(), 50ms);
}

TEST(TaskTree, TheJsonOfTheScenarioCarriesEveryFieldExactly) {
  virtual_clock clock;
  executor ex{scenario_root(), clock};
  settle(ex);
  clock.advance(30ms);
  settle(ex);
  const quell::test::json j = quell::test::json::parse(ex.task_tree().to_json());
  EXPECT_EQ(j["cores"].number(), 1);
  ASSERT_EQ(j["tasks"].size(), 1u);
  const quell::test::json& root = j["tasks"][0];
  EXPECT_EQ(root["function"].str(), "scenario_root");
  EXPECT_EQ(root["file"].str(), __FILE__);
  EXPECT_EQ(root["line"].number(), root_line);
  EXPECT_EQ(root["core"].number(), 0);
  EXPECT_EQ(root["state"].str(), "suspended");
  EXPECT_EQ(root["waits_on"].str(), "shield > move_on_after > race of 2");
  EXPECT_FALSE(root.has("cancel"));
  EXPECT_FALSE(root.has("frames"));
  EXPECT_FALSE(root.has("deadline_left_ns"));
  ASSERT_EQ(root["children"].size(), 1u);

  const quell::test::json& loser = root["children"][0];
  EXPECT_EQ(loser["function"].str(), "slow_loser");
  EXPECT_EQ(loser["line"].number(), loser_line);
  EXPECT_EQ(loser["state"].str(), "in cleanup");
  EXPECT_EQ(loser["waits_on"].str(), "its cleanup");
  EXPECT_EQ(loser["cancel"]["level"].str(), "graceful");
  EXPECT_EQ(loser["cancel"]["reason"].str(), "race decided");
  EXPECT_EQ(loser["cancel"]["age_ns"].number(), 30e6);
  ASSERT_EQ(loser["frames"].size(), 2u);
  EXPECT_EQ(loser["frames"][0]["what"].str(), "move_on_after");
  EXPECT_EQ(loser["frames"][0]["left_ns"].number(), 70e6);
  EXPECT_FALSE(loser["frames"][0].has("bound_ns"));
  EXPECT_EQ(loser["frames"][1]["what"].str(), "shield");
  EXPECT_EQ(loser["frames"][1]["bound_ns"].number(), 200e6);
  EXPECT_FALSE(loser["frames"][1].has("left_ns"));
  EXPECT_EQ(loser["deadline_left_ns"].number(), 70e6);
  ASSERT_EQ(loser["children"].size(), 1u);

  const quell::test::json& cleanup = loser["children"][0];
  EXPECT_EQ(cleanup["function"].str(), "loser_cleanup");
  EXPECT_EQ(cleanup["line"].number(), cleanup_line);
  EXPECT_EQ(cleanup["state"].str(), "suspended");
  EXPECT_EQ(cleanup["waits_on"].str(), "sleep");
  EXPECT_EQ(cleanup["wait_left_ns"].number(), 20e6);
  EXPECT_FALSE(cleanup.has("cancel"));
  ASSERT_EQ(cleanup["frames"].size(), 1u);
  EXPECT_EQ(cleanup["frames"][0]["what"].str(), "cleanup");
  EXPECT_EQ(cleanup["frames"][0]["bound_ns"].number(), 100e6);
  EXPECT_EQ(cleanup["frames"][0]["left_ns"].number(), 70e6);
  EXPECT_EQ(cleanup["deadline_left_ns"].number(), 70e6);
  EXPECT_EQ(cleanup["children"].size(), 0u);
  ex.run();
}

namespace {

task<> wait_forever_on(quell::event& e) { co_await e.wait(); }

task<> reads_a_pipe(int fd) {
  quell::pipe_stream r(fd);
  char c;
  co_await r.read_some({&c, 1});
}

task<> takes_a_permit(quell::semaphore& s) { auto p = co_await s.acquire(); }

}  // namespace

// clang-format off
task<std::string> snapshot_now() { co_return quell::task_tree_here().to_string(); }
task<std::string> never_suspends() { co_return co_await snapshot_now(); }
// clang-format on

TEST(TaskTree, TasksThatNeverSuspendedAreShownAsTheChainRunningNow) {
  const std::string text = quell::block_on(never_suspends());
  EXPECT_EQ(text.find("- never_suspends (test_task_tree.cpp:"), 0u) << text;
  // On the stack, in the call that runs its child inline: running, and waiting on that child.
  EXPECT_NE(text.find(") running, waiting on `snapshot_now`\n  - snapshot_now (test_task_tree.cpp:"), std::string::npos)
      << text;
  EXPECT_EQ(quell::block_on(never_suspends()).size(), text.size());
}

TEST(TaskTree, EachKindOfWaitSaysWhatItIs) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  quell::event ev;
  quell::semaphore sem(1);
  std::string text;
  auto body = [&]() -> task<> {
    auto held = co_await sem.acquire();
    co_await quell::with_scope([&](quell::scope& s) -> task<> {
      s.spawn(wait_forever_on(ev));
      s.spawn(reads_a_pipe(fds[0]));
      s.spawn(takes_a_permit(sem));
      co_await quell::yield();
      text = quell::task_tree_here().to_string();
      s.cancel();
    });
  };
  quell::block_on(body());
  ::close(fds[1]);
  EXPECT_NE(text.find("wait_forever_on (test_task_tree.cpp:"), std::string::npos) << text;
  EXPECT_NE(text.find(" suspended, waiting on event\n"), std::string::npos) << text;
  EXPECT_NE(text.find(" suspended, waiting on read_some on fd " + std::to_string(fds[0]) + "\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find(" suspended, waiting on semaphore (1 of 1, 0 available)\n"), std::string::npos) << text;
  EXPECT_NE(text.find(" running\n"), std::string::npos) << text;  // the body taking the snapshot
}

TEST(TaskTree, ACrossCoreChildHangsUnderItsCallerAndATaskIsShownWithItsCore) {
  quell::runtime rt{quell::runtime_options{.cores = 2, .one_thread = true}};
  quell::event never;
  std::string text;
  quell::task_tree seen;
  auto body = [&]() -> task<> {
    auto remote = [&] { return wait_forever_on(never); };
    auto snap = [&]() -> task<> {
      co_await quell::yield();
      co_await quell::yield();
      seen = co_await quell::current_task_tree();
      text = seen.to_string();
    };
    co_await quell::race(quell::on(1, remote), snap());
  };
  rt.run(body());
  EXPECT_EQ(seen.cores, 2u);
  ASSERT_EQ(seen.roots.size(), 1u) << text;
  const auto& root = seen.roots[0];
  EXPECT_EQ(root.waits_on, "race of 2") << text;
  ASSERT_EQ(root.children.size(), 2u) << text;
  // The branch that runs on(1, ...) is not a task: the remote task hangs under the caller.
  const quell::task_tree::node* remote = nullptr;
  for (const auto& c : root.children) {
    if (c.function == "wait_forever_on") remote = &c;
  }
  ASSERT_NE(remote, nullptr) << text;
  EXPECT_EQ(remote->core, 1u);
  EXPECT_EQ(remote->waits_on, "event");
  EXPECT_NE(text.find(" on core 1 suspended, waiting on event\n"), std::string::npos) << text;
}

TEST(TaskTree, ARuntimeIsAskedFromAnotherThreadThroughTheMailboxes) {
  quell::runtime rt{2};
  quell::event never;
  std::atomic<bool> up{false}, answered{false};
  quell::task_tree seen;
  std::thread asker;
  auto body = [&]() -> task<> {
    auto remote = [&]() -> task<> {
      up = true;
      co_await never.wait();
    };
    auto stop = [&]() -> task<> {
      while (!up) co_await quell::sleep_for(1ms);
      asker = std::thread([&] {
        seen = rt.task_tree(std::chrono::seconds(10));
        answered = true;
      });
      while (!answered) co_await quell::sleep_for(1ms);
    };
    co_await quell::race(quell::on(1, remote), stop());
  };
  rt.run(body());
  asker.join();
  const std::string text = seen.to_string();
  EXPECT_NE(text.find(" on core 1 suspended, waiting on event\n"), std::string::npos) << text;
  EXPECT_NE(text.find(" on core 0 suspended, waiting on race of 2\n"), std::string::npos) << text;
  EXPECT_THROW(
      {
        auto inside = [&]() -> task<> {
          (void)rt.task_tree();
          co_return;
        };
        rt.run(inside());
      },
      std::logic_error);
}

namespace {
// Takes a snapshot in every hook: in the middle of the machinery, and in on_finish, while the
// task's frame is about to be freed.
class snapshotting_observer final : public quell::observer {
 public:
  void on_suspend(const quell::task_ref&) noexcept override { take(); }
  void on_resume(const quell::task_ref&) noexcept override { take(); }
  void on_cancel_requested(const quell::task_ref&, const quell::cancel_request&) noexcept override { take(); }
  void on_cleanup_begin(const quell::task_ref&) noexcept override { take(); }
  void on_finish(const quell::task_ref&, bool) noexcept override { take(); }
  std::size_t snapshots = 0, tasks = 0;

 private:
  void take() noexcept {
    const quell::task_tree t = quell::task_tree_here();
    ++snapshots;
    tasks += t.size();
    (void)quell::test::json::parse(t.to_json());  // well-formed every time
  }
};

// Takes a snapshot from a destructor that runs while its task's frame is destroyed.
struct snapshot_on_destroy {
  std::size_t* tasks;
  ~snapshot_on_destroy() { *tasks += quell::task_tree_here().size(); }
};

task<int> doomed(std::size_t* tasks, int ms) {
  snapshot_on_destroy s{tasks};
  co_await quell::defer([]() -> task<> { co_await quell::sleep_for(1ms); });
  co_await quell::sleep_for(std::chrono::milliseconds(ms));
  co_return ms;
}

task<> snapshot_scenario(snapshotting_observer& obs, std::size_t* tasks) {
  quell::set_observer(&obs);
  co_await quell::race(doomed(tasks, 5), doomed(tasks, 7), quell::move_on_after(3ms, doomed(tasks, 9)));
  co_await quell::join(doomed(tasks, 2), quell::shield(doomed(tasks, 4), 1ms));
  quell::set_observer(nullptr);
}

}  // namespace

TEST(TaskTree, ASnapshotTakenInEveryHookAndWhileFramesAreDestroyedIsSafe) {
  std::size_t snapshots = 0, destroyed_seen = 0;
  std::unique_ptr<snapshotting_observer> obs;
  std::size_t tasks_in_destructors = 0;
  quell::testing::cancel_sweep(
      [&](virtual_clock&) {
        obs = std::make_unique<snapshotting_observer>();
        return snapshot_scenario(*obs, &tasks_in_destructors);
      },
      [&](const quell::testing::sweep_point&) {
        snapshots += obs->snapshots;
        destroyed_seen += obs->tasks;
      });
  EXPECT_GT(snapshots, 100u);
  EXPECT_GT(destroyed_seen, snapshots);  // each snapshot saw live tasks
  EXPECT_GT(tasks_in_destructors, 0u);
}

namespace {
// run_main in a child process whose stderr the test reads.
std::string stderr_of_child(int& exit_code, const std::function<int()>& child) {
  int p[2];
  if (::pipe(p) != 0) return "pipe failed";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(p[1], 2);
    ::close(p[0]);
    ::close(p[1]);
    ::_exit(child());
  }
  ::close(p[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  ::close(p[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

constexpr int quit_waiter_line = __LINE__ + 1;
task<> quit_waiter(quell::event& e) { co_await e.wait(); }

task<int> quits_itself_and_goes_on() {
  quell::event done;
  auto after = [&]() -> task<> {
    ::kill(::getpid(), SIGQUIT);
    co_await quell::sleep_for(50ms);  // the dump happens meanwhile; nothing is disturbed
    done.set();
  };
  co_await quell::join(quit_waiter(done), after());
  co_return 7;
}

// clang-format off
constexpr int remote_waiter_line = __LINE__ + 1;
task<> remote_waiter() { quell::event never; co_await never.wait(); }  // core 1's own event
// clang-format on

task<int> quits_a_runtime() {
  auto remote = [] { return remote_waiter(); };
  auto after = []() -> task<> {
    co_await quell::sleep_for(10ms);
    ::kill(::getpid(), SIGQUIT);
    co_await quell::sleep_for(1s);  // core 1 answers long before; then the race cancels the waiter
  };
  co_await quell::race(quell::on(1, remote), after());
  co_return 9;
}
}  // namespace

TEST(TaskTree, RunMainPrintsTheTreeOnSigquitAndChangesNothing) {
  int rc = 0;
  const std::string err = stderr_of_child(rc, [] { return quell::run_main(quits_itself_and_goes_on()); });
  EXPECT_EQ(rc, 7) << err;
  EXPECT_NE(err.find("quell: run_main: SIGQUIT: the live task tree\n- quits_itself_and_goes_on ("), std::string::npos)
      << err;
  EXPECT_NE(err.find("  - quit_waiter (test_task_tree.cpp:" + std::to_string(quit_waiter_line) +
                     ") suspended, waiting on event\n"),
            std::string::npos)
      << err;
}

TEST(TaskTree, RunMainOnARuntimePrintsEveryCoresPartOnSigquit) {
  int rc = 0;
  const std::string err = stderr_of_child(rc, [] {
    quell::runtime rt{2};
    return quell::run_main(rt, quits_a_runtime());
  });
  EXPECT_EQ(rc, 9) << err;
  EXPECT_NE(err.find("on core 0 suspended, waiting on race of 2\n"), std::string::npos) << err;
  EXPECT_NE(err.find("  - remote_waiter (test_task_tree.cpp:" + std::to_string(remote_waiter_line) +
                     ") on core 1 suspended, waiting on event\n"),
            std::string::npos)
      << err;
}

namespace {
task<int> quits_while_core_1_is_busy() {
  auto busy = []() -> task<> {
    std::this_thread::sleep_for(2500ms);  // a resume that blocks its core: it cannot answer
    co_return;
  };
  auto after = []() -> task<> {
    co_await quell::sleep_for(100ms);  // core 1 is inside its long resume by now
    ::kill(::getpid(), SIGQUIT);
  };
  co_await quell::join(quell::on(1, busy), after());
  co_return 5;
}
}  // namespace

TEST(TaskTree, ADumpOnARuntimeWhoseCoreDoesNotAnswerPrintsTheRestAfterASecond) {
  int rc = 0;
  const std::string err = stderr_of_child(rc, [] {
    quell::runtime rt{2};
    return quell::run_main(rt, quits_while_core_1_is_busy());
  });
  EXPECT_EQ(rc, 5) << err;
  EXPECT_NE(err.find("- quits_while_core_1_is_busy (test_task_tree.cpp:"), std::string::npos) << err;
  EXPECT_NE(err.find("(core 1 did not answer in time: busy in a long resume, see the stall detector)\n"),
            std::string::npos)
      << err;
  EXPECT_EQ(err.find("task tree\n", err.find("task tree\n") + 1), std::string::npos) << "printed twice: " << err;
}

TEST(TaskTree, ADumpSignalOfSigintIsRefused) {
  int rc = 0;
  const std::string err = stderr_of_child(
      rc, [] { return quell::run_main(quits_itself_and_goes_on(), quell::run_main_options{.dump_signal = SIGINT}); });
  EXPECT_EQ(rc, 2) << err;
  EXPECT_NE(err.find("dump_signal 2 is not a signal it may take"), std::string::npos) << err;
}

TEST(TaskTree, TheDumpSignalCanBeTurnedOff) {
  int rc = 0;
  const std::string err = stderr_of_child(rc, [] {
    ::signal(SIGQUIT, SIG_IGN);  // not watched: the process's own disposition applies
    return quell::run_main(quits_itself_and_goes_on(), quell::run_main_options{.dump_signal = 0});
  });
  EXPECT_EQ(rc, 7) << err;
  EXPECT_EQ(err.find("task tree"), std::string::npos) << err;
}
