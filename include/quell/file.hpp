// Files through io_uring: open, read_at, write_at, fsync, close.
//
//   quell::file f = co_await quell::file::open("/tmp/x", O_RDWR | O_CREAT | O_TRUNC);
//   co_await f.write_at("hello", 0);
//   std::size_t n = co_await f.read_at(buf, 0);
//   co_await f.fsync();
//   co_await f.close();
//
// Cancellation follows the two-phase rule of every I/O leaf (quell/net.hpp): an operation that
// never reached the kernel ends at once; one in the kernel ends when the kernel lets go of it.
// Regular-file reads and writes usually cannot be stopped once the kernel runs them; they then
// complete anyway and their result is delivered (completion wins), also when the cancel arrives
// after the kernel finished but before the waiter resumed. A positional read loses nothing if its
// waiter discards it (the bytes are still in the file at that offset); a write or fsync that
// happened is reported. An open that completed anyway delivers the file (if its waiter discards
// it, e.g. as the loser of a race, the file is closed). close() waits for pending operations as
// sockets do.
// Errors are std::system_error with the errno and the path ("open /nope: No such file or
// directory").
#pragma once

#include <fcntl.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "quell/net.hpp"

namespace quell {

class file;

namespace detail {

struct open_op : io_leaf<open_op> {
  open_op(std::string p, int f, mode_t m) : io_leaf(nullptr), path(std::move(p)), flags(f), mode(m) {}
  open_op(open_op&& o) noexcept : io_leaf(std::move(o)), path(std::move(o.path)), flags(o.flags), mode(o.mode) {}
  bool await_ready();
  void prep(io_uring_sqe* sqe) noexcept;
  bool on_cqe(int) noexcept { return true; }
  bool on_cancel() noexcept;
  file await_resume();

  std::string path;
  int flags;
  mode_t mode;
};

struct file_rw_op : io_leaf<file_rw_op> {
  enum class kind : std::uint8_t { read, write, fsync };
  file_rw_op(io_object* o, kind k, char* p, std::size_t n, std::uint64_t off)
      : io_leaf(o), what(k), data(p), size(n), offset(off) {}
  bool await_ready();
  void prep(io_uring_sqe* sqe) noexcept;
  bool on_cqe(int) noexcept { return true; }
  bool on_cancel() noexcept { return res == -ECANCELED || res == -EINTR; }
  std::size_t await_resume();

  kind what;
  char* data;
  std::size_t size;
  std::uint64_t offset;
};

}  // namespace detail

class file {
 public:
  file() noexcept = default;
  explicit file(int fd) : h_(fd) {}  // adopts an open descriptor

  // O_CLOEXEC is always added.
  static detail::open_op open(std::string path, int flags = O_RDONLY, mode_t mode = 0644) {
    return {std::move(path), flags, mode};
  }
  // Reads up to buf.size() bytes at `offset`; 0 at the end of the file.
  detail::file_rw_op read_at(std::span<char> buf, std::uint64_t offset) {
    return {h_.use("read_at"), detail::file_rw_op::kind::read, buf.data(), buf.size(), offset};
  }
  // Writes `data` at `offset`; yields the bytes written.
  detail::file_rw_op write_at(std::string_view data, std::uint64_t offset) {
    return {h_.use("write_at"), detail::file_rw_op::kind::write, const_cast<char*>(data.data()), data.size(), offset};
  }
  detail::file_rw_op fsync() { return {h_.use("fsync"), detail::file_rw_op::kind::fsync, nullptr, 0, 0}; }
  detail::close_op close() noexcept { return {&h_}; }

  bool is_open() const noexcept { return h_.is_open(); }
  int native_handle() const noexcept { return h_.fd(); }

 private:
  detail::io_handle h_;
};

}  // namespace quell
