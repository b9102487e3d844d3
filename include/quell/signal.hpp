// POSIX signals as awaitable events, and run_main: a process's main task with Ctrl-C handling.
//
//   quell::signal_set sigs{SIGINT, SIGTERM};
//   int signo = co_await sigs.wait();
//
// A signal_set blocks its signals for the calling thread (create it before starting other
// threads, so they inherit the mask) and receives them through a signalfd read on io_uring. The
// destructor restores the previous mask. wait() is an I/O leaf like any other: a wait cancelled
// in the kernel, or after the kernel delivered a signal but before the waiter resumed, keeps the
// signal for the next wait() and ends cancelled; so does a wait whose result a race discards.
//
//   int main() { return quell::run_main(serve()); }
//
// run_main(task<int>, grace) runs the task as an executor's root and watches SIGINT and SIGTERM:
//   - the first signal cancels the root gracefully (reason: signal, "SIGINT"): its cleanup hooks
//     and async cleanups run;
//   - a second signal, or the grace period running out after the first, forces the cancellation
//     (running cleanup is cancelled too, shields do not hold it back);
//   - a third signal ends the process at once (std::_Exit(128 + the first signal's number)),
//     after one line on stderr: the forced cancellation was waiting for something that does not
//     answer, and the user has asked three times;
//   - SIGQUIT (Ctrl-\\; run_main_options::dump_signal, 0 for none) prints the live task tree
//     (quell/task_tree.hpp) to stderr and changes nothing else: every task goes on as before (a
//     runtime's cores each add their part when they next look at their mailbox; after a second
//     the parts that came are printed, naming the cores that did not answer). A dump_signal of
//     SIGINT or SIGTERM is refused: one line on stderr, exit code 2;
//   - it returns the root's value; if the root ended cancelled because of a signal it returns 0
//     when the cancellation stayed graceful (an orderly shutdown) and 128 + the signal number
//     when it had to be forced (the shell's convention for "killed by"); if the root threw, it
//     prints the error to stderr and returns 1.
#pragma once

#include <signal.h>

#include <initializer_list>

#include "quell/clock.hpp"
#include "quell/net.hpp"
#include "quell/task.hpp"

namespace quell {

namespace detail {
struct signal_wait_op : io_leaf<signal_wait_op> {
  explicit signal_wait_op(io_object* o) : io_leaf(o) {}
  bool await_ready();
  void prep(io_uring_sqe* sqe) noexcept;
  bool on_cqe(int) noexcept { return true; }
  bool on_cancel() noexcept;
  bool give_back() noexcept;
  int await_resume();

  alignas(8) unsigned char info[128];  // struct signalfd_siginfo
  int stashed = 0;
};
}  // namespace detail

class signal_set {
 public:
  // Throws std::system_error if the mask or the signalfd cannot be set up.
  explicit signal_set(std::initializer_list<int> signals);
  ~signal_set();
  signal_set(const signal_set&) = delete;
  signal_set& operator=(const signal_set&) = delete;

  detail::signal_wait_op wait() { return detail::signal_wait_op(h_.use("signal_set::wait")); }
  int native_handle() const noexcept { return h_.fd(); }

 private:
  detail::io_handle h_;
  sigset_t previous_;
};

struct run_main_options {
  duration grace = std::chrono::seconds(10);
  int dump_signal = SIGQUIT;  // prints the task tree; 0: not watched
};

int run_main(task<int> main, duration grace = std::chrono::seconds(10));
int run_main(task<int> main, run_main_options options);

}  // namespace quell
