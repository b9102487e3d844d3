#include "quell/file.hpp"

#include <liburing.h>

#include <system_error>

namespace quell::detail {

bool open_op::await_ready() {
  if (!tls.current) throw std::logic_error("quell: an I/O operation was started outside an executor");
  return false;
}

void open_op::prep(io_uring_sqe* sqe) noexcept {
  io_uring_prep_openat(sqe, AT_FDCWD, path.c_str(), flags | O_CLOEXEC, mode);
}

bool open_op::on_cancel() noexcept { return res < 0 && (res == -ECANCELED || res == -EINTR); }

file open_op::await_resume() {
  if (res < 0) throw std::system_error(-res, std::system_category(), "open " + path);
  return file(res);
}

bool file_rw_op::await_ready() {
  if (!tls.current) throw std::logic_error("quell: an I/O operation was started outside an executor");
  return false;
}

void file_rw_op::prep(io_uring_sqe* sqe) noexcept {
  switch (what) {
    case kind::read:
      io_uring_prep_read(sqe, object->fd, data, static_cast<unsigned>(size), offset);
      break;
    case kind::write:
      io_uring_prep_write(sqe, object->fd, data, static_cast<unsigned>(size), offset);
      break;
    case kind::fsync:
      io_uring_prep_fsync(sqe, object->fd, 0);
      break;
  }
}

std::size_t file_rw_op::await_resume() {
  if (res < 0) throw_io_error(res, what == kind::read ? "read_at" : what == kind::write ? "write_at" : "fsync");
  return static_cast<std::size_t>(res);
}

}  // namespace quell::detail
