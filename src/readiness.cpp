#include "quell/readiness.hpp"

#include <liburing.h>

#include <stdexcept>

namespace quell::detail {

bool poll_op::await_ready() {
  if (!tls.current) throw std::logic_error("quell: an I/O operation was started outside an executor");
  return false;
}

void poll_op::prep(io_uring_sqe* sqe) noexcept { io_uring_prep_poll_add(sqe, fd, events); }

unsigned poll_op::await_resume() {
  if (res < 0) throw_io_error(res, "poll");
  return static_cast<unsigned>(res);
}

}  // namespace quell::detail
