#include "quell/signal.hpp"

#include <liburing.h>
#include <pthread.h>
#include <string.h>
#include <sys/signalfd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include "quell/detail/task_tree_build.hpp"
#include "quell/executor.hpp"
#include "quell/runtime.hpp"

namespace quell {

namespace detail {

static_assert(sizeof(signalfd_siginfo) <= sizeof(signal_wait_op::info));

bool signal_wait_op::await_ready() {
  if (!object->stash_signals.empty()) {
    stashed = object->stash_signals.front();
    object->stash_signals.erase(object->stash_signals.begin());
    return true;
  }
  if (!tls.current) throw std::logic_error("quell: an I/O operation was started outside an executor");
  return false;
}

void signal_wait_op::prep(io_uring_sqe* sqe) noexcept {
  io_uring_prep_read(sqe, object->fd, info, sizeof(signalfd_siginfo), 0);
}

bool signal_wait_op::on_cancel() noexcept {
  if (res == static_cast<int>(sizeof(signalfd_siginfo))) {
    // Received anyway: the next wait() gets it.
    object->stash_signals.push_back(static_cast<int>(reinterpret_cast<const signalfd_siginfo*>(info)->ssi_signo));
    return true;
  }
  return res < 0 && (res == -ECANCELED || res == -EINTR);
}

bool signal_wait_op::give_back() noexcept {
  int signo = stashed;
  if (!signo && res == static_cast<int>(sizeof(signalfd_siginfo))) {
    signo = static_cast<int>(reinterpret_cast<const signalfd_siginfo*>(info)->ssi_signo);
  }
  if (!signo) return false;
  object->stash_signals.insert(object->stash_signals.begin(), signo);
  return true;
}

int signal_wait_op::await_resume() {
  if (stashed) return stashed;
  if (res < 0) throw_io_error(res, "signal_set::wait");
  return static_cast<int>(reinterpret_cast<const signalfd_siginfo*>(info)->ssi_signo);
}

}  // namespace detail

signal_set::signal_set(std::initializer_list<int> signals) {
  sigset_t set;
  sigemptyset(&set);
  for (int s : signals) {
    if (sigaddset(&set, s) != 0) throw std::system_error(errno, std::system_category(), "signal_set: bad signal");
  }
  if (int err = pthread_sigmask(SIG_BLOCK, &set, &previous_); err != 0) {
    throw std::system_error(err, std::system_category(), "signal_set: pthread_sigmask");
  }
  const int fd = ::signalfd(-1, &set, SFD_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
    throw std::system_error(err, std::system_category(), "signal_set: signalfd");
  }
  h_ = detail::io_handle(fd);
}

signal_set::~signal_set() {
  h_.reset();
  pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
}

namespace {

std::string signal_name(int signo) {
  const char* abbrev = ::sigabbrev_np(signo);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(signo);
}

// Watches the signalfd on behalf of run_main: first signal graceful, second (or the grace period)
// forced.
struct signal_watch final : detail::service {
  signal_watch(detail::executor_core& c, signal_set& s, duration g, int dump)
      : service(&prep), core(c), fd(s.native_handle()), grace(g), dump_signal(dump), escalate([this] {
          core.cancel(cancel_level::forced, cancel_reason(cancel_kind::signal, "grace period expired"));
          forced = true;
        }) {}

  static void prep(io_op* op, io_uring_sqe* sqe) noexcept {
    auto* w = static_cast<signal_watch*>(op);
    io_uring_prep_read(sqe, w->fd, w->info, sizeof w->info, 0);
  }

  void fired() noexcept override {
    if (res != static_cast<int>(sizeof info)) return;
    const int signo = static_cast<int>(info[0].ssi_signo);
    if (signo == dump_signal) {
      // Read only; the text is written whole, by whichever core completes it, or after a second
      // by this one with the parts that came (a core busy in a long resume cannot answer).
      dump_timer.disarm();
      dump = detail::dump_task_tree(core, [name = signal_name(signo)](const std::string& tree) {
        const std::string text = "quell: run_main: " + name + ": the live task tree\n" + tree;
        std::fwrite(text.data(), 1, text.size(), stderr);
        std::fflush(stderr);
      });
      dump_timer.deadline = core.sched().timers().clock().now() + std::chrono::seconds(1);
      core.sched().timers().arm(&dump_timer);
      core.add_service(this);
      return;
    }
    if (++count == 1) {
      first = signo;
      core.cancel(cancel_level::graceful, cancel_reason(cancel_kind::signal, signal_name(signo)));
      escalate.deadline = core.sched().timers().clock().now() + grace;
      core.sched().timers().arm(&escalate);
      core.add_service(this);  // listen for the second one
    } else if (count == 2) {
      escalate.disarm();
      forced = true;
      core.cancel(cancel_level::forced, cancel_reason(cancel_kind::signal, signal_name(signo) + " again"));
      core.add_service(this);  // a third one ends the process
    } else {
      // The forced cancellation has not finished (an operation the kernel cannot interrupt, a
      // leaf that does not answer): the user asked three times; nothing more is waited for.
      std::fprintf(stderr, "quell: run_main: %s a third time: exiting now, without waiting for cleanup\n",
                   signal_name(signo).c_str());
      std::fflush(nullptr);
      std::_Exit(128 + first);
    }
  }
  void on_stop() noexcept override {
    escalate.disarm();
    dump_timer.disarm();
  }

  detail::executor_core& core;
  int fd;
  duration grace;
  int dump_signal;
  detail::callback_timer escalate;
  std::shared_ptr<detail::tree_collector> dump;
  detail::callback_timer dump_timer{[this] { detail::dump_task_tree_now(std::exchange(dump, nullptr)); }};
  signalfd_siginfo info[1];
  int count = 0;
  int first = 0;
  bool forced = false;
};

// `run(setup)` runs the root on an executor, calling setup(its core) before the first turn.
template <class Run>
int run_main_with(const run_main_options& o, Run run) {
  const duration grace = o.grace;
  if (o.dump_signal == SIGINT || o.dump_signal == SIGTERM || o.dump_signal < 0 || o.dump_signal >= NSIG) {
    std::fprintf(stderr, "quell: run_main: dump_signal %d is not a signal it may take for the task tree\n",
                 o.dump_signal);
    return 2;
  }
  try {
    const std::initializer_list<int> with_dump{SIGINT, SIGTERM, o.dump_signal}, without{SIGINT, SIGTERM};
    signal_set sigs(o.dump_signal > 0 ? with_dump : without);
    std::optional<signal_watch> watch;  // declared first: outlives the executor that drains it
    try {
      return run([&](detail::executor_core& core) {
        watch.emplace(core, sigs, grace, o.dump_signal);
        core.add_service(&*watch);
      });
    } catch (const cancelled_error& e) {
      if (watch && watch->count > 0) return watch->forced ? 128 + watch->first : 0;
      std::fprintf(stderr, "%s\n", e.what());
      return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quell: run_main: the main task failed: %s\n", e.what());
    return 1;
  } catch (...) {
    std::fprintf(stderr, "quell: run_main: the main task failed with a non-standard exception\n");
    return 1;
  }
}

}  // namespace

int run_main(task<int> main, duration grace) { return run_main(std::move(main), run_main_options{grace}); }

int run_main(task<int> main, run_main_options options) {
  return run_main_with(options, [&](auto setup) {
    executor<int> ex{std::move(main)};
    setup(ex.core());
    return ex.run();
  });
}

int run_main(runtime& rt, task<int> main, duration grace) {
  return run_main(rt, std::move(main), run_main_options{grace});
}

int run_main(runtime& rt, task<int> main, run_main_options options) {
  return run_main_with(options, [&](auto setup) { return rt.run_with(std::move(main), setup); });
}

}  // namespace quell
