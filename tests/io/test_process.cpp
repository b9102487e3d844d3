// quell::process: spawning, exit statuses, pipes as cancel-safe streams, and wait()'s cancellation
// (graceful = the stop signal, forced = SIGKILL, completion wins for an exit that came first),
// checked for zombies and descriptor leaks. The children are small shell programs; none of the
// tests depends on timing (sleeps in children only keep them alive until they are signalled).
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "quell/quell.hpp"
#include "quell/testing.hpp"

using quell::executor;
using quell::exit_status;
using quell::pipe_stream;
using quell::process;
using quell::spawn_options;
using quell::stdio;
using quell::task;

namespace {

// Open descriptors of this process (the directory's own descriptor counts once, every time).
int count_fds() {
  DIR* d = ::opendir("/proc/self/fd");
  int n = 0;
  while (::readdir(d)) ++n;
  ::closedir(d);
  return n;
}

std::vector<int> open_fds() {
  std::vector<int> fds;
  DIR* d = ::opendir("/proc/self/fd");
  const int own = ::dirfd(d);
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const int fd = std::atoi(e->d_name);
    if (fd != own) fds.push_back(fd);
  }
  ::closedir(d);
  return fds;
}

// True once `pid` is no child of ours any more (reaped: waitid finds nothing to wait for).
bool reaped(pid_t pid) {
  siginfo_t info{};
  return ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD;
}

// Blocks until the child has exited, leaving it a zombie for its process object to reap.
void await_exit_unreaped(pid_t pid) {
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT), 0);
}

// No zombie child at all (a failed spawn must leave none behind).
bool no_zombie_children() {
  siginfo_t info{};
  const int rc = ::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT);
  return (rc < 0 && errno == ECHILD) || (rc == 0 && info.si_pid == 0);
}

spawn_options sh(std::string script) {
  spawn_options o;
  o.program = "sh";
  o.args = {"-c", std::move(script)};
  return o;
}

task<std::string> read_all(pipe_stream& s) {
  std::string out;
  char buf[16384];
  while (std::size_t n = co_await s.read_some(buf)) out.append(buf, n);
  co_return out;
}

task<std::string> read_until(pipe_stream& s, std::string marker) {
  std::string out;
  char buf[256];
  while (out.find(marker) == std::string::npos) {
    const std::size_t n = co_await s.read_some(buf);
    if (n == 0) break;
    out.append(buf, n);
  }
  co_return out;
}

// The same, with a plain blocking read (while no executor runs).
std::string read_fd_until(int fd, const std::string& marker) {
  std::string got;
  char c;
  while (got.find(marker) == std::string::npos && ::read(fd, &c, 1) == 1) got += c;
  return got;
}

std::string random_bytes(std::size_t n) {
  std::mt19937_64 rng(12345);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// Runs the executor's turns until its I/O has all come back from the kernel (a hang guard bounds it).
template <class E>
void turns_until_io_done(E& ex) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (ex.reactor_if_any()->in_flight() > 0 && std::chrono::steady_clock::now() < give_up) {
    ex.poll_once();
    if (ex.reactor_if_any()->in_flight() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// The scenario of the cancellation sweep: spawn cat, feed it, read it back, wait; all at once.
task<> feed_read_wait(std::vector<pid_t>& pids, std::string& got, std::optional<exit_status>& status) {
  spawn_options o;
  o.program = "cat";
  o.std_in = stdio::pipe;
  o.std_out = stdio::pipe;
  auto p = process::spawn(o);
  pids.push_back(p.pid());
  auto feed = [&p]() -> task<> {
    co_await p.std_in().write_all("hello, child\n");
    co_await p.std_in().close();
  };
  auto collect = [&p, &got]() -> task<> {
    char buf[4];  // small reads: more suspension points to cancel at
    while (std::size_t n = co_await p.std_out().read_some(buf)) got.append(buf, n);
  };
  auto r = co_await quell::join(feed(), collect(), p.wait());
  status = std::get<2>(r);
}

}  // namespace

// ---- exit statuses ---------------------------------------------------------------------------

TEST(Process, ExitCodesAreReportedAndStayReadable) {
  auto body = []() -> task<> {
    auto ok = process::spawn(sh("exit 0"));
    auto three = process::spawn(sh("exit 3"));
    EXPECT_TRUE(ok.running());
    const exit_status a = co_await ok.wait();
    const exit_status b = co_await three.wait();
    EXPECT_TRUE(a.success());
    EXPECT_EQ(a.to_string(), "exited with code 0");
    EXPECT_FALSE(b.success());
    EXPECT_EQ(b.code(), 3);
    EXPECT_EQ(b.signal(), std::nullopt);
    EXPECT_EQ(b.to_string(), "exited with code 3");
    EXPECT_EQ(three.exit_status(), b);
    EXPECT_FALSE(three.running());
    EXPECT_EQ(co_await three.wait(), b);  // again: at once, the same
    EXPECT_TRUE(reaped(three.pid()));
  };
  quell::block_on(body());
}

TEST(Process, DeathBySignalIsReported) {
  auto body = []() -> task<> {
    auto p = process::spawn(sh("kill -KILL $$"));
    const exit_status s = co_await p.wait();
    EXPECT_EQ(s, exit_status::killed(SIGKILL));
    EXPECT_EQ(s.signal(), SIGKILL);
    EXPECT_EQ(s.code(), std::nullopt);
    EXPECT_EQ(s.to_string(), "killed by SIGKILL");
    EXPECT_EQ(exit_status::killed(SIGSEGV, true).to_string(), "killed by SIGSEGV (core dumped)");
  };
  quell::block_on(body());
}

TEST(Process, SendSignalReachesTheChildAndDoesNothingOnceItIsReaped) {
  auto body = []() -> task<> {
    spawn_options o;
    o.program = "sleep";
    o.args = {"30"};
    auto p = process::spawn(o);
    p.send_signal(SIGUSR1);
    EXPECT_EQ(co_await p.wait(), exit_status::killed(SIGUSR1));
    p.send_signal(SIGKILL);  // reaped: nothing to do (its pid may belong to someone else by now)
  };
  quell::block_on(body());
}

TEST(Process, TheHeadersExampleSortsTwoLines) {
  auto body = []() -> task<> {
    quell::spawn_options o;
    o.program = "sort";
    o.std_in = o.std_out = quell::stdio::pipe;
    auto p = quell::process::spawn(o);
    auto feed = [&]() -> quell::task<> {
      co_await p.std_in().write_all("b\na\n");
      co_await p.std_in().close();  // the child sees the end of its input
    };
    auto collect = [&]() -> quell::task<std::string> {
      std::string out;
      char buf[4096];
      while (std::size_t n = co_await p.std_out().read_some(buf)) out.append(buf, n);
      co_return out;  // 0: the child closed its stdout
    };
    auto [fed, out, status] = co_await quell::join(feed(), collect(), p.wait());
    (void)fed;
    EXPECT_EQ(out, "a\nb\n");
    EXPECT_EQ(status.to_string(), "exited with code 0");
  };
  quell::block_on(body());
}

// ---- spawning ----------------------------------------------------------------------------------

TEST(Process, AProgramThatCannotBeExecutedIsAClearErrorAndLeavesNothingBehind) {
  const int fds = count_fds();
  auto message_of = [](spawn_options o) -> std::string {
    o.std_in = o.std_out = o.std_err = stdio::pipe;
    try {
      auto p = process::spawn(o);
      (void)quell::block_on(p.wait());
      return "spawned";
    } catch (const std::system_error& e) {
      return e.what();
    }
  };
  spawn_options o;
  o.program = "nosuch";
  EXPECT_EQ(message_of(o), "spawn nosuch: No such file or directory");
  o.program = "/no/such/program";
  EXPECT_EQ(message_of(o), "spawn /no/such/program: No such file or directory");
  o.program = "/etc/passwd";  // not executable
  EXPECT_EQ(message_of(o), "spawn /etc/passwd: Permission denied");
  o.program = "true";
  o.cwd = "/no/such/dir";
  EXPECT_EQ(message_of(o), "spawn true (in /no/such/dir): No such file or directory");
  EXPECT_EQ(count_fds(), fds);
  EXPECT_TRUE(no_zombie_children());
}

TEST(Process, BadOptionsAreRejectedBeforeAnythingStarts) {
  const int fds = count_fds();
  spawn_options o;
  EXPECT_THROW(process::spawn(o), std::invalid_argument);  // no program
  o = sh("exit 0");
  o.args.push_back(std::string("a\0b", 3));
  EXPECT_THROW(process::spawn(o), std::invalid_argument);
  o = sh("exit 0");
  o.env = {{"A=B", "c"}};
  EXPECT_THROW(process::spawn(o), std::invalid_argument);
  o = sh("exit 0");
  o.env = {{"", "c"}};
  EXPECT_THROW(process::spawn(o), std::invalid_argument);
  o = sh("exit 0");
  o.stop_signal = 0;
  EXPECT_THROW(process::spawn(o), std::invalid_argument);
  EXPECT_EQ(count_fds(), fds);
  EXPECT_TRUE(no_zombie_children());

  process none;  // no child: nothing to wait for, nothing to report when it goes
  EXPECT_FALSE(none.running());
  EXPECT_EQ(none.exit_status(), std::nullopt);
  EXPECT_THROW((void)none.wait(), std::logic_error);
  auto p = process::spawn(sh("exit 0"));
  auto w = p.wait();
  EXPECT_THROW((void)w.await_ready(), std::logic_error);  // outside an executor
  EXPECT_EQ(quell::block_on(p.wait()), exit_status::exited(0));
}

TEST(Process, EnvironmentAndWorkingDirectoryReachTheChild) {
  char dir_template[] = "/tmp/quell-process-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  char* real = ::realpath(dir_template, nullptr);
  const std::string dir = real;
  ::free(real);
  ::setenv("QUELL_GONE", "inherited", 1);
  ::setenv("QUELL_KEPT", "inherited", 1);
  auto body = [&]() -> task<> {
    auto o = sh("printf '%s|%s|%s|' \"$QUELL_SET\" \"${QUELL_GONE-unset}\" \"$QUELL_KEPT\"; pwd -P");
    o.env = {{"QUELL_SET", "hello"}, {"QUELL_GONE", std::nullopt}};
    o.cwd = dir;
    o.std_out = stdio::pipe;
    auto p = process::spawn(o);
    auto [out, status] = co_await quell::join(read_all(p.std_out()), p.wait());
    EXPECT_EQ(out, "hello|unset|inherited|" + dir + "\n");
    EXPECT_TRUE(status.success());

    spawn_options only;  // nothing inherited
    only.program = "env";
    only.clear_env = true;
    only.env = {{"ONLY", "1"}};
    only.std_out = stdio::pipe;
    auto q = process::spawn(only);
    auto [env, ignored] = co_await quell::join(read_all(q.std_out()), q.wait());
    (void)ignored;
    EXPECT_EQ(env, "ONLY=1\n");
  };
  quell::block_on(body());
  ::unsetenv("QUELL_GONE");
  ::unsetenv("QUELL_KEPT");
  ::rmdir(dir.c_str());
}

TEST(Process, TheChildInheritsNoDescriptorButItsStandardStreams) {
  auto body = []() -> task<> {
    // Descriptors this process holds meanwhile: the ring, another child's pipes and pidfd.
    spawn_options other;
    other.program = "cat";
    other.std_in = other.std_out = stdio::pipe;
    auto busy = process::spawn(other);
    spawn_options o;
    o.program = "ls";
    o.args = {"/proc/self/fd"};
    o.std_in = stdio::null;
    o.std_out = stdio::pipe;
    o.std_err = stdio::null;
    auto p = process::spawn(o);
    auto [listing, status] = co_await quell::join(read_all(p.std_out()), p.wait());
    EXPECT_TRUE(status.success());
    // The child has its three streams, what this process holds without close-on-exec (the test
    // runner's own descriptors, if it leaked any to us), and the directory ls is reading: none
    // of quell's (the ring, the other child's pipes and pidfd, this child's parent ends).
    std::set<int> seen;
    std::size_t at = 0;
    while (at < listing.size()) {
      const std::size_t end = listing.find('\n', at);
      seen.insert(std::stoi(listing.substr(at, end - at)));
      at = end + 1;
    }
    std::set<int> expected = {0, 1, 2};
    for (int fd : open_fds()) {
      if (fd > 2 && !(::fcntl(fd, F_GETFD) & FD_CLOEXEC)) expected.insert(fd);
    }
    std::set<int> extra;
    std::set_difference(seen.begin(), seen.end(), expected.begin(), expected.end(), std::inserter(extra, extra.end()));
    EXPECT_TRUE(std::includes(seen.begin(), seen.end(), expected.begin(), expected.end())) << listing;
    EXPECT_EQ(extra.size(), 1u) << listing;  // ls's directory
    co_await busy.std_in().close();
    auto [rest, done] = co_await quell::join(read_all(busy.std_out()), busy.wait());
    EXPECT_EQ(rest, "");
    EXPECT_TRUE(done.success());
  };
  quell::block_on(body());
}

TEST(Process, TheChildStartsWithNoSignalBlockedAndSigpipeAtItsDefault) {
  auto body = []() -> task<> {
    quell::signal_set sigs{SIGUSR2};  // blocks SIGUSR2 here, as run_main blocks SIGINT and SIGTERM
    spawn_options o;
    o.program = "cat";
    o.args = {"/proc/self/status"};
    o.std_in = stdio::pipe;  // (which makes this process ignore SIGPIPE)
    o.std_out = stdio::pipe;
    auto p = process::spawn(o);
    co_await p.std_in().close();
    auto [status_file, status] = co_await quell::join(read_all(p.std_out()), p.wait());
    EXPECT_TRUE(status.success());
    EXPECT_NE(status_file.find("SigBlk:\t0000000000000000\n"), std::string::npos) << status_file;
    const auto at = status_file.find("SigIgn:\t");
    EXPECT_NE(at, std::string::npos);
    if (at == std::string::npos) co_return;
    const unsigned long ignored = std::stoul(status_file.substr(at + 8, 16), nullptr, 16);
    EXPECT_EQ(ignored & (1ul << (SIGPIPE - 1)), 0u) << status_file;
  };
  quell::block_on(body());
  struct sigaction now {};
  ::sigaction(SIGPIPE, nullptr, &now);
  EXPECT_EQ(now.sa_handler, SIG_IGN);
}

// ---- the pipes ---------------------------------------------------------------------------------

TEST(Process, OneMegabyteOfStdoutIsCapturedExactly) {
  char path[] = "/tmp/quell-process-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  const std::string data = random_bytes(1 << 20);
  ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ::close(fd);
  auto body = [&]() -> task<> {
    spawn_options o;
    o.program = "cat";
    o.args = {path};
    o.std_out = stdio::pipe;
    auto p = process::spawn(o);
    auto [out, status] = co_await quell::join(read_all(p.std_out()), p.wait());
    EXPECT_TRUE(status.success());
    EXPECT_EQ(out.size(), data.size());
    EXPECT_TRUE(out == data);
  };
  quell::block_on(body());
  ::unlink(path);
}

TEST(Process, OneMegabyteRoundTripsThroughTheChildsStdinAndStdout) {
  const std::string data = random_bytes(1 << 20);
  auto body = [&]() -> task<> {
    spawn_options o;
    o.program = "cat";
    o.std_in = o.std_out = stdio::pipe;
    o.std_err = stdio::pipe;
    auto p = process::spawn(o);
    auto feed = [&]() -> task<> {
      co_await p.std_in().write_all(data);
      co_await p.std_in().close();  // cat sees the end and exits
    };
    // Concurrently: cat cannot take more input while its output is not read (the pipes fill).
    auto [fed, out, err, status] = co_await quell::join(feed(), read_all(p.std_out()), read_all(p.std_err()), p.wait());
    (void)fed;
    EXPECT_TRUE(status.success());
    EXPECT_EQ(out.size(), data.size());
    EXPECT_TRUE(out == data);
    EXPECT_EQ(err, "");
  };
  quell::block_on(body());
}

TEST(Process, StandardStreamsCanBeNullOrInheritedAndStderrIsAPipeToo) {
  auto body = []() -> task<> {
    auto o = sh("cat; echo out; echo err >&2");
    o.std_in = stdio::null;  // cat reads the end at once
    o.std_out = stdio::null;
    o.std_err = stdio::pipe;
    auto p = process::spawn(o);
    EXPECT_FALSE(p.std_in().is_open());
    EXPECT_FALSE(p.std_out().is_open());
    auto [err, status] = co_await quell::join(read_all(p.std_err()), p.wait());
    EXPECT_EQ(err, "err\n");
    EXPECT_TRUE(status.success());
  };
  quell::block_on(body());
}

TEST(Process, WritingToAChildThatStoppedReadingIsAnErrorNotTheDeathOfThisProcess) {
  auto body = []() -> task<> {
    auto o = sh("exit 0");
    o.std_in = stdio::pipe;
    auto p = process::spawn(o);
    EXPECT_TRUE((co_await p.wait()).success());
    const std::string big(1 << 20, 'x');
    std::size_t written = 0;
    try {
      co_await p.std_in().write_all(big, &written);
      ADD_FAILURE() << "the write succeeded";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code().value(), EPIPE);
      EXPECT_STREQ(e.what(), "write: Broken pipe");
    }
    EXPECT_EQ(written, 0u);
  };
  quell::block_on(body());
}

TEST(Process, AReadCancelledInTheKernelLosesNothing) {
  auto o = sh("read x; printf abc; read y; exit 0");
  o.std_in = o.std_out = stdio::pipe;
  auto p = process::spawn(o);
  char buf[16];
  {
    executor ex{p.std_out().read_some(buf)};
    EXPECT_FALSE(ex.poll_once());  // the read is in the kernel; the child writes nothing yet
    ASSERT_EQ(ex.reactor_if_any()->in_flight(), 1u);
    ex.cancel();
    EXPECT_THROW(ex.run(), quell::cancelled_error);
    EXPECT_EQ(ex.reactor_if_any()->in_flight(), 0u);
  }
  auto body = [&]() -> task<> {
    co_await p.std_in().write_all("go\n");
    const std::size_t n = co_await p.std_out().read_some(buf);
    EXPECT_EQ(std::string(buf, n), "abc");
    co_await p.std_in().close();
    EXPECT_TRUE((co_await p.wait()).success());
  };
  quell::block_on(body());
}

TEST(Process, BytesAReadReceivedBeforeItsCancelStayForTheNextRead) {
  for (bool exact : {false, true}) {
    auto o = sh("read x; printf abc; read y; printf def");
    o.std_in = o.std_out = stdio::pipe;
    auto p = process::spawn(o);
    char buf[16];
    auto reader = [&]() -> task<> {
      if (exact) {
        co_await p.std_out().read_exact(std::span<char>(buf, 3));
      } else {
        (void)co_await p.std_out().read_some(buf);
      }
    };
    {
      executor ex{reader()};
      EXPECT_FALSE(ex.poll_once());  // the read is in the kernel
      ASSERT_EQ(::write(p.std_in().native_handle(), "go\n", 3), 3);
      turns_until_io_done(ex);  // the kernel delivered "abc"; the reader has not resumed yet
      ASSERT_FALSE(ex.done());
      ex.cancel();  // the completion window: the read ends cancelled, its bytes stay in the stream
      EXPECT_THROW(ex.run(), quell::cancelled_error);
    }
    EXPECT_EQ(p.std_out().buffered(), 3u) << (exact ? "read_exact" : "read_some");
    auto body = [&]() -> task<> {
      co_await p.std_in().write_all("more\n");
      co_await p.std_in().close();
      auto [out, status] = co_await quell::join(read_all(p.std_out()), p.wait());
      EXPECT_EQ(out, "abcdef");
      EXPECT_TRUE(status.success());
    };
    quell::block_on(body());
  }
}

TEST(Process, ReadsRacedAgainstTheNextTurnLoseNoByte) {
  auto o = sh("cat");
  o.std_in = o.std_out = stdio::pipe;
  auto p = process::spawn(o);
  auto body = [&]() -> task<int> {
    std::string sent, got;
    int lost = 0;
    for (int i = 0; i < 200; ++i) {
      const std::string chunk = "<" + std::to_string(i) + ">";
      co_await p.std_in().write_all(chunk);
      sent += chunk;
      for (int t = 0; t < i % 4; ++t) co_await quell::yield();
      char buf[64];
      auto next_turn = []() -> task<int> {
        co_await quell::yield();
        co_return -1;
      };
      auto r = co_await quell::race(p.std_out().read_some(buf), next_turn());
      if (r.index() == 0) {
        got.append(buf, std::get<0>(r));
      } else {
        ++lost;
      }
    }
    co_await p.std_in().close();
    auto [rest, status] = co_await quell::join(read_all(p.std_out()), p.wait());
    got += rest;
    EXPECT_EQ(got, sent);
    EXPECT_TRUE(status.success());
    co_return lost;
  };
  EXPECT_GT(quell::block_on(body()), 0);
}

TEST(Process, ACancelledWriteReportsWhatWentOutAndTheChildGotExactlyThat) {
  const std::string data = random_bytes(1 << 20);
  auto o = sh("cat");
  o.std_in = o.std_out = stdio::pipe;
  auto p = process::spawn(o);
  std::size_t written = 0;
  auto body = [&]() -> task<> {
    // Nobody reads cat's output: the pipes fill and the write waits in the kernel.
    auto some_went_out = [&] { return written >= 65536; };
    co_await quell::race(p.std_in().write_all(data, &written), quell::poll_fn(some_went_out));
    EXPECT_GE(written, 65536u);
    EXPECT_LT(written, data.size());
    co_await p.std_in().close();
    auto [out, status] = co_await quell::join(read_all(p.std_out()), p.wait());
    EXPECT_TRUE(status.success());
    EXPECT_EQ(out.size(), written);
    EXPECT_TRUE(out == data.substr(0, written));
  };
  quell::block_on(body());
}

TEST(Process, AnAdoptedNonBlockingPipeIsMadeBlockingForIoUring) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
  pipe_stream r(fds[0]);
  EXPECT_EQ(::fcntl(fds[0], F_GETFL) & O_NONBLOCK, 0);
  auto body = [&]() -> task<> {
    auto writer = [&]() -> task<> {
      for (int i = 0; i < 3; ++i) co_await quell::yield();
      EXPECT_EQ(::write(fds[1], "late", 4), 4);
      ::close(fds[1]);
    };
    auto [got, ignored] = co_await quell::join(read_all(r), writer());
    (void)ignored;
    EXPECT_EQ(got, "late");
    co_await r.close();
  };
  quell::block_on(body());
}

// ---- cancelling wait() -------------------------------------------------------------------------

TEST(Process, AGracefulCancelSendsTheStopSignalAndTheChildCleansUp) {
  auto o = sh("trap 'kill $s; echo cleaned; exit 7' TERM; sleep 30 >/dev/null & s=$!; echo ready; wait");
  o.std_out = stdio::pipe;
  auto p = process::spawn(o);
  auto body = [&]() -> task<std::string> {
    // The race's other branch wins once the child is ready; the race then cancels wait().
    auto r = co_await quell::race(p.wait(), read_until(p.std_out(), "ready\n"));
    EXPECT_EQ(r.index(), 1u);
    EXPECT_EQ(p.exit_status(), exit_status::exited(7));  // wait() ended cancelled after the exit
    co_return co_await read_all(p.std_out());
  };
  EXPECT_EQ(quell::block_on(body()), "cleaned\n");
  EXPECT_TRUE(reaped(p.pid()));
}

TEST(Process, AGracefulCancelSendsTheConfiguredStopSignal) {
  auto o = sh("trap 'echo interrupted; exit 9' INT; sleep 30 >/dev/null & echo ready; wait");
  o.std_out = stdio::pipe;
  o.stop_signal = SIGINT;
  auto p = process::spawn(o);
  std::string ready = quell::block_on(read_until(p.std_out(), "ready\n"));
  EXPECT_EQ(ready, "ready\n");
  executor ex{p.wait()};
  ex.cancel();
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_EQ(p.exit_status(), exit_status::exited(9));
  EXPECT_EQ(quell::block_on(read_all(p.std_out())), "interrupted\n");
}

TEST(Process, AForcedCancelSendsSigkill) {
  auto o = sh("trap '' TERM; echo ready; exec sleep 30");  // sleep inherits the ignored TERM
  o.std_out = stdio::pipe;
  auto p = process::spawn(o);
  EXPECT_EQ(quell::block_on(read_until(p.std_out(), "ready\n")), "ready\n");
  executor ex{p.wait()};
  EXPECT_FALSE(ex.poll_once());
  ex.force_cancel();
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_EQ(p.exit_status(), exit_status::killed(SIGKILL));
  EXPECT_TRUE(reaped(p.pid()));
}

TEST(Process, AForcedRequestAfterAGracefulOneEscalatesToSigkill) {
  // The child notes SIGTERM and goes on; only SIGKILL ends it.
  auto o = sh("trap 'echo term; kill $s' TERM; echo ready; while :; do sleep 30 >/dev/null & s=$!; wait $s; done");
  o.std_out = stdio::pipe;
  auto p = process::spawn(o);
  EXPECT_EQ(quell::block_on(read_until(p.std_out(), "ready\n")), "ready\n");
  executor ex{p.wait()};
  EXPECT_FALSE(ex.poll_once());
  ex.cancel();
  EXPECT_FALSE(ex.poll_once());
  EXPECT_EQ(read_fd_until(p.std_out().native_handle(), "term\n"), "term\n");  // SIGTERM arrived
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(ex.poll_once());                   // and wait() goes on waiting
  EXPECT_TRUE(p.running());
  ex.force_cancel();
  EXPECT_THROW(ex.run(), quell::cancelled_error);
  EXPECT_EQ(p.exit_status(), exit_status::killed(SIGKILL));
}

TEST(Process, AShieldedWaitLetsTheChildRunOnThroughAGracefulCancel) {
  auto o = sh("read x; exit 0");
  o.std_in = stdio::pipe;
  auto p = process::spawn(o);
  executor ex{quell::shield(p.wait())};
  EXPECT_FALSE(ex.poll_once());
  ex.cancel();  // does not reach the wait: no signal
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(ex.poll_once());
  EXPECT_TRUE(p.running());
  p.std_in() = pipe_stream();  // the child ends by itself
  EXPECT_EQ(ex.run(), exit_status::exited(0));
}

TEST(Process, AnExitBeforeTheRequestIsTheValueEvenIfTheKernelHadNotReportedItYet) {
  auto o = sh("read x; exit 4");
  o.std_in = stdio::pipe;
  auto p = process::spawn(o);
  executor ex{p.wait()};
  EXPECT_FALSE(ex.poll_once());  // the poll on the pidfd is in the kernel
  p.std_in() = pipe_stream();    // closed: the child reads the end and exits
  await_exit_unreaped(p.pid());
  ex.cancel();  // the exit came first: no signal, and wait() completes with it
  EXPECT_EQ(ex.run(), exit_status::exited(4));
  EXPECT_TRUE(reaped(p.pid()));
}

TEST(Process, AnExitCollectedBeforeTheRequestIsTheValueInTheCompletionWindow) {
  auto o = sh("read x; exit 5");
  o.std_in = stdio::pipe;
  auto p = process::spawn(o);
  executor ex{p.wait()};
  EXPECT_FALSE(ex.poll_once());
  p.std_in() = pipe_stream();
  await_exit_unreaped(p.pid());
  turns_until_io_done(ex);  // the poll reported it, the child is reaped, wait()'s waiter is queued
  ASSERT_FALSE(ex.done());
  EXPECT_EQ(p.exit_status(), exit_status::exited(5));
  ex.cancel();
  EXPECT_EQ(ex.run(), exit_status::exited(5));
}

TEST(Process, ACancelPendingBeforeWaitStartsStillStopsAndReapsTheChild) {
  {
    spawn_options o;
    o.program = "sleep";
    o.args = {"30"};
    auto p = process::spawn(o);
    executor ex{p.wait()};
    ex.cancel();  // before the first turn: wait() starts with the request pending
    EXPECT_THROW(ex.run(), quell::cancelled_error);
    EXPECT_EQ(p.exit_status(), exit_status::killed(SIGTERM));
    EXPECT_TRUE(reaped(p.pid()));
  }
  {
    auto p = process::spawn(sh("exit 6"));
    await_exit_unreaped(p.pid());
    executor ex{p.wait()};
    ex.force_cancel();  // it had exited: that is the value, no signal
    EXPECT_EQ(ex.run(), exit_status::exited(6));
  }
}

TEST(Process, AWaitThatCompletedButLostARaceLeavesTheStatusForTheNextWait) {
  auto o = sh("read x; printf bye; exit 2");
  o.std_in = o.std_out = stdio::pipe;
  auto p = process::spawn(o);
  char buf[16];
  executor ex{quell::race(p.wait(), p.std_out().read_some(buf))};
  EXPECT_FALSE(ex.poll_once());  // both in the kernel
  p.std_in() = pipe_stream();    // the child writes, then exits
  await_exit_unreaped(p.pid());
  turns_until_io_done(ex);  // both reported in one step, the read first: it wins the next turn
  auto r = ex.run();
  ASSERT_EQ(r.index(), 1u);
  EXPECT_EQ(std::string(buf, std::get<1>(r)), "bye");
  // wait() had completed too (in the completion window of the race's cancel): not lost.
  EXPECT_EQ(p.exit_status(), exit_status::exited(2));
  EXPECT_EQ(quell::block_on(p.wait()), exit_status::exited(2));
}

TEST(Process, OneWaitAtATimeAndAPendingWaitSurvivesAMoveOfItsProcess) {
  auto o = sh("read x; exit 1");
  o.std_in = stdio::pipe;
  auto p = process::spawn(o);
  executor ex{p.wait()};
  EXPECT_FALSE(ex.poll_once());
  auto second = [&]() -> task<> { EXPECT_THROW((void)co_await p.wait(), std::logic_error); };
  quell::block_on(second());
  process moved = std::move(p);
  moved.std_in() = pipe_stream();
  EXPECT_EQ(ex.run(), exit_status::exited(1));
  EXPECT_EQ(moved.exit_status(), exit_status::exited(1));
}

// ---- ownership, zombies, descriptors --------------------------------------------------------------

TEST(Process, ManyChildrenLeaveNoZombieAndNoDescriptor) {
  const int fds = count_fds();
  std::vector<pid_t> pids;
  auto body = [&]() -> task<> {
    for (int i = 0; i < 20; ++i) {
      auto o = sh("read line; echo \"$line\"; echo e >&2");
      o.std_in = o.std_out = o.std_err = stdio::pipe;
      auto p = process::spawn(o);
      pids.push_back(p.pid());
      co_await p.std_in().write_all(std::to_string(i) + "\n");
      auto [out, err, status] = co_await quell::join(read_all(p.std_out()), read_all(p.std_err()), p.wait());
      EXPECT_EQ(out, std::to_string(i) + "\n");
      EXPECT_EQ(err, "e\n");
      EXPECT_TRUE(status.success());
    }
  };
  quell::block_on(body());
  EXPECT_EQ(count_fds(), fds);
  for (pid_t pid : pids) {
    EXPECT_TRUE(reaped(pid)) << pid;
    struct stat ignored;
    // Gone from /proc too (unless the number was given to another process since: then not ours).
    if (::stat(("/proc/" + std::to_string(pid)).c_str(), &ignored) == 0) {
      std::ifstream stat_file("/proc/" + std::to_string(pid) + "/stat");
      std::string pid_s, comm, state;
      int ppid = 0;
      stat_file >> pid_s >> comm >> state >> ppid;
      EXPECT_NE(ppid, ::getpid()) << pid;
    }
  }
}

TEST(Process, CancelledAtEverySuspensionPointTheChildIsAlwaysReapedAndNothingLeaks) {
  const int fds = count_fds();
  std::vector<pid_t> pids;
  std::string got;
  std::optional<exit_status> status;
  auto report = quell::testing::cancel_sweep(
      [&](quell::virtual_clock&) {
        got.clear();
        status.reset();
        return feed_read_wait(pids, got, status);
      },
      [&](const quell::testing::sweep_point& pt) {
        ASSERT_FALSE(pids.empty());
        EXPECT_TRUE(reaped(pids.back())) << pt.describe();  // (destroying it unreaped would have terminated)
        EXPECT_TRUE(std::string("hello, child\n").starts_with(got)) << pt.describe() << ": " << got;
        if (pt.outcome == quell::testing::sweep_point::ended::value) {
          EXPECT_EQ(got, "hello, child\n") << pt.describe();
          EXPECT_EQ(status, exit_status::exited(0)) << pt.describe();
        }
        if (pt.outcome == quell::testing::sweep_point::ended::error) {
          try {
            std::rethrow_exception(pt.error);
          } catch (const std::exception& e) {
            ADD_FAILURE() << pt.describe() << ": " << e.what();
          }
        }
      });
  EXPECT_GT(report.points, 5u);
  EXPECT_GT(report.completions, 3u);
  EXPECT_EQ(pids.size(), report.runs);
  EXPECT_EQ(count_fds(), fds);
}

TEST(ProcessDeathTest, DestroyingAProcessWhoseChildWasNotReapedTerminatesNamingIt) {
  // `true` exits at once, but nobody reaped it: a zombie is as much a bug as a running child. (A
  // long-lived child would keep the death test's own pipe, which gtest opens without
  // close-on-exec, open until it ended.)
  EXPECT_DEATH(
      {
        spawn_options o;
        o.program = "true";
        auto p = process::spawn(o);
      },
      "a process \\(`true`, pid [0-9]+\\) was destroyed while its child was still running \\(never reaped\\)");
}

TEST(ProcessDeathTest, DestroyingAProcessWhileAWaitIsPendingTerminates) {
  EXPECT_DEATH(
      {
        auto o = sh("read x");
        o.std_in = stdio::pipe;
        auto p = std::make_unique<process>(process::spawn(o));
        executor ex{p->wait()};
        (void)ex.poll_once();
        p.reset();
      },
      "was destroyed while a wait\\(\\) on it was pending");
}
