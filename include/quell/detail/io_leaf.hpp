// The leaf-protocol side of every I/O operation: one awaiter state machine, specialised by a
// small policy class per operation kind (what SQE to prepare, what to do with each CQE, what to
// keep when a cancelled operation completed anyway).
//
//   D::prep(io_uring_sqe*)        fill the SQE (compiled code; liburing stays out of headers)
//   D::on_cqe(int res) -> bool    a CQE arrived; true when finished (must be true once
//                                 cancel_sent is set), false to submit again
//   D::on_cancel() -> bool        the operation ended after a cancel request; res is its last
//                                 result. Return true for "cancelled" (after keeping anything it
//                                 received in the io_object's stash), false to deliver the result
//                                 (completion wins)
//   D::await_resume()             the result, or throws std::system_error
//
// -EINTR and -EAGAIN are retried (submitted again) by the state machine itself.
//
// Cancel: queued (never reached the kernel) → unlinked, cancelled synchronously, no system call.
// In flight → ASYNC_CANCEL is queued and the waiter is resumed by the op's own final CQE.
#pragma once

#include <cerrno>
#include <coroutine>
#include <system_error>

#include "quell/detail/reactor.hpp"
#include "quell/detail/scheduler.hpp"

namespace quell::detail {

[[noreturn]] void throw_io_error(int res, const char* what);

template <class D>
class io_leaf : public io_op {
 public:
  io_leaf(const io_leaf&) = delete;
  io_leaf& operator=(const io_leaf&) = delete;
  io_leaf(io_leaf&& o) noexcept : io_op(&prep_thunk, &cqe_thunk) { object = o.object; }

  bool await_ready() noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    reactor& r = reactor::current();
    waiter = h;
    owner_ = &r;
    r.submit(this);
  }
  bool await_cancel(std::coroutine_handle<>) noexcept {
    if (state != phase::queued && state != phase::in_flight) return false;
    if (owner_->cancel(this)) {
      cancelled_ = static_cast<D*>(this)->on_cancel();
      if (!cancelled_) post(waiter);  // it had finished its work before the queued rest
      return cancelled_;
    }
    return false;
  }
  bool await_must_resume() const noexcept { return !cancelled_; }

 protected:
  explicit io_leaf(io_object* obj) noexcept : io_op(&prep_thunk, &cqe_thunk) { object = obj; }

  bool cancelled_ = false;

 private:
  static void prep_thunk(io_op* op, io_uring_sqe* sqe) noexcept { static_cast<D*>(op)->prep(sqe); }
  static bool cqe_thunk(io_op* op, int res) noexcept {
    D* d = static_cast<D*>(op);
    // Transient failures are not the caller's business: the operation is submitted again (unless
    // a cancel is under way, which then ends it). connect opts out: a retried connect would fail.
    if constexpr (!requires { D::no_transient_retry; }) {
      if ((res == -EINTR || res == -EAGAIN) && !d->cancel_sent) return false;
    }
    if (!d->on_cqe(res) && !d->cancel_sent) return false;
    if (d->cancel_sent) d->cancelled_ = d->on_cancel();
    return true;
  }

  reactor* owner_ = nullptr;
};

}  // namespace quell::detail
