// The io_uring reactor and the one state machine every I/O leaf is built on.
//
// An io_op is one operation handed to the kernel. Its life:
//
//   idle --submit--> queued --flush (the executor's wait step)--> in_flight --final CQE--> done
//
// Submissions are batched: a submitted op waits in a user-space queue and only becomes an SQE
// when the executor flushes, right before it waits, so a turn costs one io_uring_enter. An op
// cancelled while still queued is simply unlinked: no SQE, no system call, not even a slot in
// the user_data table ("same-turn cancel").
// An op cancelled in flight gets an IORING_OP_ASYNC_CANCEL aimed at its user_data; the op then
// stays in flight (its frame, buffers and slot alive) until its own final CQE arrives, which
// says whether it was cancelled (-ECANCELED) or completed anyway. user_data is a slot index and
// a generation, so a stale cancel can never hit a slot that was reused.
//
// A multishot (receive-ahead, quell/detail/receive_ahead.hpp) stays in flight across many CQEs:
// complete() sees each of them, and the one without IORING_CQE_F_MORE ends it like any final CQE.
// It belongs to a descriptor, not to a waiting task ("background"), so it does not count as I/O
// a task waits for (a task that waits for nothing else is still reported stuck).
//
// The reactor belongs to one executor and is created the first time one of its tasks starts an
// I/O operation, so executors that do no I/O never touch io_uring.
#pragma once

#include <cerrno>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "quell/clock.hpp"
#include "quell/detail/intrusive_list.hpp"

struct io_uring_sqe;

namespace quell::detail {

class reactor;
class scheduler;

struct io_object;
struct receive_ahead;

struct io_op : list_node {
  // parked: waiting in user space for what its descriptor's receive-ahead brings (no SQE, no
  // slot; linked in io_object::parked instead of the reactor's queue).
  enum class phase : std::uint8_t { idle, queued, in_flight, done, parked };

  using prep_fn = void (*)(io_op*, io_uring_sqe*) noexcept;
  // Called with the final CQE's result. Returns true when the operation is finished; false to be
  // submitted again (e.g. the rest of a partial write). Must return true once cancel_sent is set.
  using complete_fn = bool (*)(io_op*, int res) noexcept;
  // A parked op is offered what its object holds (the stash, then `incoming`): it takes what it
  // can and returns true when it is finished (its waiter is then resumed).
  using feed_fn = bool (*)(io_op*) noexcept;

  io_op(prep_fn p, complete_fn c, feed_fn f = nullptr) noexcept : prep(p), complete(c), feed(f) {}
  io_op(const io_op&) = delete;
  io_op& operator=(const io_op&) = delete;

  prep_fn prep;
  complete_fn complete;
  feed_fn feed;
  std::coroutine_handle<> waiter;  // resumed once the op is done (none for a multishot of a descriptor)
  phase state = phase::idle;
  bool cancel_sent = false;  // an ASYNC_CANCEL was aimed at it (or it was unlinked)
  // A multishot that belongs to a descriptor, not to a waiting task (receive-ahead): it does not
  // keep the executor awake and is not shown to the fault injector; complete() sees every CQE
  // (cqe_flags tells IORING_CQE_F_MORE and the buffer id apart).
  bool background = false;
  std::uint8_t opcode = 0;      // its SQE's opcode, recorded only while an observer watches
  int res = 0;                  // last CQE result
  std::uint32_t cqe_flags = 0;  // flags of the CQE being handled (background ops only)
  static constexpr std::uint32_t no_slot = 0xffffffffu;
  std::uint32_t slot = no_slot;  // its index in the reactor's table while it has an SQE or may get a CQE
  std::uint32_t generation = 0;  // set when it takes a slot; unique per slot holder (reactor-wide count)
  io_object* object = nullptr;   // the descriptor it works on, if tracked
};

// A descriptor the reactor knows about (a socket, a file, a signalfd). Operations on it are
// counted, so close() can cancel them and wait until the kernel has let go of every one before the
// number is released: a reused fd number never sees an old completion. It also keeps what a
// cancelled operation received anyway (bytes, an accepted connection, a signal), for the next
// operation. Reference-counted (single-threaded): the owner and each operation in flight hold one,
// so an owner destroyed while operations are pending does not free what they point to; the fd is
// then closed when the last of them has drained.
struct io_object {
  int fd = -1;
  int refs = 1;
  int in_flight = 0;
  bool closing = false;             // close() has begun or the owner is gone: new operations fail
  bool owner_gone = false;          // close the fd and free this when the last operation drains
  std::coroutine_handle<> drained;  // resumed when in_flight drops to zero (close waits on it)
  // What cancelled operations received anyway.
  std::vector<std::byte> stash;
  std::size_t stash_pos = 0;
  bool stash_eof = false;
  std::vector<int> stash_fds;
  std::vector<int> stash_signals;
  std::vector<std::string> stash_datagrams;  // sender address length, address, payload
  // Not a socket (a pipe: quell/process.hpp): streams read and write it with read(2)/write(2)
  // rather than recv/send, and never with receive-ahead (ahead_off is set too).
  bool plain_rw = false;
  // Receive-ahead (stream sockets and listeners, quell/detail/receive_ahead.hpp): the armed
  // multishot and its state, created on the first read or accept; the reads and accepts parked
  // until it brings something; the bytes of the CQE being handled, offered to them before the
  // rest goes to the stash (so a parked read copies straight from the ring buffer).
  receive_ahead* ahead = nullptr;
  node_list parked;
  const char* incoming = nullptr;
  std::size_t incoming_len = 0;
  bool ahead_off = false;               // this socket reads one receive per read
  std::size_t ahead_bound = 64 * 1024;  // most bytes (or connections) kept before re-arming stops
  std::size_t ahead_want = 0;           // bytes the first parked read still wants (the kernel's cap)

  std::size_t stashed() const noexcept { return stash.size() - stash_pos; }
  void retain() noexcept { ++refs; }
  void release() noexcept;  // closes the fd (if still open) and frees this at zero
};

// Testing: fault injection (tests/io/test_faults.cpp, tests/io/test_cancel_decisions.cpp). Every
// operation about to become an SQE is shown to the injector, which may (a) complete it at once
// with a fake result instead (-EINTR, -EAGAIN, -ENOMEM, -ECANCELED, ...): the kernel never sees
// that submission, so nothing real is consumed or lost; (b) cap its length, so the kernel
// legitimately does less (a short read or write); (c) make the submission queue behave as if it
// were full (submit what is there first); (d) hold it "in the kernel" until a cancel is aimed at
// it, and then answer that cancel with the final result the injector chooses (answer_cancel):
// -ECANCELED (the kernel stopped it), a value (it completed anyway: the injector writes what the
// kernel would have, e.g. bytes into the caller's buffer) or a real error (it failed anyway).
// That makes each branch of a leaf's cancel decision certain instead of a race with the kernel.
// A held operation ends only through its own cancel (not through close(), which asks the kernel).
struct fault_injector {
  struct decision {
    int fake_result = 0;   // nonzero: complete with this instead of submitting
    unsigned max_len = 0;  // nonzero: at most this many bytes (reads and writes)
    bool sq_full = false;
    bool hold_until_cancel = false;  // (d) above
  };
  virtual ~fault_injector() = default;
  virtual decision on_submit(const io_op& op) noexcept = 0;
  // A held operation's cancel arrived: its final result.
  virtual int answer_cancel(io_op&) noexcept { return -ECANCELED; }
};

static_assert(alignof(io_op) >= 2, "the reactor's slot table tags free entries with the low bit");

class reactor {
 public:
  // The reactor of the executor running on this thread, created on first use. Throws
  // std::system_error if io_uring cannot be set up (e.g. blocked by seccomp), std::logic_error
  // outside an executor.
  static reactor& current();

  reactor();
  ~reactor();
  reactor(const reactor&) = delete;
  reactor& operator=(const reactor&) = delete;

  // Queues `op` (state idle -> queued); `op->waiter` is resumed (posted) when it is done.
  void submit(io_op* op) noexcept;
  // Asks `op` to stop. Returns true if it never reached the kernel (it is done and cancelled
  // now; its waiter is not resumed). Otherwise the final CQE resumes the waiter later.
  bool cancel(io_op* op) noexcept;
  // Cancels every operation on `fd` (IORING_ASYNC_CANCEL_FD | ALL); fire and forget.
  void cancel_all_on(int fd) noexcept;

  // Operations a task waits for: queued, in the kernel, or parked on a receive-ahead queue
  // (excluding fire-and-forget cancels and the multishots of receive-ahead, which wake nobody
  // by themselves).
  std::size_t in_flight() const noexcept { return ops_ - background_ + parked; }
  // Receive-ahead multishots queued or in the kernel.
  std::size_t background_in_flight() const noexcept { return background_; }
  // Ops parked on receive-ahead queues (maintained by quell/detail/receive_ahead.hpp).
  std::size_t parked = 0;
  // The executor's scheduler: a socket closed between two poll_once() calls posts the reads
  // waiting on it there, so that they resume in the executor's next turn, not inside the close.
  scheduler* home = nullptr;

  // ---- Receive-ahead: the provided-buffer ring (one per reactor, buffer group 0) ----
  struct ring_options {
    std::uint32_t buffer_size = 0;  // 0: the defaults in receive_ahead.hpp
    std::uint32_t buffers = 0;
    bool enabled = true;
  };
  // Before the ring is set up (the first receive-ahead arm): its size, or receive-ahead off.
  // False if it is set up already.
  bool configure_ring(const ring_options& o) noexcept;
  // Sets the ring up on first use; false if this reactor reads without it (the kernel cannot, or
  // it was turned off): one log line the first time, sockets fall back to one receive per read.
  bool ring_ready() noexcept;
  // A buffer the kernel filled (from the CQE's IORING_CQE_F_BUFFER bits); give_buffer returns it.
  const char* buffer(unsigned bid) const noexcept;
  void give_buffer(unsigned bid) noexcept;
  std::uint32_t buffer_size() const noexcept;
  // Multishot receives that ended with ENOBUFS (the ring had no free buffer); each armed again.
  std::uint64_t ring_ran_dry = 0;
  // Multishot receive with a total length cap (Linux 6.17): known to work, known not to, or unknown.
  enum class tri : std::uint8_t { unknown, yes, no };
  tri receive_cap = tri::unknown;
  // A receive-ahead multishot whose descriptor is closing: from now on it is I/O the executor
  // waits for (its final CQE releases the descriptor).
  void to_foreground(io_op* op) noexcept {
    op->background = false;
    --background_;
  }
  // Takes `op` out of the multishots set aside for the next flush (its descriptor is closing).
  void drop_rearm(io_op* op) noexcept;
  bool rearm_pending() const noexcept { return !rearm_.empty(); }
  // Submits `op` (a receive-ahead multishot) at the next flush; holds a reference on its object
  // until then. Used from complete(), where the op cannot be submitted again yet.
  void rearm_later(io_op* op) noexcept;
  // The executor is stopping: cancels every receive-ahead multishot and re-arms none from now
  // on (what they received stays queued on their sockets); the executor then waits for
  // background_in_flight() to reach zero.
  void stop_background() noexcept;
  bool background_stopped() const noexcept { return stopped_; }
  // An external event source (a signal watcher, a cross-thread waker) is armed: the executor can
  // still be woken from outside even with nothing else in flight.
  int external_sources = 0;

  // The wait step. Submits every queued op (one io_uring_enter), and reaps completions, posting
  // the waiters of finished ops to the current scheduler. `wait`: block until at least one
  // completion or until `until` (if set) on the real clock. Without `wait` the kernel is entered
  // only to submit or to run completion work it flags as held (TASKRUN_FLAG): with neither, no
  // system call. Returns the number of CQEs reaped.
  std::size_t submit_and_reap(bool wait, std::optional<time_point> until);

  // Testing: while held, submit_and_reap() submits and lets the kernel post completions but does not reap
  // them, so a test can make a cancel request cross a completion that already happened.
  void hold_completions(bool hold) noexcept { hold_ = hold; }

  // Testing: see fault_injector. Null turns it off.
  void inject_faults(fault_injector* f) noexcept { faults_ = f; }
  // Testing: completions the kernel has posted that submit_and_reap() has not reaped (see hold_completions).
  std::size_t completions_waiting() const noexcept;

  // Setup flags the ring was created with (for tests and diagnostics).
  unsigned setup_flags() const noexcept { return flags_; }
  // io_uring_enter calls so far (for the benchmarks' "one syscall per turn" claim).
  std::uint64_t enters() const noexcept { return enters_; }
  // user_data slots held by operations (for tests: only an op that became an SQE holds one).
  std::size_t slots_taken() const noexcept { return slots_taken_; }

 private:
  struct ring;
  std::uint64_t user_data(const io_op* op) const noexcept;
  void flush() noexcept;
  io_uring_sqe* get_sqe() noexcept;
  [[gnu::noinline, gnu::cold]] io_uring_sqe* get_sqe_when_full() noexcept;
  [[gnu::noinline, gnu::cold]] void flush_with_faults(io_op* op) noexcept;
  [[gnu::noinline, gnu::cold]] bool answer_held(io_op* op) noexcept;
  void finish(io_op* op, int res) noexcept;
  void take_slot(io_op* op) noexcept;
  [[gnu::noinline, gnu::cold]] std::uint32_t add_slot() noexcept;
  void release_slot(io_op* op) noexcept;

  struct buffers;
  void disarm_ring() noexcept;

  std::unique_ptr<ring> ring_;
  std::unique_ptr<buffers> bufs_;
  std::vector<io_op*> rearm_;  // receive-ahead multishots to submit at the next flush
  std::size_t background_ = 0;
  bool stopped_ = false;
  node_list queued_;
  // The user_data table. A taken entry is its op's address (even: io_op holds pointers); a free
  // one is the next free index shifted left with the low bit set, so the free list lives in the
  // table itself and taking or giving back a slot touches one entry (no second vector).
  std::vector<std::uint64_t> slots_;
  std::uint32_t free_head_ = io_op::no_slot;
  std::uint32_t generations_ = 0;  // the last generation given to an op taking a slot
  std::size_t slots_taken_ = 0;
  std::vector<std::uint64_t> pending_cancels_;  // user_data to cancel, in submission order
  std::vector<int> pending_fd_cancels_;
  std::vector<std::pair<io_op*, int>> faked_;  // fault injection: completions without the kernel
  std::vector<io_op*> held_;                   // fault injection: "in the kernel" until cancelled
  fault_injector* faults_ = nullptr;
  std::size_t ops_ = 0;
  unsigned flags_ = 0;
  bool enabled_ = true;  // false until the first submission enables an R_DISABLED ring
  bool hold_ = false;
  std::uint64_t enters_ = 0;
};

}  // namespace quell::detail
