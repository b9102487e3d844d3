#include "quell/runtime.hpp"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <condition_variable>
#include <latch>
#include <mutex>
#include <system_error>
#include <thread>

#include "quell/detail/blocking_pool.hpp"
#include "quell/detail/task_tree_build.hpp"

namespace quell {
namespace detail {

core_group::core_group(unsigned n) : cores(n) {
  boxes.reserve(n);
  for (unsigned i = 0; i < n; ++i) {
    auto b = std::make_shared<remote_state>();
    b->efd = ::eventfd(0, EFD_CLOEXEC);
    if (b->efd < 0) throw std::system_error(errno, std::system_category(), "quell: eventfd for a runtime's core");
    b->persistent = true;
    b->transit = &counts;
    boxes.push_back(std::move(b));
    cores[i].store(nullptr, std::memory_order_relaxed);
  }
}

core_group::~core_group() {
  blocking.reset();  // every job has come home: this joins idle threads before the boxes close
  for (auto& b : boxes) {
    core_message* left;
    {
      std::lock_guard<std::mutex> lock(b->m);
      ::close(b->efd);
      b->efd = -1;
      b->transit = nullptr;
      b->persistent = false;  // a remote_handle that outlives the runtime wakes under the lock
      left = b->take_all();
    }
    while (left) {  // posted after the last run: never run, freed
      core_message* next = left->next;
      if (left->drop) left->drop(left);
      left = next;
    }
    announce_finished(*b);  // nobody waits for a root that will never run
  }
}

void core_group::wake_core0() noexcept { boxes[0]->wake(); }

quell::task_tree core_group::task_tree_when_idle() const {
  std::vector<core_part> parts;
  for (unsigned i = 0; i < cores.size(); ++i) {
    const executor_core* c = cores[i].load(std::memory_order_acquire);
    if (c) parts.push_back(snapshot(c->sched(), tls.current == &c->sched() ? tls.context : nullptr));
  }
  return assemble(std::move(parts), static_cast<unsigned>(cores.size()));
}

namespace {

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (::sched_getaffinity(0, sizeof set, &set) == 0) {
    for (int i = 0; i < CPU_SETSIZE; ++i) {
      if (CPU_ISSET(i, &set)) cpus.push_back(i);
    }
  }
  if (cpus.empty()) cpus.push_back(0);
  return cpus;
}

void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (int e = ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set)) {
    throw std::system_error(e, std::system_category(), "quell: runtime: pinning a core to CPU " + std::to_string(cpu));
  }
}

// What the executor of cores 1..n-1 runs: nothing, until the runtime is destroyed.
// The stop message may come before the host has started (a one_thread runtime whose root ended
// in its first turn never turned the other cores): then the host does not wait at all.
struct core_host {
  std::coroutine_handle<>* slot;
  const bool* stopped;
  bool await_ready() const noexcept { return *stopped; }
  void await_suspend(std::coroutine_handle<> h) noexcept { *slot = h; }
  void await_resume() const noexcept {}
  bool await_cancel(std::coroutine_handle<>) noexcept { return true; }  // nothing runs under it
  bool await_must_resume() const noexcept { return true; }
};

// A function run on core 0 (shutdown's escalation from another core).
struct fn_message final : core_message {
  explicit fn_message(std::function<void()> f) : fn(std::move(f)) {
    run = [](core_message* m) noexcept {
      std::unique_ptr<fn_message> self(static_cast<fn_message*>(m));
      self->fn();
    };
    drop = [](core_message* m) noexcept { delete static_cast<fn_message*>(m); };
  }
  std::function<void()> fn;
};

}  // namespace

class runtime_core {
 public:
  explicit runtime_core(runtime_options o);
  ~runtime_core();

  void request(cancel_level level, cancel_reason reason);
  void shutdown(duration grace);
  void begin_run();
  void attach(executor_core& core);
  void end_run() noexcept;
  clock_source& clock() noexcept;

  core_group group;

 private:
  cancel_request take_box_request() noexcept;

 public:
 private:
  struct helper {
    struct stop_message : core_message {
      helper* self = nullptr;
    };
    helper() noexcept {
      stop.self = this;
      // Sent once, by the destructor: resumes the host, which ends the core's executor.
      stop.run = [](core_message* m) noexcept {
        helper* h = static_cast<stop_message*>(m)->self;
        h->stopped = true;
        if (h->host) post(h->host);
      };
    }
    std::thread thread;
    std::coroutine_handle<> host;
    bool stopped = false;
    stop_message stop;
    std::optional<executor<void>> lockstep;  // one_thread: the core's executor, on the caller's thread
  };
  void core_main(unsigned i, std::latch& ready, std::exception_ptr& error);
  bool on_a_core() const noexcept;

  runtime_options opts_;
  std::vector<int> cpus_;
  std::vector<std::unique_ptr<helper>> helpers_;
  std::mutex m_;
  std::condition_variable ended_;
  bool running_ = false;
  executor_core* core0_ = nullptr;
  cancel_request pending_{cancel_level::none, {}};
  cpu_set_t saved_affinity_{};
  bool restore_affinity_ = false;
};

runtime_core::runtime_core(runtime_options o)
    : group(o.cores ? o.cores : static_cast<unsigned>(allowed_cpus().size())), opts_(o), cpus_(allowed_cpus()) {
  const unsigned n = group.size();
  if (opts_.pin && n > cpus_.size()) {
    throw std::invalid_argument("quell: runtime: cannot pin " + std::to_string(n) + " cores to the " +
                                std::to_string(cpus_.size()) + " CPUs this process may use");
  }
  group.blocking.reset(
      new blocking_pool(opts_.blocking_threads ? opts_.blocking_threads : blocking_pool::default_threads));
  helpers_.resize(n);
  for (unsigned i = 1; i < n; ++i) helpers_[i] = std::make_unique<helper>();
  if (opts_.one_thread) {
    group.lockstep = true;
    for (unsigned i = 1; i < n; ++i) {
      helpers_[i]->lockstep.emplace(core_host{&helpers_[i]->host, &helpers_[i]->stopped}, clock());
      helpers_[i]->lockstep->core().join_group(&group, i);
    }
    return;
  }
  std::latch ready(n - 1);
  std::vector<std::exception_ptr> errors(n);
  for (unsigned i = 1; i < n; ++i) {
    try {
      helpers_[i]->thread = std::thread([this, i, &ready, &errors] { core_main(i, ready, errors[i]); });
    } catch (...) {
      errors[i] = std::current_exception();  // no thread: count it down for it
      for (unsigned j = i; j < n; ++j) ready.count_down();
      ready.wait();
      for (unsigned j = 1; j < i; ++j) {
        if (!errors[j]) group.boxes[j]->push(&helpers_[j]->stop);
      }
      for (unsigned j = 1; j < i; ++j) helpers_[j]->thread.join();
      throw;
    }
  }
  ready.wait();
  for (unsigned i = 1; i < n; ++i) {
    if (errors[i]) {
      for (unsigned j = 1; j < n; ++j) {
        if (!errors[j]) group.boxes[j]->push(&helpers_[j]->stop);
      }
      for (unsigned j = 1; j < n; ++j) helpers_[j]->thread.join();
      std::exception_ptr e = errors[i];
      std::rethrow_exception(e);
    }
  }
}

void runtime_core::core_main(unsigned i, std::latch& ready, std::exception_ptr& error) {
  block_async_signals();
  helper& me = *helpers_[i];
  std::optional<executor<void>> ex;
  try {
    if (opts_.pin) pin_to(cpus_[i]);
    ex.emplace(core_host{&me.host, &me.stopped});
    ex->core().join_group(&group, i);
  } catch (...) {
    error = std::current_exception();
    ready.count_down();
    return;
  }
  ready.count_down();
  try {
    ex->run();
  } catch (const std::exception& e) {
    fatal(std::string("quell: runtime: core ") + std::to_string(i) + " failed: " + e.what());
  }
}

runtime_core::~runtime_core() {
  for (std::size_t i = 1; i < helpers_.size(); ++i) group.boxes[i]->push(&helpers_[i]->stop);
  if (opts_.one_thread) {
    for (std::size_t i = 1; i < helpers_.size(); ++i) {
      try {
        helpers_[i]->lockstep->run();  // the stop message ends its host
      } catch (const std::exception& e) {
        fatal(std::string("quell: runtime: core ") + std::to_string(i) + " failed to stop: " + e.what());
      }
      helpers_[i]->lockstep.reset();
    }
    return;
  }
  for (std::size_t i = 1; i < helpers_.size(); ++i) helpers_[i]->thread.join();
}

clock_source& runtime_core::clock() noexcept { return opts_.clock ? *opts_.clock : steady_clock_source::instance(); }

clock_source& runtime_clock(runtime_core& rt) noexcept { return rt.clock(); }

bool runtime_core::on_a_core() const noexcept {
  const scheduler* s = tls.current;
  return s && s->core && s->core->group() == &group;
}

void runtime_core::request(cancel_level level, cancel_reason reason) {
  std::lock_guard<std::mutex> lock(m_);
  if (!running_ || !core0_) {
    merge_request(pending_, cancel_request{level, std::move(reason)});
    return;
  }
  remote_state& box = *group.boxes[0];
  std::lock_guard<std::mutex> box_lock(box.m);
  box.set_request(level, std::move(reason));
  box.wake();
}

void runtime_core::shutdown(duration grace) {
  request(cancel_level::graceful, cancel_reason(cancel_kind::shutdown));
  if (on_a_core()) {
    // A task asked: the escalation is a timer on core 0, and nobody here can wait for the end.
    auto* msg = new fn_message([this, grace] {
      if (executor_core* c = group.cores[0].load(std::memory_order_acquire)) c->escalate_after(grace);
    });
    group.boxes[0]->push(msg);
    return;
  }
  std::unique_lock<std::mutex> lock(m_);
  if (!running_) return;
  if (!ended_.wait_for(lock, grace, [&] { return !running_; })) {
    lock.unlock();
    request(cancel_level::forced, cancel_reason(cancel_kind::shutdown, "grace period expired"));
    lock.lock();
    ended_.wait(lock, [&] { return !running_; });
  }
}

void runtime_core::begin_run() {
  std::lock_guard<std::mutex> lock(m_);
  if (running_) throw std::logic_error("quell: runtime::run() called while a run is in progress");
  running_ = true;
}

void runtime_core::attach(executor_core& core) {
  if (opts_.pin) {
    restore_affinity_ = ::pthread_getaffinity_np(::pthread_self(), sizeof saved_affinity_, &saved_affinity_) == 0;
    pin_to(cpus_[0]);
  }
  // A request made through rt.remote() between runs is for this run, like rt.cancel()'s.
  cancel_request early = take_box_request();
  core.join_group(&group, 0);
  std::lock_guard<std::mutex> lock(m_);
  core0_ = &core;
  merge_request(pending_, early);
  if (pending_.level != cancel_level::none) {
    core.cancel(pending_.level, pending_.reason);  // before the first turn: the root never runs
    pending_ = cancel_request{cancel_level::none, {}};
  }
}

cancel_request runtime_core::take_box_request() noexcept {
  remote_state& box = *group.boxes[0];
  cancel_request r;
  {
    std::lock_guard<std::mutex> box_lock(box.m);
    r = box.take_request();
  }
  if (r.level != cancel_level::none) group.counts.fetch_sub(1, std::memory_order_acq_rel);
  return r;
}

void runtime_core::end_run() noexcept {
  {
    // First: from here on, rt.cancel() is for the next run.
    std::lock_guard<std::mutex> lock(m_);
    running_ = false;
    core0_ = nullptr;
  }
  // Whatever reached core 0 after its root had ended (a late request, a late post) was for the
  // run that ended, not the next one.
  (void)take_box_request();
  remote_state& box = *group.boxes[0];
  std::uint64_t n = 0;
  for (core_message* m = box.take_all(); m;) {
    core_message* next = m->next;
    if (m->drop) m->drop(m);
    m = next;
    ++n;
  }
  if (n) group.counts.fetch_sub(n, std::memory_order_acq_rel);
  if (restore_affinity_) {
    ::pthread_setaffinity_np(::pthread_self(), sizeof saved_affinity_, &saved_affinity_);
    restore_affinity_ = false;
  }
  std::lock_guard<std::mutex> lock(m_);
  ended_.notify_all();
}

run_slot::run_slot(runtime_core& r) : rt(r) { rt.begin_run(); }
run_slot::~run_slot() { rt.end_run(); }
void run_slot::attach(executor_core& core) { rt.attach(core); }

std::shared_ptr<remote_state> core_mailbox(unsigned core) {
  scheduler* s = tls.current;
  if (!s || !s->core) throw std::logic_error("quell: on() outside an executor");
  executor_core& c = *s->core;
  const unsigned n = c.group() ? c.group()->size() : 1;
  if (core >= n) {
    throw std::out_of_range("quell: on(" + std::to_string(core) + ", ...): there " +
                            (n == 1 ? std::string("is 1 core (0)")
                                    : "are " + std::to_string(n) + " cores (0.." + std::to_string(n - 1) + ")"));
  }
  return c.group() ? c.group()->boxes[core] : c.mailbox();
}

// Signals that arrive for the whole process must reach the thread that watches for them (core 0
// under run_main), not a core or a pool thread that would take the default action and end the
// process.
void block_async_signals() noexcept {
  sigset_t all;
  ::sigfillset(&all);
  for (int s : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS}) ::sigdelset(&all, s);
  ::pthread_sigmask(SIG_BLOCK, &all, nullptr);
}

}  // namespace detail

unsigned this_core() noexcept {
  const detail::scheduler* s = detail::tls.current;
  return s && s->core ? s->core->core_index() : 0;
}

unsigned core_count() noexcept {
  const detail::scheduler* s = detail::tls.current;
  return s && s->core && s->core->group() ? s->core->group()->size() : 1;
}

runtime::runtime(runtime_options options) : core_(std::make_unique<detail::runtime_core>(options)) {}
runtime::~runtime() = default;
unsigned runtime::size() const noexcept { return core_->group.size(); }
remote_handle runtime::remote() { return remote_handle(core_->group.boxes[0]); }
void runtime::cancel(cancel_reason reason) { core_->request(cancel_level::graceful, std::move(reason)); }
void runtime::force_cancel(cancel_reason reason) { core_->request(cancel_level::forced, std::move(reason)); }
void runtime::shutdown(duration grace) { core_->shutdown(grace); }
quell::task_tree runtime::task_tree(duration timeout) { return detail::group_task_tree(core_->group, timeout); }

}  // namespace quell
