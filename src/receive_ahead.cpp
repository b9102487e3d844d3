#include "quell/detail/receive_ahead.hpp"

#include <liburing.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "quell/detail/scheduler.hpp"

namespace quell::detail {

namespace {

using kind = receive_ahead::kind;
using mode = receive_ahead::mode;

bool in_reactor(const io_op* op) noexcept {
  return op->state == io_op::phase::queued || op->state == io_op::phase::in_flight;
}

std::size_t queued(const receive_ahead* a) noexcept {
  const io_object* o = a->object;
  return a->what == kind::stream ? o->stashed() : o->stash_fds.size();
}

void prep_ahead(io_op* op, io_uring_sqe* sqe) noexcept {
  auto* a = static_cast<receive_ahead*>(op);
  const io_object* o = a->object;
  if (a->what == kind::listener) {
    io_uring_prep_multishot_accept(sqe, o->fd, nullptr, nullptr, SOCK_CLOEXEC);
    return;
  }
  io_uring_prep_recv_multishot(sqe, o->fd, nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = 0;
  a->capped = a->r->receive_cap != reactor::tri::no;
  a->raised = false;
  if (a->capped) {
    // The total length cap (Linux 6.17, `optlen`, which liburing 2.3 calls file_index): the
    // kernel stops after this many bytes, so the queue can overshoot its bound by less than one
    // buffer. Older kernels refuse a non-zero value with EINVAL (handled in on_stream). Bytes a
    // waiting read takes at once do not fill the queue: the cap leaves room for them, or a 1 MiB
    // read_exact would re-arm the receive every 64 KiB (W12 in bench/compare/WORKLOADS.md). If
    // that read is cancelled while it waits, the receive is cancelled with it (at the next flush,
    // before the kernel receives more: with DEFER_TASKRUN it receives only inside io_uring_enter,
    // after the submissions), and armed again within the bound.
    const std::size_t q = o->stashed();
    const std::size_t room = o->ahead_bound > q ? o->ahead_bound - q : 1;
    a->raised = !o->parked.empty() && o->ahead_want > room;  // (a small read fits the room)
    const std::size_t cap = room + (a->raised ? o->ahead_want : 0);
    sqe->file_index = static_cast<std::uint32_t>(std::min<std::size_t>(cap, 0x7fffffff));
  }
}

void arm(receive_ahead* a, reactor& r) noexcept {
  a->r = &r;
  a->m = mode::armed;
  a->stop_for_bound = false;
  r.submit(a);
}

// Reads parked while the multishot was ending, on a socket that reads one receive per read
// from now on: each goes to the kernel itself.
void submit_parked(io_object* o, reactor& r) noexcept {
  while (list_node* n = o->parked.pop_front()) {
    auto* op = static_cast<io_op*>(n);
    --r.parked;
    op->state = io_op::phase::idle;
    r.submit(op);  // takes its own reference
    o->release();  // the parked one (the owner's keeps o alive)
  }
}

void append(io_object* o, const char* p, std::size_t n) {
  const auto* b = reinterpret_cast<const std::byte*>(p);
  o->stash.insert(o->stash.end(), b, b + n);
}

// After the final CQE: arm again now (next flush), or wait for the reads (full).
void settle(receive_ahead* a) noexcept {
  io_object* o = a->object;
  if (o->closing || a->r->background_stopped()) {
    a->m = mode::idle;
  } else if (o->ahead_off) {
    // Turned off while its cancel was on the way, and it ended for another reason first.
    a->m = mode::off;
    submit_parked(o, *a->r);
  } else if (queued(a) * 2 >= o->ahead_bound) {
    a->m = mode::full;  // re-armed by ahead_took once a read takes the queue below half
  } else {
    a->m = mode::armed;
    a->r->rearm_later(a);
  }
}

// The multishot ended because it was cancelled (or interrupted).
void after_cancel(receive_ahead* a) noexcept {
  io_object* o = a->object;
  if (o->ahead_off) {  // (turned on again meanwhile: settle re-arms it)
    a->m = mode::off;
    if (!o->closing) submit_parked(o, *a->r);
  } else if (o->closing || a->r->background_stopped()) {
    a->m = mode::idle;
  } else {
    settle(a);  // cancelled for the bound, or a spurious EINTR
  }
}

// After a multishot's final CQE (stream or listener): the reasons for its cancel are spent, and
// the reads or accepts that wait take what it left (the end of the stream, an error).
void after_final_cqe(receive_ahead* a) noexcept {
  a->stop_for_bound = false;
  a->turning_off = false;
  if (!a->object->parked.empty()) ahead_feed(a->object);
}

void on_stream(receive_ahead* a, int res) noexcept {
  io_object* o = a->object;
  reactor& r = *a->r;
  const unsigned flags = a->cqe_flags;
  if (flags & IORING_CQE_F_BUFFER) {
    const unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
    if (res > 0) {
      if (a->capped) r.receive_cap = reactor::tri::yes;
      o->incoming = r.buffer(bid);
      o->incoming_len = static_cast<std::size_t>(res);
      if (!o->parked.empty()) ahead_feed(o);
      if (o->incoming_len > 0 && !o->closing) append(o, o->incoming, o->incoming_len);
      o->incoming = nullptr;
      o->incoming_len = 0;
    }
    r.give_buffer(bid);
  }
  if (flags & IORING_CQE_F_MORE) {
    if (!a->cancel_sent && o->stashed() >= o->ahead_bound) {
      a->stop_for_bound = true;  // no kernel cap, or one raised for a read that went: stop it ourselves
      r.cancel(a);
    }
    return;
  }
  // The final CQE.
  if (res > 0) {
    settle(a);  // the length cap was reached, or the CQ was full
  } else if (res == 0) {
    a->m = mode::ended;
    a->end = 0;
  } else if (res == -ENOBUFS) {
    // The ring ran dry: the bytes are still in the socket. Buffers go back as each CQE is handled,
    // so by the next flush the ring has them again.
    ++r.ring_ran_dry;
    if (o->closing || r.background_stopped()) {
      a->m = mode::idle;
    } else {
      a->m = mode::starved;
      r.rearm_later(a);
    }
  } else if (res == -ECANCELED || res == -EINTR) {
    after_cancel(a);
  } else if (res == -EINVAL && a->capped && r.receive_cap != reactor::tri::yes) {
    r.receive_cap = reactor::tri::no;  // a kernel before 6.17: bound by cancelling instead
    settle(a);
  } else {
    // (EINVAL otherwise is the socket's: ring_ready() required 6.1, which has multishot receive.)
    a->m = mode::ended;
    a->end = res;
  }
  after_final_cqe(a);
}

void on_listener(receive_ahead* a, int res) noexcept {
  io_object* o = a->object;
  reactor& r = *a->r;
  const bool more = a->cqe_flags & IORING_CQE_F_MORE;
  if (res >= 0) {
    if (o->closing) {
      ::close(res);
    } else {
      o->stash_fds.push_back(res);
      if (!o->parked.empty()) ahead_feed(o);
    }
  }
  if (more) {
    if (!a->cancel_sent && o->stash_fds.size() >= o->ahead_bound) {
      a->stop_for_bound = true;  // the kernel's backlog holds the rest
      r.cancel(a);
    }
    return;
  }
  if (res >= 0) {
    settle(a);  // the CQ was full
  } else if (res == -ECANCELED || res == -EINTR) {
    after_cancel(a);
  } else {
    // EMFILE, ECONNABORTED, EINVAL (not listening: ring_ready() required 6.1, which has multishot
    // accept), ...: the next accept reports it, after the connections before it; the one after
    // that arms again (so a process out of descriptors does not spin).
    a->m = mode::ended;
    a->end = res;
  }
  after_final_cqe(a);
}

bool on_cqe(io_op* op, int res) noexcept {
  auto* a = static_cast<receive_ahead*>(op);
  if (a->what == kind::stream) {
    on_stream(a, res);
  } else {
    on_listener(a, res);
  }
  return true;  // ends with its final CQE; re-arming goes through rearm_later
}

}  // namespace

receive_ahead::receive_ahead(io_object* o, kind k) noexcept : io_op(&prep_ahead, &on_cqe), what(k) {
  object = o;
  background = true;
}

bool ahead_wanted(io_object* o, receive_ahead::kind k) {
  receive_ahead* a = o->ahead;
  // Still armed (or about to be): even a socket turning receive-ahead off waits for its end, or
  // a receive of its own could overtake bytes the multishot has already taken.
  if (a && (in_reactor(a) || a->m == mode::armed || a->m == mode::starved)) {
    if (a->r != &reactor::current()) {
      throw std::logic_error(
          "quell: a socket is read on an executor while its receive-ahead is armed on another (one executor at a "
          "time; call set_receive_ahead(false) on a socket that moves)");
    }
    return true;
  }
  if (o->ahead_off) return false;
  if (a && a->m == mode::off) return false;
  reactor& r = reactor::current();
  if (!r.ring_ready()) return false;
  if (!a) {
    a = new receive_ahead(o, k);
    o->ahead = a;
  }
  return true;
}

void ahead_park(io_op* op) noexcept {
  io_object* o = op->object;
  receive_ahead* a = o->ahead;
  reactor& r = reactor::current();
  o->retain();
  op->state = io_op::phase::parked;
  o->parked.push_back(op);
  ++r.parked;
  if (!in_reactor(a) && a->m != mode::armed && a->m != mode::starved) a->r = &r;  // whose `parked` counts it
  if (a->m == mode::idle && !in_reactor(a)) arm(a, r);
}

void ahead_unpark(io_op* op) noexcept {
  io_object* o = op->object;
  reactor& r = reactor::current();
  op->unlink();
  --r.parked;
  receive_ahead* a = o->ahead;
  if (a && a->raised && a->r == &r && a->state == io_op::phase::in_flight && !a->cancel_sent && o->parked.empty()) {
    a->stop_for_bound = true;  // its cap made room for this read's bytes: the queue has no such room
    r.cancel(a);
  }
  o->release();
}

void ahead_feed(io_object* o) noexcept {
  reactor& r = reactor::current();
  o->retain();
  while (list_node* n = o->parked.front()) {
    auto* op = static_cast<io_op*>(n);
    if (!op->feed(op)) break;  // it took what there was and waits for more
    op->unlink();
    op->state = io_op::phase::done;
    --r.parked;
    post_completed(op->waiter);
    o->release();
  }
  ahead_took(o);
  o->release();
}

void ahead_took(io_object* o) noexcept {
  receive_ahead* a = o->ahead;
  if (!a || o->closing) return;
  const bool want = (a->m == mode::full && queued(a) * 2 < o->ahead_bound) ||
                    (a->m == mode::idle && !o->parked.empty());  // a listener's error was taken
  if (!want) return;
  if (o->ahead_off) {
    a->m = mode::off;
    return;
  }
  if (in_reactor(a)) {  // its final CQE is being handled: it cannot be submitted yet
    a->m = mode::armed;
    a->r->rearm_later(a);
    return;
  }
  arm(a, reactor::current());
}

void ahead_closing(io_object* o, int res, bool dropped) noexcept {
  receive_ahead* a = o->ahead;
  if (!a) return;
  if (a->background && in_reactor(a)) {
    if (dropped) ::shutdown(o->fd, a->what == kind::stream ? SHUT_RDWR : SHUT_RD);
    a->r->to_foreground(a);
  } else if (!in_reactor(a) && (a->m == mode::armed || a->m == mode::starved)) {
    a->r->drop_rearm(a);  // set aside for the next flush: it would hold the descriptor open until then
    a->m = mode::idle;
  }
  if (o->parked.empty()) return;
  reactor& r = *a->r;
  o->retain();
  while (list_node* n = o->parked.pop_front()) {
    auto* op = static_cast<io_op*>(n);
    op->res = res;
    op->state = io_op::phase::done;
    op->object = nullptr;  // it ends with the error; what it took goes nowhere (the socket is gone)
    --r.parked;
    if (r.home) {
      r.home->post_completed(op->waiter);  // also from outside its turns (see reactor::home)
    } else {
      post_completed(op->waiter);
    }
    o->release();
  }
  o->release();
}

int ahead_take_end(io_object* o) noexcept {
  receive_ahead* a = o->ahead;
  if (!a || a->m != mode::ended) return 1;
  const int e = a->end;
  if (a->what == kind::listener) {
    a->m = mode::idle;  // the next accept that waits arms again
  } else {
    a->end = 0;  // an error is reported once; the stream has ended after it
  }
  return e;
}

void ahead_turn_off(io_object* o) noexcept {
  o->ahead_off = true;
  receive_ahead* a = o->ahead;
  if (!a) return;
  if (in_reactor(a)) {
    a->turning_off = true;
    if (a->r->cancel(a)) {  // still queued: ended now, no CQE will come
      a->m = mode::off;
      submit_parked(o, *a->r);
    }
    return;
  }
  if (a->m == mode::armed || a->m == mode::starved) return;  // set aside for the next flush: it says no
  if (a->m != mode::ended) a->m = mode::off;
}

bool ahead_rearm_wanted(io_op* op) noexcept {
  auto* a = static_cast<receive_ahead*>(op);
  io_object* o = a->object;
  if (in_reactor(a)) return false;
  if (o->ahead_off) {
    a->m = mode::off;
    if (!o->closing) submit_parked(o, *a->r);
    return false;
  }
  if (o->closing || a->r->background_stopped()) {
    a->m = mode::idle;
    return false;
  }
  a->m = mode::armed;
  a->stop_for_bound = false;
  return true;
}

void ahead_destroy(receive_ahead* a) noexcept { delete a; }

}  // namespace quell::detail
