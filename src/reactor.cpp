#include "quell/detail/reactor.hpp"

#include <liburing.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include "quell/detail/receive_ahead.hpp"
#include "quell/detail/scheduler.hpp"

namespace quell::detail {

namespace {
// user_data of fire-and-forget cancels: their CQEs carry no news (the target's own CQE does).
constexpr std::uint64_t cancel_tag = ~std::uint64_t{0};
// The kernel sizes its table of armed poll requests (what ASYNC_CANCEL by user_data searches)
// from the ring: with 256 entries, cancelling 5,000 parked reads spent most of its time in
// io_poll_find (W7 of bench/compare/WORKLOADS.md: 13-20 ms at 256 entries, 4-6 ms at 4,096, raw liburing).
// Smaller rings are the fallback where locked memory is scarce (kernels before 5.12).
constexpr unsigned ring_entries[] = {4096, 256};
}  // namespace

struct reactor::ring {
  io_uring r{};
};

// The provided-buffer ring of receive-ahead: `count` buffers of `size` bytes in one mapping, and
// the ring the kernel takes them from (buffer group 0). A buffer is returned (added to the tail)
// as soon as its CQE has been handled; the tail is published once per reaped batch.
struct reactor::buffers {
  bool tried = false;
  bool ok = false;
  io_uring_buf_ring* br = nullptr;
  std::size_t ring_bytes = 0;
  char* slab = nullptr;
  std::size_t slab_bytes = 0;
  std::uint32_t size = 0;
  std::uint32_t count = 0;
  int returned = 0;  // added since the last publish
  ring_options options;

  ~buffers() {
    if (br) ::munmap(br, ring_bytes);
    if (slab) ::munmap(slab, slab_bytes);
  }
};

reactor& reactor::current() {
  scheduler* s = tls.current;
  if (!s) throw std::logic_error("quell: an I/O operation was started outside an executor");
  return s->io();
}

reactor::reactor() : ring_(std::make_unique<ring>()) {
  // Newest first: SINGLE_ISSUER|DEFER_TASKRUN (6.1+) runs completion work only inside our own
  // io_uring_enter, COOP_TASKRUN (5.19+) avoids interrupting the thread; plain setup otherwise.
  // TASKRUN_FLAG with DEFER_TASKRUN: the kernel flags the SQ ring when it holds completion work
  // for this ring, so a step that must not wait and has nothing to submit enters only then (see
  // poll). Not with COOP_TASKRUN: its task work is per thread, shared by every ring the thread
  // drives, and only the first ring to queue some is flagged.
  // R_DISABLED with SINGLE_ISSUER: the ring belongs to the thread that enables it, which flush()
  // does on the first submission, from the thread that drives the executor. Without it the ring
  // would belong to the thread that created it (say, one that called remote() before handing the
  // executor to its own thread), and every submission from the driving thread would fail.
  const unsigned attempts[] = {
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED | IORING_SETUP_TASKRUN_FLAG,
      IORING_SETUP_COOP_TASKRUN, 0};
  int err = 0;
  for (unsigned entries : ring_entries) {
    for (unsigned f : attempts) {
      io_uring_params p;
      std::memset(&p, 0, sizeof p);
      p.flags = f;
      err = io_uring_queue_init_params(entries, &ring_->r, &p);
      if (err == 0) {
        flags_ = f;
        enabled_ = (f & IORING_SETUP_R_DISABLED) == 0;
        return;
      }
      if (err != -EINVAL) break;  // only "unknown flag" is worth retrying with fewer flags
    }
    if (err != -ENOMEM) break;  // only "out of locked memory" is worth retrying with a smaller ring
  }
  throw std::system_error(-err, std::system_category(),
                          "quell: io_uring is unavailable (io_uring_setup failed; blocked by seccomp, "
                          "disabled by kernel.io_uring_disabled, or out of locked memory?)");
}

reactor::~reactor() {
  // (stop_background has emptied it when the executor ended; a reactor torn down otherwise still
  // lets go of the sockets it kept for re-arming, and leaves them idle for a later executor.)
  for (io_op* op : rearm_) {
    static_cast<receive_ahead*>(op)->m = receive_ahead::mode::idle;
    op->object->release();
  }
  rearm_.clear();
  io_uring_queue_exit(&ring_->r);  // the kernel lets go of the buffer ring here: only then unmap it
  bufs_.reset();
}

namespace {
void log_ahead_off(const char* why) noexcept {
  static std::atomic<bool> said{false};
  if (said.exchange(true)) return;
  utsname u{};
  ::uname(&u);
  std::fprintf(stderr, "quell: receive-ahead is off: %s (kernel %s); sockets read with one receive per read\n", why,
               u.release);
}
}  // namespace

bool reactor::configure_ring(const ring_options& o) noexcept {
  if (bufs_ && bufs_->tried) return false;
  if (!bufs_) bufs_ = std::make_unique<buffers>();
  bufs_->options = o;
  return true;
}

bool reactor::ring_ready() noexcept {
  if (bufs_ && bufs_->tried) [[likely]]
    return bufs_->ok;
  if (!bufs_) bufs_ = std::make_unique<buffers>();
  buffers& b = *bufs_;
  b.tried = true;
  if (!b.options.enabled) return false;  // turned off by the application: nothing to report
  if (!(flags_ & IORING_SETUP_DEFER_TASKRUN)) {
    // Multishot receive came in 6.0, the setup flags this reactor tries first in 6.1: a ring
    // that had to do without them runs on a kernel too old for it.
    log_ahead_off("this kernel has no multishot receive (Linux 6.1 or later needed)");
    return false;
  }
  b.size = b.options.buffer_size ? b.options.buffer_size : default_receive_buffer_size;
  b.count = b.options.buffers ? b.options.buffers : default_receive_buffers;
  b.ring_bytes = (b.count * sizeof(io_uring_buf) + 4095) & ~std::size_t{4095};
  b.slab_bytes = std::size_t{b.size} * b.count;
  void* ring_mem = ::mmap(nullptr, b.ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  void* slab = ::mmap(nullptr, b.slab_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (ring_mem == MAP_FAILED || slab == MAP_FAILED) {
    if (ring_mem != MAP_FAILED) ::munmap(ring_mem, b.ring_bytes);
    if (slab != MAP_FAILED) ::munmap(slab, b.slab_bytes);
    log_ahead_off("no memory for the receive buffers");
    return false;
  }
  b.br = static_cast<io_uring_buf_ring*>(ring_mem);
  b.slab = static_cast<char*>(slab);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<std::uint64_t>(b.br);
  reg.ring_entries = b.count;
  reg.bgid = 0;
  const int rc = io_uring_register_buf_ring(&ring_->r, &reg, 0);
  if (rc != 0) {
    std::string why = std::string("registering the provided-buffer ring failed: ") + std::strerror(-rc);
    log_ahead_off(why.c_str());
    return false;
  }
  io_uring_buf_ring_init(b.br);
  const int mask = io_uring_buf_ring_mask(b.count);
  for (std::uint32_t i = 0; i < b.count; ++i) {
    io_uring_buf_ring_add(b.br, b.slab + std::size_t{i} * b.size, b.size, static_cast<unsigned short>(i), mask,
                          static_cast<int>(i));
  }
  io_uring_buf_ring_advance(b.br, static_cast<int>(b.count));
  b.ok = true;
  return true;
}

const char* reactor::buffer(unsigned bid) const noexcept { return bufs_->slab + std::size_t{bid} * bufs_->size; }

std::uint32_t reactor::buffer_size() const noexcept { return bufs_ ? bufs_->size : 0; }

void reactor::give_buffer(unsigned bid) noexcept {
  buffers& b = *bufs_;
  if (bid >= b.count) return;
  io_uring_buf_ring_add(b.br, b.slab + std::size_t{bid} * b.size, b.size, static_cast<unsigned short>(bid),
                        io_uring_buf_ring_mask(b.count), b.returned++);
}

void reactor::drop_rearm(io_op* op) noexcept {
  auto it = std::find(rearm_.begin(), rearm_.end(), op);
  if (it == rearm_.end()) return;
  rearm_.erase(it);
  op->object->release();
}

void reactor::rearm_later(io_op* op) noexcept {
  op->object->retain();
  rearm_.push_back(op);
}

void reactor::stop_background() noexcept {
  stopped_ = true;
  std::vector<io_op*> later;
  later.swap(rearm_);
  for (io_op* op : later) {
    (void)ahead_rearm_wanted(op);  // says no now, and leaves the socket idle
    op->object->release();
  }
  std::vector<io_op*> mine;
  queued_.for_each([&](list_node* n) {
    if (static_cast<io_op*>(n)->background) mine.push_back(static_cast<io_op*>(n));
  });
  for (std::uint64_t e : slots_) {
    if (!(e & 1) && reinterpret_cast<io_op*>(e)->background) mine.push_back(reinterpret_cast<io_op*>(e));
  }
  for (io_op* op : mine) {
    if (op->state == io_op::phase::queued) {
      auto* a = static_cast<receive_ahead*>(op);
      a->m = receive_ahead::mode::idle;
      io_object* o = op->object;
      o->retain();  // cancel() may drop the last reference the op held
      cancel(op);
      o->release();
    } else if (op->state == io_op::phase::in_flight) {
      cancel(op);  // its final CQE leaves the socket idle
    }
  }
}

std::uint64_t reactor::user_data(const io_op* op) const noexcept {
  return (std::uint64_t{op->generation} << 32) | op->slot;
}

void io_object::release() noexcept {
  if (--refs > 0) return;
  for (int f : stash_fds) ::close(f);
  if (fd >= 0) ::close(fd);
  if (ahead) ahead_destroy(ahead);
  delete this;
}

namespace {
// An op leaves the kernel (or the queue): its descriptor may now be closed or freed.
void untrack(io_op* op) noexcept {
  io_object* o = op->object;
  if (!o) return;
  if (--o->in_flight == 0 && o->drained) {
    std::coroutine_handle<> h = o->drained;
    o->drained = {};
    post(h);
  }
  o->release();
}
}  // namespace

void reactor::submit(io_op* op) noexcept {
  if (op->object) {
    op->object->retain();
    ++op->object->in_flight;
  }
  op->slot = io_op::no_slot;  // given by flush(): an op cancelled while queued never needs one
  op->state = io_op::phase::queued;
  op->cancel_sent = false;
  queued_.push_back(op);
  ++ops_;
  if (op->background) ++background_;
}

bool reactor::cancel(io_op* op) noexcept {
  switch (op->state) {
    case io_op::phase::queued:
      op->unlink();
      op->cancel_sent = true;
      op->res = -ECANCELED;
      op->state = io_op::phase::done;
      if (op->slot != io_op::no_slot) release_slot(op);  // queued again after a partial result
      --ops_;
      if (op->background) --background_;
      untrack(op);
      return true;
    case io_op::phase::in_flight:
      if (!op->cancel_sent) {
        op->cancel_sent = true;
        if (!held_.empty() && answer_held(op)) [[unlikely]]
          return false;
        pending_cancels_.push_back(user_data(op));
      }
      return false;
    case io_op::phase::idle:
    case io_op::phase::done:
    case io_op::phase::parked:  // not the reactor's (the leaf unparks it)
      return false;
  }
  return false;
}

void reactor::cancel_all_on(int fd) noexcept { pending_fd_cancels_.push_back(fd); }

void reactor::take_slot(io_op* op) noexcept {
  std::uint32_t slot = free_head_;
  if (slot == io_op::no_slot) [[unlikely]]
    slot = add_slot();
  free_head_ = static_cast<std::uint32_t>(slots_[slot] >> 1);
  slots_[slot] = reinterpret_cast<std::uint64_t>(op);
  ++slots_taken_;
  op->slot = slot;
  // Reactor-wide, so that two operations that hold the same slot one after the other never
  // share a user_data (a per-operation count would start both at the same value).
  op->generation = ++generations_;
}

// Out of line, so that taking a slot from the free list needs no stack frame.
std::uint32_t reactor::add_slot() noexcept {
  slots_.push_back((std::uint64_t{io_op::no_slot} << 1) | 1);  // free, last in the list
  return static_cast<std::uint32_t>(slots_.size() - 1);
}

void reactor::release_slot(io_op* op) noexcept {
  slots_[op->slot] = (std::uint64_t{free_head_} << 1) | 1;
  free_head_ = op->slot;
  --slots_taken_;
  op->slot = io_op::no_slot;
}

inline io_uring_sqe* reactor::get_sqe() noexcept {
  if (io_uring_sqe* sqe = io_uring_get_sqe(&ring_->r)) [[likely]]
    return sqe;
  return get_sqe_when_full();
}

io_uring_sqe* reactor::get_sqe_when_full() noexcept {
  io_uring_sqe* sqe = nullptr;
  while (!sqe) {
    // The submission queue is full: hand what we have to the kernel and take a fresh slot.
    ++enters_;
    io_uring_submit(&ring_->r);
    sqe = io_uring_get_sqe(&ring_->r);
  }
  return sqe;
}

// A cancel aimed at an operation the fault injector holds (tests only): the injector says how
// the "kernel" answers, and that is the operation's final completion, reaped by the next poll.
bool reactor::answer_held(io_op* op) noexcept {
  auto it = std::find(held_.begin(), held_.end(), op);
  if (it == held_.end()) return false;
  held_.erase(it);
  faked_.emplace_back(op, faults_ ? faults_->answer_cancel(*op) : -ECANCELED);
  return true;
}

std::size_t reactor::completions_waiting() const noexcept { return io_uring_cq_ready(&ring_->r); }

// flush() for one op while a fault injector is installed (tests only): out of line, so that the
// common loop stays small.
void reactor::flush_with_faults(io_op* op) noexcept {
  const fault_injector::decision d = faults_->on_submit(*op);
  if (d.hold_until_cancel) {
    io_uring_sqe scratch{};
    op->prep(op, &scratch);  // the operation's own state (a msghdr, say) as the kernel would see it
    op->state = io_op::phase::in_flight;
    held_.push_back(op);
    return;
  }
  if (d.fake_result != 0) {
    op->state = io_op::phase::in_flight;
    faked_.emplace_back(op, d.fake_result);  // completed by submit_and_reap(), as if by a CQE
    return;
  }
  if (d.sq_full) {
    ++enters_;
    io_uring_submit(&ring_->r);  // what get_sqe does when the queue is full
  }
  io_uring_sqe* sqe = get_sqe();
  op->prep(op, sqe);
  if (d.max_len != 0 && sqe->len > d.max_len &&
      (sqe->opcode == IORING_OP_RECV || sqe->opcode == IORING_OP_SEND || sqe->opcode == IORING_OP_READ ||
       sqe->opcode == IORING_OP_WRITE)) {
    sqe->len = d.max_len;  // a byte count only for these
  }
  io_uring_sqe_set_data64(sqe, user_data(op));
  op->state = io_op::phase::in_flight;
  if (tls.hooks && !op->background) [[unlikely]]
    hook_io_submit(*op, sqe->opcode, sqe->fd);
}

void reactor::flush() noexcept {
  if (!enabled_) [[unlikely]] {
    enabled_ = true;
    // Debian 12's liburing declares io_uring_enable_rings but does not export it: the syscall.
    if (::syscall(__NR_io_uring_register, ring_->r.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0) < 0)
      fatal(std::string("quell: enabling the io_uring ring failed: ") + std::strerror(errno));
  }
  if (!rearm_.empty()) [[unlikely]] {
    std::vector<io_op*> now;
    now.swap(rearm_);
    for (io_op* op : now) {
      if (ahead_rearm_wanted(op)) submit(op);
      op->object->release();
    }
  }
  while (list_node* n = queued_.pop_front()) {
    auto* op = static_cast<io_op*>(n);
    if (op->slot == io_op::no_slot) take_slot(op);
    if (faults_ && !op->background) [[unlikely]] {
      flush_with_faults(op);
      continue;
    }
    io_uring_sqe* sqe = get_sqe();
    op->prep(op, sqe);
    io_uring_sqe_set_data64(sqe, user_data(op));
    op->state = io_op::phase::in_flight;
    if (tls.hooks && !op->background) [[unlikely]]
      hook_io_submit(*op, sqe->opcode, sqe->fd);
  }
  for (std::uint64_t target : pending_cancels_) {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_cancel64(sqe, target, 0);
    io_uring_sqe_set_data64(sqe, cancel_tag);
  }
  pending_cancels_.clear();
  for (int fd : pending_fd_cancels_) {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, cancel_tag);
  }
  pending_fd_cancels_.clear();
}

void reactor::finish(io_op* op, int res) noexcept {
  op->res = res;
  if (!op->complete(op, res)) {
    op->state = io_op::phase::queued;  // continue, e.g. the rest of a partial write
    queued_.push_back(op);
    return;
  }
  op->state = io_op::phase::done;
  if (tls.hooks && !op->background) [[unlikely]]
    hook_io_complete(*op, res);
  release_slot(op);
  --ops_;
  if (op->background) --background_;
  std::coroutine_handle<> w = op->waiter;
  untrack(op);
  if (w) post_completed(w);  // a receive-ahead multishot has no waiter
}

std::size_t reactor::submit_and_reap(bool wait, std::optional<time_point> until) {
  flush();
  if (!faked_.empty()) wait = false;  // fault injection: these complete without the kernel
  io_uring* r = &ring_->r;
  int rc = 0;
  if (!wait) {
    // GETEVENTS runs the completion work the kernel holds for us. With TASKRUN_FLAG the kernel
    // flags the ring when it holds some, so a step with no SQEs and no flag needs no system call,
    // and a step that submits asks for events only if the flag says there are some: before the
    // call (io_uring_submit adds GETEVENTS itself), or after it, for an operation that completed
    // while being submitted (a loopback connect does) as work only GETEVENTS runs; a virtual
    // clock moves as soon as a step that must not wait reaps nothing.
    const unsigned held = IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW;
    if (!(flags_ & IORING_SETUP_TASKRUN_FLAG)) {
      ++enters_;
      rc = io_uring_submit_and_get_events(r);
    } else if (io_uring_sq_ready(r) > 0 || (IO_URING_READ_ONCE(*r->sq.kflags) & held)) {
      ++enters_;
      rc = io_uring_submit(r);
      if (rc >= 0 && (IO_URING_READ_ONCE(*r->sq.kflags) & held)) {
        ++enters_;
        rc = io_uring_submit_and_get_events(r);
      }
    }
  } else if (until) {
    ++enters_;
    const auto left = std::max(*until - clock_type::now(), duration::zero());
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    __kernel_timespec ts{};
    ts.tv_sec = ns / 1'000'000'000;
    ts.tv_nsec = ns % 1'000'000'000;
    io_uring_cqe* cqe = nullptr;
    rc = io_uring_submit_and_wait_timeout(r, &cqe, 1, &ts, nullptr);
  } else {
    ++enters_;
    rc = io_uring_submit_and_wait(r, 1);
  }
  if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN) {
    fatal(std::string("quell: io_uring_enter failed: ") + std::strerror(-rc));
  }
  std::size_t reaped = 0;
  if (!faked_.empty()) [[unlikely]] {
    std::vector<std::pair<io_op*, int>> now;
    now.swap(faked_);
    for (auto [op, res] : now) finish(op, res);  // may queue an op again (a retry)
    reaped += now.size();
  }
  if (hold_) return reaped;
  // Reap in batches: completions may queue new ops (partial writes) but never free the ring. The
  // tail is read once per batch (liburing's io_uring_for_each_cqe reads it again for every CQE).
  io_uring_cq& cq = r->cq;
  const unsigned shift = (r->flags & IORING_SETUP_CQE32) ? 1 : 0;
  for (;;) {
    unsigned head = *cq.khead;
    const unsigned tail = io_uring_smp_load_acquire(cq.ktail);
    if (head == tail) break;
    reaped += tail - head;
    for (; head != tail; ++head) {
      const io_uring_cqe* cqe = &cq.cqes[(head & cq.ring_mask) << shift];
      const std::uint64_t ud = cqe->user_data;
      if (ud == cancel_tag) continue;
      const auto slot = static_cast<std::uint32_t>(ud & 0xffffffffu);
      const auto gen = static_cast<std::uint32_t>(ud >> 32);
      if (slot >= slots_.size()) continue;
      const std::uint64_t entry = slots_[slot];
      if (entry & 1) continue;  // a free slot: stale
      auto* op = reinterpret_cast<io_op*>(entry);
      if (op->generation != gen) continue;  // stale: the slot was reused
      op->cqe_flags = cqe->flags;
      if (cqe->flags & IORING_CQE_F_MORE) {
        op->res = cqe->res;
        op->complete(op, cqe->res);  // a multishot's result; it stays armed
        continue;
      }
      finish(op, cqe->res);
    }
    io_uring_smp_store_release(cq.khead, tail);  // io_uring_cq_advance
    if (bufs_ && bufs_->returned > 0) {
      io_uring_buf_ring_advance(bufs_->br, bufs_->returned);  // the buffers handled in this batch
      bufs_->returned = 0;
    }
  }
  return reaped;
}

}  // namespace quell::detail
