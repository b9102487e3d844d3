#include "quell/process.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

extern char** environ;

namespace {
// Through syscall(2): glibc 2.36's <sys/pidfd.h> declares these without C linkage for C++.
int sys_pidfd_open(pid_t pid) noexcept { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0u)); }
int sys_pidfd_send_signal(int pidfd, int signo) noexcept {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, signo, nullptr, 0u));
}
}  // namespace

namespace quell {

std::string exit_status::to_string() const {
  if (!signalled_) return "exited with code " + std::to_string(value_);
  const char* abbrev = ::sigabbrev_np(value_);
  std::string s = abbrev ? std::string("killed by SIG") + abbrev : "killed by signal " + std::to_string(value_);
  if (dumped_) s += " (core dumped)";
  return s;
}

// ---- pipe_stream ---------------------------------------------------------------------------

namespace {
void ignore_sigpipe();
}  // namespace

// Any pipe written through quell (a child's stdin, or one the caller adopts) must not kill this
// process with SIGPIPE when its reader goes: see ignore_sigpipe.
pipe_stream::pipe_stream(int fd) : h_(fd) {
  ignore_sigpipe();
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK)) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  h_.get()->plain_rw = true;
  h_.get()->ahead_off = true;
}

namespace detail {

// ---- the child's state ---------------------------------------------------------------------

process_state::~process_state() {
  if (pidfd >= 0) ::close(pidfd);
}

bool process_state::reap() noexcept {
  if (finished()) return true;
  siginfo_t info{};
  int rc;
  do {
    rc = ::waitid(P_PIDFD, static_cast<id_t>(pidfd), &info, WEXITED | WNOHANG);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    wait_error = errno;  // ECHILD: someone else reaped it; either way it is not ours to wait for
    return true;
  }
  if (info.si_pid == 0) return false;  // still running
  if (info.si_code == CLD_EXITED) {
    status = exit_status::exited(info.si_status);
  } else {
    status = exit_status::killed(info.si_status, info.si_code == CLD_DUMPED);
  }
  return true;
}

// ---- wait() --------------------------------------------------------------------------------

bool process_wait_op::settle() noexcept {
  if (!st->reap()) return false;
  if (st->status) {
    result = st->status;
  } else {
    error = st->wait_error;
    try {
      what = "wait " + st->program;  // (the process may be gone when the waiter reads it)
    } catch (...) {
    }
  }
  return true;
}

bool process_wait_op::await_ready() {
  if (st->finished()) return settle();
  if (st->waiting) throw std::logic_error("quell: process::wait: another wait() on this process is pending");
  if (!tls.current) throw std::logic_error("quell: an I/O operation was started outside an executor");
  return settle();  // it may have exited already: no need to ask the kernel to tell us
}

void process_wait_op::await_suspend(std::coroutine_handle<> h) {
  reactor& r = reactor::current();  // may throw (the ring's first use): before anything is marked
  waiter = h;
  st->waiting = this;
  r.submit(this);
}

void process_wait_op::prep_thunk(io_op* op, io_uring_sqe* sqe) noexcept {
  io_uring_prep_poll_add(sqe, static_cast<process_wait_op*>(op)->st->pidfd, POLLIN);
}

bool process_wait_op::complete_thunk(io_op* op, int res) noexcept {
  auto* self = static_cast<process_wait_op*>(op);
  if (res == -EINTR || res == -EAGAIN) return false;  // poll again
  // The pidfd is readable once the child has exited. (A poll that failed is asked too: if the
  // child is gone the exit is what counts; otherwise the failure is reported.)
  if (!self->settle()) {
    if (res >= 0) return false;  // not reapable yet: poll again
    self->error = -res;
    try {
      self->what = "wait " + self->st->program;
    } catch (...) {
    }
  }
  self->st->waiting = nullptr;  // from here on the op does not touch the process (it may go)
  return true;
}

bool process_wait_op::await_cancel(std::coroutine_handle<>, const cancel_request& r) noexcept {
  // Reaped, its resumption queued (the completion window): the exit came first; it is delivered.
  if (state == phase::done) return false;
  if (!caused) {
    // Exited before the request (the kernel may not have reported it yet): completion wins, and
    // the poll, which sees the exit at once, resumes the waiter.
    if (settle()) return false;
    caused = true;
  } else if (st->finished()) {
    return false;  // an escalation that came after the exit: nothing to stop any more
  }
  // Errors are left to the poll: ESRCH cannot happen before the reap (a zombie takes signals),
  // and a child that refuses the signal (EPERM: it changed its user) is waited for all the same.
  (void)sys_pidfd_send_signal(st->pidfd, r.forced() ? SIGKILL : st->stop_signal);
  return false;  // the poll reports the exit, which ends the wait (cancelled: see await_must_resume)
}

exit_status process_wait_op::await_resume() {
  if (result) return *result;
  if (error == ECHILD) {
    throw std::system_error(error, std::system_category(),
                            what +
                                ": the child was reaped by someone else (SIGCHLD ignored, or waitpid(-1) elsewhere "
                                "in this program)");
  }
  throw std::system_error(error, std::system_category(), what);
}

}  // namespace detail

// ---- spawn ---------------------------------------------------------------------------------

namespace {

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::system_category(), what);
}

// Descriptors of one spawn, closed on every way out unless handed over.
struct fd_guard {
  int fd = -1;
  fd_guard() noexcept = default;
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

void check_no_nul(std::string_view s, const char* what) {
  if (s.find('\0') != std::string_view::npos) {
    throw std::invalid_argument(std::string("quell: process::spawn: ") + what + " contains a NUL byte");
  }
}

// A write to a pipe whose reader has gone raises SIGPIPE in the writer, and io_uring writes as the
// submitting thread: at its default action that kills this process. quell's sockets send with
// MSG_NOSIGNAL; a pipe has no such flag, so the signal is ignored process-wide (only if nobody
// chose an action for it), the way Python and Rust programs start. Children get it back at its
// default (POSIX_SPAWN_SETSIGDEF).
void ignore_sigpipe() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction old {};
    if (::sigaction(SIGPIPE, nullptr, &old) != 0) return;
    if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL) return;
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    ::sigemptyset(&ign.sa_mask);
    ::sigaction(SIGPIPE, &ign, nullptr);
  });
}

// The child's ends of the pipes become its descriptors 0, 1 and 2 through dup2 in the child. Each
// is moved to 3 or above first: a parent with a standard descriptor closed gets 0, 1 or 2 back from
// pipe2, and one dup2 would then overwrite another child end before it is used.
int above_stdio(fd_guard& g) {
  if (g.fd > 2) return g.fd;
  const int moved = ::fcntl(g.fd, F_DUPFD_CLOEXEC, 3);
  if (moved < 0) throw_errno(errno, "process::spawn: fcntl");
  ::close(g.fd);
  g.fd = moved;
  return moved;
}

struct actions {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  actions() {
    if (int e = ::posix_spawn_file_actions_init(&fa); e != 0) throw_errno(e, "process::spawn");
    if (int e = ::posix_spawnattr_init(&attr); e != 0) {
      ::posix_spawn_file_actions_destroy(&fa);
      throw_errno(e, "process::spawn");
    }
  }
  ~actions() {
    ::posix_spawnattr_destroy(&attr);
    ::posix_spawn_file_actions_destroy(&fa);
  }
  actions(const actions&) = delete;
  actions& operator=(const actions&) = delete;
};

void check(int e) {
  if (e != 0) throw_errno(e, "process::spawn");
}

}  // namespace

process::process() noexcept = default;

process::process(process&& o) noexcept
    : st_(std::move(o.st_)), in_(std::move(o.in_)), out_(std::move(o.out_)), err_(std::move(o.err_)) {}

process& process::operator=(process&& o) noexcept {
  if (this != &o) {
    check_dropped();
    st_ = std::move(o.st_);
    in_ = std::move(o.in_);
    out_ = std::move(o.out_);
    err_ = std::move(o.err_);
  }
  return *this;
}

process::~process() { check_dropped(); }

void process::check_dropped() noexcept {
  if (!st_) return;
  if (st_->waiting) {
    detail::fatal("quell: a process (`" + st_->program + "`, pid " + std::to_string(st_->pid) +
                  ") was destroyed while a wait() on it was pending");
  }
  if (!st_->finished()) {
    detail::fatal("quell: a process (`" + st_->program + "`, pid " + std::to_string(st_->pid) +
                  ") was destroyed while its child was still running (never reaped). co_await its wait() before "
                  "dropping it; cancelling wait() stops the child.");
  }
}

std::optional<quell::exit_status> process::exit_status() const noexcept { return st_ ? st_->status : std::nullopt; }

bool process::running() const noexcept { return st_ && !st_->finished(); }

pid_t process::pid() const noexcept { return st_ ? st_->pid : -1; }

const std::string& process::program() const noexcept {
  static const std::string none;
  return st_ ? st_->program : none;
}

void process::send_signal(int signo) {
  if (!st_)
    throw std::logic_error("quell: process::send_signal: no child (a default-constructed or moved-from process)");
  if (st_->finished()) return;
  if (sys_pidfd_send_signal(st_->pidfd, signo) != 0) {
    throw_errno(errno, "send_signal " + std::to_string(signo) + " to " + st_->program);
  }
}

process process::spawn(const spawn_options& o) {
  if (o.program.empty()) throw std::invalid_argument("quell: process::spawn: no program given");
  check_no_nul(o.program, "the program");
  for (const auto& a : o.args) check_no_nul(a, "an argument");
  check_no_nul(o.cwd, "the working directory");
  for (const auto& kv : o.env) {
    const std::string& name = kv.first;
    if (name.empty() || name.find('=') != std::string::npos) {
      throw std::invalid_argument("quell: process::spawn: bad environment variable name \"" + name + "\"");
    }
    check_no_nul(name, "an environment variable name");
    if (kv.second) check_no_nul(*kv.second, "an environment variable");
  }
  if (o.stop_signal <= 0 || o.stop_signal >= NSIG) {
    throw std::invalid_argument("quell: process::spawn: bad stop_signal " + std::to_string(o.stop_signal));
  }

  std::vector<char*> argv;
  argv.reserve(o.args.size() + 2);
  argv.push_back(const_cast<char*>(o.program.c_str()));
  for (const auto& a : o.args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  std::vector<std::string> env;
  if (!o.clear_env) {
    for (char** e = environ; e && *e; ++e) env.emplace_back(*e);
  }
  for (const auto& kv : o.env) {
    const std::string& n = kv.first;
    std::erase_if(env, [&n](const std::string& v) {
      return v.size() > n.size() && v[n.size()] == '=' && v.compare(0, n.size(), n) == 0;
    });
    if (kv.second) env.push_back(n + "=" + *kv.second);
  }
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (auto& v : env) envp.push_back(v.data());
  envp.push_back(nullptr);

  actions act;
  check(::posix_spawnattr_setflags(&act.attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF));
  sigset_t none;
  ::sigemptyset(&none);
  check(::posix_spawnattr_setsigmask(&act.attr, &none));
  sigset_t defaults;
  ::sigemptyset(&defaults);
  ::sigaddset(&defaults, SIGPIPE);
  check(::posix_spawnattr_setsigdefault(&act.attr, &defaults));
  if (!o.cwd.empty()) check(::posix_spawn_file_actions_addchdir_np(&act.fa, o.cwd.c_str()));

  // Per standard stream: the child's end (closed here once the child has it) and ours.
  fd_guard child_end[3], our_end[3];
  const stdio modes[3] = {o.std_in, o.std_out, o.std_err};
  if (modes[0] == stdio::pipe) ignore_sigpipe();
  for (int target = 0; target < 3; ++target) {
    switch (modes[target]) {
      case stdio::inherit:
        break;
      case stdio::null:
        check(::posix_spawn_file_actions_addopen(&act.fa, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0));
        break;
      case stdio::pipe: {
        int fds[2];
        // Blocking ends: io_uring waits for them in the kernel (a non-blocking one would only say EAGAIN).
        if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno(errno, "spawn " + o.program + ": pipe2");
        const bool child_reads = target == 0;
        child_end[target].fd = child_reads ? fds[0] : fds[1];
        our_end[target].fd = child_reads ? fds[1] : fds[0];
        above_stdio(child_end[target]);
        // dup2 clears close-on-exec on the copy (the originals close at exec).
        check(::posix_spawn_file_actions_adddup2(&act.fa, child_end[target].fd, target));
        break;
      }
    }
  }

  // Everything that can fail is done before the child exists: from the spawn on, nothing throws
  // but the spawn's own failure (which leaves no child), so a child is never left unowned.
  auto st = std::make_unique<detail::process_state>();
  st->stop_signal = o.stop_signal;
  st->program = o.program;
  pipe_stream ends[3];
  for (int i = 0; i < 3; ++i) {
    if (our_end[i].fd < 0) continue;
    ends[i] = pipe_stream(our_end[i].fd);  // (on failure the guard still closes it)
    our_end[i].fd = -1;
  }

  pid_t pid = -1;
  const bool search = o.program.find('/') == std::string::npos;
  // glibc's posix_spawn waits (CLONE_VFORK) until the child has exec'd or failed, and reports the
  // failure here (then it has reaped the child itself).
  const int rc = search ? ::posix_spawnp(&pid, o.program.c_str(), &act.fa, &act.attr, argv.data(), envp.data())
                        : ::posix_spawn(&pid, o.program.c_str(), &act.fa, &act.attr, argv.data(), envp.data());
  if (rc != 0) throw_errno(rc, "spawn " + o.program + (o.cwd.empty() ? std::string() : " (in " + o.cwd + ")"));

  // Our child: its pid cannot be reused before we reap it, so this pidfd is surely its.
  const int pidfd = sys_pidfd_open(pid);  // close-on-exec always
  if (pidfd < 0) {
    const int err = errno;
    ::kill(pid, SIGKILL);
    int ignored;
    while (::waitpid(pid, &ignored, 0) < 0 && errno == EINTR) {
    }
    throw_errno(err, "spawn " + o.program + ": pidfd_open");
  }

  st->pid = pid;
  st->pidfd = pidfd;
  process p;
  p.st_ = std::move(st);
  p.in_ = std::move(ends[0]);
  p.out_ = std::move(ends[1]);
  p.err_ = std::move(ends[2]);
  return p;
}

}  // namespace quell
