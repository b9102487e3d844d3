// Readiness of a descriptor quell does not own: wait_readable(fd), wait_writable(fd).
//
//   int fd = PQsocket(conn);                  // e.g. a database client library's socket
//   co_await quell::wait_readable(fd);        // then let the library read what arrived
//
// For libraries that do their own reads and writes and only need to be told when their socket is
// ready (libpq, c-ares, a TLS library's non-blocking handshake). quell's own sockets do not need
// this: their reads and writes are cancellable leaves already (net.hpp).
//
// Each call is one io_uring poll request (IORING_OP_POLL_ADD, one-shot) and a leaf of the
// cancellation protocol (cancellation.hpp). It returns the ready events (POLLIN, POLLOUT,
// POLLHUP, POLLERR, ...; POLLHUP and POLLERR are reported whatever was asked, as poll(2) does).
//   - Cancelled before it was handed to the kernel (the same turn): it is dropped, no system
//     call, and ends cancelled.
//   - Cancelled in the kernel: an ASYNC_CANCEL is sent and the leaf ends when the kernel has let
//     go of the request; it ends cancelled.
//   - The descriptor became ready before the cancel landed (in the kernel, or after the events
//     were reaped but before the waiter resumed): the events are delivered (completion wins) and
//     the task's next suspension point is cancelled. Readiness is level-triggered, so a cancelled
//     or discarded wait loses nothing either way: the data is still in the socket.
//   - A descriptor that is not open: std::system_error (EBADF); nothing else is affected.
// The caller keeps the descriptor open while a wait on it is in flight (cancel and await the wait
// before closing it): quell does not own it and cannot know when it is closed.
#pragma once

#include <poll.h>

#include <cstdint>

#include "quell/detail/io_leaf.hpp"

namespace quell {

namespace detail {
struct poll_op : io_leaf<poll_op> {
  poll_op(int fd, unsigned events) noexcept : io_leaf(nullptr), fd(fd), events(events) {}
  bool await_ready();
  void prep(io_uring_sqe* sqe) noexcept;
  bool on_cqe(int) noexcept { return true; }
  // Events (or an error) already reported: completion wins.
  bool on_cancel() noexcept { return res == -ECANCELED || res == -EINTR; }
  unsigned await_resume();

  int fd;
  unsigned events;
};
}  // namespace detail

// Waits until `fd` is ready for `events` (a mask of POLLIN, POLLOUT, POLLPRI); returns the
// events that are ready.
inline detail::poll_op wait_for_events(int fd, unsigned events) { return {fd, events}; }
inline detail::poll_op wait_readable(int fd) { return {fd, POLLIN}; }
inline detail::poll_op wait_writable(int fd) { return {fd, POLLOUT}; }

}  // namespace quell
