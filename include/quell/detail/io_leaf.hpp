// The leaf-protocol side of every I/O operation: one awaiter state machine, specialised by a
// small policy class per operation kind (what SQE to prepare, what to do with each CQE, what to
// keep when a cancelled operation completed anyway).
//
//   D::prep(io_uring_sqe*)        fill the SQE (compiled code; liburing stays out of headers)
//   D::on_cqe(int res) -> bool    a CQE arrived; true when finished (must be true once
//                                 cancel_sent is set), false to submit again
//   D::on_cancel() -> bool        a cancel request reached the operation and it has ended; res is
//                                 its last result. Return true for "cancelled" (after keeping
//                                 anything it received in the io_object's stash, for the next
//                                 call), false to deliver the result (completion wins). Called at
//                                 most once, whichever way the cancel met the operation (below)
//   D::give_back() -> bool        optional: the operation finished but its waiter discards the
//                                 result (a race's loser): put it back in the stash, in front, and
//                                 return true; false if there is nothing to put back (an error)
//   D::await_resume()             the result, or throws std::system_error
//   D::parks() -> bool            optional: wait in user space for the descriptor's receive-ahead
//                                 (quell/detail/receive_ahead.hpp) instead of going to the kernel
//   D::feed_me() -> bool          with parks(): take what the descriptor holds; true when finished
//
// -EINTR and -EAGAIN are retried (submitted again) by the state machine itself.
//
// Cancel: queued (never reached the kernel) → unlinked, cancelled synchronously, no system call.
// In flight → ASYNC_CANCEL is queued and the waiter is resumed by the op's own final CQE, which
// says whether the kernel stopped it or it completed anyway; on_cancel decides what that means.
// Parked (waiting in user space for what receive-ahead brings) → taken off its descriptor's list,
// cancelled synchronously; on_cancel keeps whatever a read had already taken (read_exact's part).
// Done, its waiter queued but not resumed yet (the completion window: the reactor reaped the CQE
// in the same step as other work that now cancels it) → on_cancel decides the same way, with no
// system call, and the queued resumption delivers the outcome. Without this a read that lost a
// race by one turn would report "completed anyway" and the race would drop its bytes.
#pragma once

#include <cerrno>
#include <concepts>
#include <coroutine>
#include <string>
#include <string_view>
#include <system_error>

#include "quell/detail/reactor.hpp"
#include "quell/detail/receive_ahead.hpp"
#include "quell/detail/scheduler.hpp"
#include "quell/detail/wait_note.hpp"

namespace quell::detail {

[[noreturn]] void throw_io_error(int res, const char* what);

template <class D>
class io_leaf : public io_op {
 public:
  io_leaf(const io_leaf&) = delete;
  io_leaf& operator=(const io_leaf&) = delete;
  io_leaf(io_leaf&& o) noexcept : io_op(&prep_thunk, &cqe_thunk, feed_ptr()) { object = o.object; }

  bool await_ready() noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    reactor& r = reactor::current();
    waiter = h;
    owner_ = &r;
    if constexpr (parking()) {
      if (static_cast<D*>(this)->parks()) {
        ahead_park(this);
        return;
      }
    }
    r.submit(this);
  }
  bool await_cancel(std::coroutine_handle<>) noexcept {
    switch (state) {
      case phase::parked:
        ahead_unpark(this);  // nothing was handed to it that it has not kept: no system call
        state = phase::done;
        cancel_sent = true;
        res = -ECANCELED;
        cancelled_ = static_cast<D*>(this)->on_cancel();
        if (!cancelled_) post(waiter);
        return cancelled_;
      case phase::queued:
      case phase::in_flight:
        if (!owner_->cancel(this)) return false;  // in the kernel: its final CQE decides
        cancelled_ = static_cast<D*>(this)->on_cancel();
        if (!cancelled_) post(waiter);  // it had finished its work before the queued rest
        return cancelled_;
      case phase::done:
        cancelled_ = static_cast<D*>(this)->on_cancel();  // the completion window
        return false;                                     // its resumption is already queued
      case phase::idle:
        break;
    }
    return false;
  }
  bool await_must_resume() const noexcept { return !cancelled_; }
  void describe_wait(wait_note& out) const {
    std::string_view name = type_name<D>();
    if (name.size() > 3 && name.substr(name.size() - 3) == "_op") name.remove_suffix(3);
    out.what = std::string(name);
    if (object) out.what += " on fd " + std::to_string(object->fd);
  }
  bool await_give_back() noexcept {
    if constexpr (requires(D & d) {
                    { d.give_back() } -> std::same_as<bool>;
                  }) {
      return static_cast<D*>(this)->give_back();
    } else {
      return false;
    }
  }

 protected:
  explicit io_leaf(io_object* obj) noexcept : io_op(&prep_thunk, &cqe_thunk, feed_ptr()) { object = obj; }

  bool cancelled_ = false;

 private:
  // A function, not a constant: D is incomplete where this base is instantiated.
  static constexpr bool parking() noexcept {
    return requires(D & d) {
      { d.parks() } -> std::same_as<bool>;
    };
  }
  static bool feed_thunk(io_op* op) noexcept {
    if constexpr (parking()) {
      return static_cast<D*>(op)->feed_me();
    } else {
      return false;
    }
  }
  static constexpr feed_fn feed_ptr() noexcept { return parking() ? &feed_thunk : nullptr; }

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
