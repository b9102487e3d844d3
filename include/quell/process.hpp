// Child processes: spawn a program, talk to it through pipes, wait for its exit.
//
//   quell::spawn_options o;
//   o.program = "sort";
//   o.std_in = o.std_out = quell::stdio::pipe;
//   auto p = quell::process::spawn(o);
//   auto feed = [&]() -> quell::task<> {
//     co_await p.std_in().write_all("b\na\n");
//     co_await p.std_in().close();                     // the child sees the end of its input
//   };
//   auto collect = [&]() -> quell::task<std::string> {
//     std::string out;
//     char buf[4096];
//     while (std::size_t n = co_await p.std_out().read_some(buf)) out.append(buf, n);
//     co_return out;                                  // 0: the child closed its stdout
//   };
//   auto [fed, out, status] = co_await quell::join(feed(), collect(), p.wait());
//   // out == "a\nb\n", status.to_string() == "exited with code 0"
//
// SPAWNING
//
// process::spawn(options) starts the program at once (posix_spawn, then pidfd_open) and returns the
// process; it does not suspend and needs no executor. The program is a path, or a name without a
// '/' looked up in this process's PATH (posix_spawnp). A relative path is taken from the child's
// working directory (options.cwd) when one is given. The child starts with every signal unblocked
// (quell's signal_set and run_main block SIGINT and SIGTERM in the parent; a child must not
// inherit that) and SIGPIPE at its default action; otherwise it inherits what exec keeps (ignored
// signals, the session, limits). It inherits no descriptor of this process other than its three
// standard streams: everything quell opens is close-on-exec (the caller's own descriptors are the
// caller's business: open them with O_CLOEXEC too).
// Failures throw, with nothing left behind (no child, no zombie, no descriptor):
//   - a program that cannot be executed: std::system_error with exec's errno,
//     "spawn nosuch: No such file or directory" (" (in DIR)" is added when options.cwd is set:
//     a missing working directory reads the same way);
//   - bad options (no program, a NUL byte in an argument or a variable, a variable name that is
//     empty or holds '='): std::invalid_argument;
//   - descriptors or processes exhausted: std::system_error (EMFILE, EAGAIN).
// Each of stdin, stdout and stderr is inherited from this process (the default), connected to
// /dev/null, or a pipe whose other end is a pipe_stream of the process (std_in(), std_out(),
// std_err()). The first pipe_stream made (a process's pipe, or a pipe the caller adopts) sets this
// process's SIGPIPE to "ignored" if it was at its default action (once; Python and Rust programs
// start that way): a write to a reader that went away is then an error (std::system_error EPIPE,
// "write: Broken pipe") instead of the death of this process. A SIGPIPE handler the program
// installed is left alone.
//
// THE PIPES
//
// A pipe_stream is an I/O object of quell like tcp_stream, read and written with io_uring
// (IORING_OP_READ / IORING_OP_WRITE), with the same operations and the same cancel-safety:
//   - read_some, read_exact: bytes a cancelled read received anyway stay in the stream and are
//     returned first by the next read (the read ends cancelled); read_exact keeps every byte it
//     received, even a complete buffer; a read whose result a race discards puts it back.
//   - write_all: a cancelled write stores in `*written` how many bytes went out (the prefix the
//     child may have read); one that finished anyway completes (completion wins).
//   - close(): cancels the stream's pending operations, waits until the kernel let go of them, then
//     closes the descriptor. Closing std_in() is how the child sees the end of its input.
// There is no receive-ahead on pipes: each read is one read(2) in the kernel, cancelled two-phase.
// The streams may be moved out of the process (they outlive it if they like).
//
// WAITING: co_await p.wait() -> exit_status
//
// wait() suspends until the child has exited, reaps it (no zombie remains) and yields how it
// ended: exited with a code, or killed by a signal. The exit is seen through the child's pidfd
// (an io_uring poll on it, the readiness leaf's mechanism), then waitid(P_PIDFD, WNOHANG) reaps.
// After that exit_status() holds the same value, and wait() again yields it at once (no
// suspension). One wait() at a time: a second one while the first is pending is std::logic_error.
//
// Cancelling wait() is how a child is stopped: the request is passed to the child as a signal,
// then wait() goes on waiting for the exit (the leaf protocol's "cancel in flight": it never ends
// before the child is reaped, so nothing runs unowned and no zombie is left).
//   - graceful request: options.stop_signal (SIGTERM by default) is sent;
//   - forced request (or a forced request after a graceful one: escalation): SIGKILL is sent;
//   - the child had already exited when the request arrived (whether or not the kernel had told
//     quell yet, including the completion window: the exit was collected, the waiter not resumed
//     yet): no signal is sent, and the status is the value of wait() (completion wins; the task's
//     next suspension point is cancelled, as for every operation that completed anyway);
//   - the child exits after the request (because of the signal, or by itself in the instant
//     between the check and the signal: the two cannot be told apart): wait() ends cancelled,
//     and the status stays readable through exit_status(): nothing is lost;
//   - the request is pending before wait() starts (the task was already cancelled): wait() starts
//     anyway (it "insists", await_early_cancel() is false), so a cancelled task that owns a child
//     still stops and reaps it; then it is as above (an exit that already happened is the value,
//     otherwise the signal is sent and wait() ends cancelled after the exit);
//   - the request arrives before the poll reached the kernel (the same turn): the same as in the
//     kernel: the signal is sent, the poll stays, and it reports the exit.
// A child that ignores the graceful signal keeps wait() (and whatever awaits it) waiting until a
// forced request arrives (run_main's second Ctrl-C or grace period, executor::shutdown's grace,
// a forced cancel); that is the point of a graceful request. A child this process may not signal
// (a set-user-ID program: EPERM) is waited for all the same, as an unaware awaitable is.
// A wait() whose result a race discards (it lost by completing in the same turn as the winner)
// leaves the status in the process: exit_status() and the next wait() deliver it.
// To let a child run on through a graceful cancellation of the awaiting task, shield the wait()
// (quell::shield(p.wait())): only a forced request reaches it then, and sends SIGKILL.
//
// OWNERSHIP
//
// A process owns its child until the child is reaped. Destroying (or assigning over) a process
// whose child has not been reaped (wait() never completed), or on which a wait() is pending, is a
// bug reported loudly (std::terminate with a message naming the program and its pid), as for a
// dropped running task: co_await wait() first (cancel it to stop the child). The usual shape is to
// await wait() together with the I/O, in a join: if the task is cancelled, or the I/O fails, the
// join cancels wait() too, which stops the child, and the process is reaped before it goes.
// Moving a process is fine, also while a wait() on it is pending (its state is not in the object).
// A process and its streams are used by one executor at a time, like a socket: nothing is armed
// between operations, so they may be handed to another core between operations, but they are not
// thread-safe. Children must not be reaped by anyone else (a SIGCHLD set to SIG_IGN, or a
// waitpid(-1) elsewhere in the program): wait() then throws std::system_error (ECHILD, "the child
// was reaped by someone else") and the process counts as finished.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "quell/cancellation.hpp"
#include "quell/net.hpp"

namespace quell {

// How a child ended.
class exit_status {
 public:
  static exit_status exited(int code) noexcept { return exit_status(false, code, false); }
  static exit_status killed(int signo, bool core_dumped = false) noexcept {
    return exit_status(true, signo, core_dumped);
  }

  // exited with code 0
  bool success() const noexcept { return !signalled_ && value_ == 0; }
  // the exit code (0..255), if it exited
  std::optional<int> code() const noexcept { return signalled_ ? std::nullopt : std::optional<int>(value_); }
  // the signal that killed it, if one did
  std::optional<int> signal() const noexcept { return signalled_ ? std::optional<int>(value_) : std::nullopt; }
  bool core_dumped() const noexcept { return dumped_; }
  // "exited with code 3", "killed by SIGTERM", "killed by SIGSEGV (core dumped)"
  std::string to_string() const;

  friend bool operator==(const exit_status&, const exit_status&) = default;

 private:
  exit_status(bool s, int v, bool d) noexcept : value_(v), signalled_(s), dumped_(d) {}
  int value_ = 0;
  bool signalled_ = false;
  bool dumped_ = false;
};

// What each of the child's standard streams is connected to.
enum class stdio : unsigned char {
  inherit,  // this process's own (the default)
  pipe,     // a pipe; this end is the process's std_in() / std_out() / std_err()
  null,     // /dev/null
};

struct spawn_options {
  std::string program;            // a path, or a name looked up in PATH (no '/')
  std::vector<std::string> args;  // argv[1..]; argv[0] is `program`
  // The environment: this process's (when the child starts), or none with clear_env; then each
  // change in order: a name with a value sets it, a name with std::nullopt removes it.
  bool clear_env = false;
  std::vector<std::pair<std::string, std::optional<std::string>>> env;
  std::string cwd;  // working directory; empty: this process's
  stdio std_in = stdio::inherit;
  stdio std_out = stdio::inherit;
  stdio std_err = stdio::inherit;
  int stop_signal = SIGTERM;  // what a graceful cancel of wait() sends
};

namespace detail {
struct process_state;
struct process_wait_op;
}  // namespace detail

// One end of a pipe, read or written with io_uring (cancel-safety: see THE PIPES above).
class pipe_stream {
 public:
  pipe_stream() noexcept = default;
  // Adopts a pipe end (or another descriptor that is not a socket: a FIFO, a terminal). O_NONBLOCK
  // is cleared: io_uring waits for a blocking descriptor in the kernel, where a cancel reaches it.
  explicit pipe_stream(int fd);

  // Reads what is available (at least one byte, unless the writer closed its end: then 0).
  detail::read_some_op read_some(std::span<char> buf) { return {h_.use("read"), buf}; }
  // Reads exactly buf.size() bytes; throws end_of_stream if the writer closes first.
  detail::read_exact_op read_exact(std::span<char> buf) { return {h_.use("read"), buf}; }
  // Writes every byte of `data`; `*written` follows its progress.
  detail::write_all_op write_all(std::string_view data, std::size_t* written = nullptr) {
    return {h_.use("write"), data, written};
  }
  detail::close_op close() noexcept { return {&h_}; }

  bool is_open() const noexcept { return h_.is_open(); }
  int native_handle() const noexcept { return h_.fd(); }
  // Bytes that cancelled reads received and the next read returns first.
  std::size_t buffered() const noexcept { return h_.get() ? h_.get()->stashed() : 0; }

 private:
  detail::io_handle h_;
};

class process {
 public:
  process() noexcept;  // no child
  // Starts the program (see SPAWNING above); throws on failure, leaving nothing behind.
  static process spawn(const spawn_options& options);

  process(process&& o) noexcept;
  // Assigning over a process whose child is not reaped is the loud error of the destructor.
  process& operator=(process&& o) noexcept;
  ~process();

  // Awaitable yielding quell::exit_status (see WAITING above). Throws std::logic_error for a
  // process without a child, and (from co_await) outside an executor.
  detail::process_wait_op wait();

  // The status, once wait() has reaped the child (also after a wait() that ended cancelled).
  std::optional<quell::exit_status> exit_status() const noexcept;
  // True from spawn until the child is reaped.
  bool running() const noexcept;
  pid_t pid() const noexcept;
  const std::string& program() const noexcept;

  // Sends `signo` to the child (pidfd_send_signal). Does nothing once the child is reaped;
  // std::system_error if the kernel refuses (EPERM for a child that changed its user, EINVAL for a
  // bad signal number).
  void send_signal(int signo);

  // The pipe ends (an empty stream for a standard stream that is not a pipe).
  pipe_stream& std_in() noexcept { return in_; }
  pipe_stream& std_out() noexcept { return out_; }
  pipe_stream& std_err() noexcept { return err_; }

 private:
  void check_dropped() noexcept;

  std::unique_ptr<detail::process_state> st_;
  pipe_stream in_, out_, err_;
};

namespace detail {

// What a process shares with the wait() in flight on it (heap: the process may move meanwhile).
struct process_state {
  ~process_state();

  pid_t pid = -1;
  int pidfd = -1;
  int stop_signal = SIGTERM;
  std::string program;
  std::optional<quell::exit_status> status;
  int wait_error = 0;                  // waitid failed (ECHILD: reaped by someone else); the child is gone
  process_wait_op* waiting = nullptr;  // the pending wait(), if any

  bool finished() const noexcept { return status.has_value() || wait_error != 0; }
  // waitid(P_PIDFD, WEXITED | WNOHANG): true once the child is gone (status or error recorded).
  bool reap() noexcept;
};

// The wait() leaf: an io_uring poll on the pidfd that never cancels itself; a cancel request
// becomes a signal to the child (see WAITING in quell/process.hpp).
struct process_wait_op : io_op {
  explicit process_wait_op(process_state* s) noexcept : io_op(&prep_thunk, &complete_thunk), st(s) {}
  // Only before it started (the driver moves the awaiter into place).
  process_wait_op(process_wait_op&& o) noexcept : io_op(&prep_thunk, &complete_thunk), st(o.st) {}

  bool await_early_cancel() noexcept { return false; }  // insists: a cancelled owner still reaps
  bool await_ready();
  void await_suspend(std::coroutine_handle<> h);
  bool await_cancel(std::coroutine_handle<> h, const cancel_request& r) noexcept;
  // Delivered unless the exit came after the request (then the status is in exit_status()).
  bool await_must_resume() const noexcept { return !caused || error != 0; }
  // The status stays in the process for exit_status() and the next wait().
  bool await_give_back() noexcept { return error == 0; }
  quell::exit_status await_resume();

  static void prep_thunk(io_op* op, io_uring_sqe* sqe) noexcept;
  static bool complete_thunk(io_op* op, int res) noexcept;
  bool settle() noexcept;  // copies the outcome out of the state once the child is gone

  process_state* st;
  std::optional<quell::exit_status> result;
  int error = 0;        // errno to report (waitid's ECHILD, or the poll's failure)
  std::string what;     // ... and what failed ("wait sleep")
  bool caused = false;  // a request found the child running and signalled it
};

}  // namespace detail

inline detail::process_wait_op process::wait() {
  if (!st_) throw std::logic_error("quell: process::wait: no child (a default-constructed or moved-from process)");
  return detail::process_wait_op(st_.get());
}

}  // namespace quell
