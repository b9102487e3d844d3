#include "quell/net.hpp"

#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>

#include "quell/errors.hpp"

namespace quell {

namespace detail {

void throw_io_error(int res, const char* what) {
  const int err = res < 0 ? -res : res;
  if (err == ECANCELED) {
    throw std::system_error(err, std::system_category(),
                            std::string(what) + ": aborted because the descriptor was closed while it was pending");
  }
  throw std::system_error(err, std::system_category(), what);
}

namespace {
[[noreturn]] void throw_errno(const std::string& what) { throw std::system_error(errno, std::system_category(), what); }

void check_in_executor() {
  if (!tls.current) throw std::logic_error("quell: an I/O operation was started outside an executor");
}
}  // namespace

io_handle::io_handle(int fd) : obj_(new io_object) { obj_->fd = fd; }

io_handle& io_handle::operator=(io_handle&& o) noexcept {
  if (this != &o) {
    reset();
    obj_ = std::exchange(o.obj_, nullptr);
  }
  return *this;
}

io_object* io_handle::use(const char* what) const {
  if (!obj_ || obj_->closing) {
    throw std::system_error(EBADF, std::system_category(), std::string(what) + ": the socket is closed");
  }
  return obj_;
}

void io_handle::reset() noexcept {
  io_object* o = std::exchange(obj_, nullptr);
  if (!o) return;
  if (o->ahead) {
    o->closing = true;
    ahead_closing(o, -ECANCELED, true);
  }
  if (o->in_flight > 0) {
    o->closing = true;
    if (tls.current && tls.current->has_io()) tls.current->io().cancel_all_on(o->fd);
  }
  o->release();  // the last operation to drain closes the descriptor
}

int io_handle::release(const char* what) {
  io_object* o = use(what);
  if (!o->parked.empty()) throw std::logic_error(std::string(what) + ": a read is waiting on the socket");
  if (o->ahead && o->ahead->m == receive_ahead::mode::ended && o->ahead->end < 0) {
    throw std::logic_error(std::string(what) + ": the socket has an error to report (read it first)");
  }
  if (o->ahead && o->in_flight == 1 &&
      (o->ahead->state == io_op::phase::queued || o->ahead->state == io_op::phase::in_flight)) {
    throw std::logic_error(std::string(what) +
                           ": receive-ahead is armed on the socket (call set_receive_ahead(false) before its first "
                           "read to hand it over later)");
  }
  if (o->in_flight > 0) {
    throw std::logic_error(std::string(what) + ": an operation is in flight on the socket");
  }
  if (o->stashed() > 0 || o->stash_eof || !o->stash_fds.empty() || !o->stash_datagrams.empty()) {
    throw std::logic_error(std::string(what) + ": the socket keeps what cancelled operations received; take it first");
  }
  const int fd = std::exchange(o->fd, -1);
  reset();
  return fd;
}

// ---- close ---------------------------------------------------------------------------------

bool close_op::await_ready() noexcept {
  io_object* o = h->get();
  if (!o) return true;
  o->closing = true;
  ahead_closing(o, -ECANCELED, false);
  return o->in_flight == 0;
}

void close_op::await_suspend(std::coroutine_handle<> waiter) noexcept {
  io_object* o = h->get();
  o->drained = waiter;
  tls.current->io().cancel_all_on(o->fd);
}

void close_op::await_resume() noexcept { h->reset(); }

namespace {
// A pipe has no position: -1 asks for "the current one", which a stream ignores.
constexpr std::uint64_t stream_offset = ~std::uint64_t{0};
// read(2)/write(2) lengths are 32-bit in an SQE; a longer buffer is done in parts (a short read or
// write, which every stream operation handles).
unsigned rw_len(std::size_t n) noexcept {
  return static_cast<unsigned>(std::min<std::size_t>(n, std::size_t{1} << 30));
}
}  // namespace

// ---- read_some -----------------------------------------------------------------------------

namespace {
// Serves a read from what cancelled reads kept; returns bytes copied.
std::size_t take_stash(io_object* o, std::span<char> buf) {
  const std::size_t n = std::min(buf.size(), o->stashed());
  if (n == 0) return 0;  // (an empty stash has no data pointer for memcpy)
  std::memcpy(buf.data(), o->stash.data() + o->stash_pos, n);
  o->stash_pos += n;
  if (o->stash_pos == o->stash.size()) {
    o->stash.clear();
    o->stash_pos = 0;
  }
  return n;
}
// Then from the bytes of the CQE being handled (receive-ahead), straight from the ring buffer.
std::size_t take_incoming(io_object* o, std::span<char> buf) noexcept {
  const std::size_t n = std::min(buf.size(), o->incoming_len);
  if (n == 0) return 0;
  std::memcpy(buf.data(), o->incoming, n);
  o->incoming += n;
  o->incoming_len -= n;
  return n;
}
void keep(io_object* o, const char* p, std::size_t n) {
  const auto* b = reinterpret_cast<const std::byte*>(p);
  o->stash.insert(o->stash.end(), b, b + n);
}
// Bytes a read took and its waiter discards: first in line again (and offered to a read that
// is waiting for receive-ahead, which may be behind it).
void put_back(io_object* o, const char* p, std::size_t n) {
  if (n == 0) return;
  const auto* b = reinterpret_cast<const std::byte*>(p);
  if (o->stash_pos >= n) {
    o->stash_pos -= n;
    std::memcpy(o->stash.data() + o->stash_pos, b, n);
  } else {
    o->stash.insert(o->stash.begin() + static_cast<std::ptrdiff_t>(o->stash_pos), b, b + n);
  }
  if (!o->parked.empty()) ahead_feed(o);
}
}  // namespace

bool read_some_op::await_ready() {
  if (buf.empty()) return ready = true;
  if (object->stashed() > 0) {
    from_stash = take_stash(object, buf);
    ahead_took(object);
    return ready = true;
  }
  if (object->stash_eof) {
    object->stash_eof = false;
    took_eof = true;
    return ready = true;
  }
  if (object->ahead) {
    const int end = ahead_take_end(object);
    if (end <= 0) {
      res = end;
      return ready = true;
    }
  }
  check_in_executor();
  return false;
}

bool read_some_op::parks() {
  if (object->parked.empty()) object->ahead_want = buf.size();
  return ahead_wanted(object, receive_ahead::kind::stream);
}

bool read_some_op::feed_me() noexcept {
  std::size_t n = take_stash(object, buf);
  n += take_incoming(object, buf.subspan(n));
  if (n == 0) {
    const int end = ahead_take_end(object);
    if (end > 0) return false;  // nothing yet
    res = end;
  } else {
    res = static_cast<int>(n);
  }
  fed = true;
  return true;
}

void read_some_op::prep(io_uring_sqe* sqe) noexcept {
  if (object->plain_rw) {
    io_uring_prep_read(sqe, object->fd, buf.data(), rw_len(buf.size()), stream_offset);
  } else {
    io_uring_prep_recv(sqe, object->fd, buf.data(), buf.size(), 0);
  }
}

bool read_some_op::on_cancel() noexcept {
  if (fed) {
    // It took from the front of the queue: put it back there. The end of the stream stays
    // where receive-ahead keeps it (it is reported to every read after the bytes).
    if (res > 0) put_back(object, buf.data(), static_cast<std::size_t>(res));
    return res >= 0;  // an error delivered anyway stays delivered (completion wins)
  }
  if (res > 0) {
    keep(object, buf.data(), static_cast<std::size_t>(res));  // received anyway: the next read gets it
  } else if (res == 0) {
    object->stash_eof = true;
  } else if (res < 0 && res != -ECANCELED && res != -EINTR) {
    return false;  // it failed anyway: deliver the error
  }
  return true;
}

bool read_some_op::give_back() noexcept {
  if (from_stash > 0) {
    put_back(object, buf.data(), from_stash);
  } else if (ready && res < 0) {
    return false;  // an error: the discarding combinator keeps it
  } else if (ready) {
    if (took_eof) object->stash_eof = true;  // (receive-ahead's end of stream is sticky)
  } else if (res > 0) {
    put_back(object, buf.data(), static_cast<std::size_t>(res));
  } else if (res == 0) {
    if (!fed) object->stash_eof = true;
  } else {
    return false;  // an error: the discarding combinator keeps it
  }
  return true;
}

std::size_t read_some_op::await_resume() {
  if (ready && res >= 0) return from_stash;
  if (res < 0) throw_io_error(res, "read");
  return static_cast<std::size_t>(res);
}

// ---- read_exact ----------------------------------------------------------------------------

bool read_exact_op::await_ready() {
  if (object->stashed() > 0) {
    got = take_stash(object, buf);
    ahead_took(object);
  }
  if (got == buf.size()) return true;
  if (object->stash_eof) {
    object->stash_eof = false;
    eof = true;
    return true;
  }
  if (object->ahead) {
    const int end = ahead_take_end(object);
    if (end <= 0) {
      ahead = true;  // the part it took goes back in front
      if (end == 0) eof = true;
      res = end;
      return true;
    }
  }
  check_in_executor();
  return false;
}

bool read_exact_op::parks() {
  if (object->parked.empty()) object->ahead_want = buf.size() - got;
  return ahead = ahead_wanted(object, receive_ahead::kind::stream);
}

bool read_exact_op::feed_me() noexcept {
  got += take_stash(object, buf.subspan(got));
  got += take_incoming(object, buf.subspan(got));
  if (got == buf.size()) return true;
  const int end = ahead_take_end(object);
  if (end > 0) {
    object->ahead_want = buf.size() - got;  // (the cap of a receive armed again)
    return false;                           // waits for the rest
  }
  if (end == 0) eof = true;
  res = end;
  return true;
}

void read_exact_op::prep(io_uring_sqe* sqe) noexcept {
  if (object->plain_rw) {
    io_uring_prep_read(sqe, object->fd, buf.data() + got, rw_len(buf.size() - got), stream_offset);
  } else {
    io_uring_prep_recv(sqe, object->fd, buf.data() + got, buf.size() - got, 0);
  }
}

bool read_exact_op::on_cqe(int r) noexcept {
  if (r > 0) {
    got += static_cast<std::size_t>(r);
    return got == buf.size();
  }
  if (r == 0) eof = true;
  return true;
}

bool read_exact_op::on_cancel() noexcept {
  if (got < buf.size() && res < 0 && res != -ECANCELED && res != -EINTR) return false;  // failed anyway
  // Keep what arrived, all of it even if the read is complete, in order, in front of anything
  // stashed later: a cancelled read did not happen, and its bytes are the next read's.
  if (ahead) {
    if (object) put_back(object, buf.data(), got);  // receive-ahead's end of stream stays where it is
    return true;
  }
  keep(object, buf.data(), got);
  if (eof) object->stash_eof = true;
  return true;
}

bool read_exact_op::give_back() noexcept {
  if (got != buf.size()) return false;  // end of stream or an error: await_resume keeps the bytes
  put_back(object, buf.data(), got);
  return true;
}

void read_exact_op::await_resume() {
  if (got == buf.size()) return;
  // The bytes that did arrive stay readable.
  if (!object) {
    // Failed by close() while waiting: the socket is gone, and so is what it had taken.
  } else if (ahead) {
    put_back(object, buf.data(), got);
  } else {
    keep(object, buf.data(), got);
  }
  if (eof) {
    throw end_of_stream("quell: read_exact: the peer closed the stream after " + std::to_string(got) + " of " +
                        std::to_string(buf.size()) + " bytes");
  }
  throw_io_error(res, "read");
}

// ---- write_all -----------------------------------------------------------------------------

bool write_all_op::await_ready() {
  if (written) *written = 0;
  if (data.empty()) return true;
  check_in_executor();
  return false;
}

void write_all_op::prep(io_uring_sqe* sqe) noexcept {
  if (object->plain_rw) {
    // (A pipe whose reader is gone raises SIGPIPE here: quell/process.hpp ignores it.)
    io_uring_prep_write(sqe, object->fd, data.data() + done, rw_len(data.size() - done), stream_offset);
  } else {
    io_uring_prep_send(sqe, object->fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
  }
}

bool write_all_op::on_cqe(int r) noexcept {
  if (r > 0) {
    done += static_cast<std::size_t>(r);
    if (written) *written = done;
    return done == data.size();
  }
  return true;  // an error (or a 0-byte send, which cannot make progress)
}

bool write_all_op::on_cancel() noexcept {
  if (done == data.size()) return false;
  if (res < 0 && res != -ECANCELED && res != -EINTR) return false;
  return true;
}

void write_all_op::await_resume() {
  if (done == data.size()) return;
  if (res < 0) throw_io_error(res, "write");
  throw std::system_error(EIO, std::system_category(), "write: the socket accepted no more bytes");
}

// ---- accept ----------------------------------------------------------------------------------

bool accept_op::await_ready() {
  if (!object->stash_fds.empty()) {
    stashed_fd = object->stash_fds.front();
    object->stash_fds.erase(object->stash_fds.begin());
    ahead_took(object);
    return true;
  }
  if (object->ahead) {
    const int end = ahead_take_end(object);
    if (end <= 0) {
      res = end < 0 ? end : -ECONNABORTED;
      return ready = true;
    }
  }
  check_in_executor();
  return false;
}

bool accept_op::parks() { return ahead_wanted(object, receive_ahead::kind::listener); }

bool accept_op::feed_me() noexcept {
  if (!object->stash_fds.empty()) {
    res = object->stash_fds.front();
    object->stash_fds.erase(object->stash_fds.begin());
  } else {
    const int end = ahead_take_end(object);
    if (end > 0) return false;
    res = end < 0 ? end : -ECONNABORTED;
  }
  fed = true;
  return true;
}

void accept_op::prep(io_uring_sqe* sqe) noexcept {
  io_uring_prep_accept(sqe, object->fd, nullptr, nullptr, SOCK_CLOEXEC);
}

bool accept_op::on_cancel() noexcept {
  if (res >= 0) {
    if (fed) {
      give_back();  // it was first in line: it still is
    } else {
      object->stash_fds.push_back(res);  // accepted anyway: the next accept delivers it
    }
    return true;
  }
  if (fed) return false;  // an error delivered anyway stays delivered
  return res == -ECANCELED || res == -EINTR;
}

bool accept_op::give_back() noexcept {
  const int fd = stashed_fd >= 0 ? std::exchange(stashed_fd, -1) : res;
  if (fd < 0 || ready) return false;
  object->stash_fds.insert(object->stash_fds.begin(), fd);
  if (!object->parked.empty()) ahead_feed(object);
  return true;
}

tcp_stream accept_op::await_resume() {
  if (stashed_fd >= 0) return tcp_stream(std::exchange(stashed_fd, -1));
  if (res < 0) throw_io_error(res, "accept");
  return tcp_stream(res);
}

// ---- connect -------------------------------------------------------------------------------

void connect_op::await_suspend(std::coroutine_handle<> h) {
  check_in_executor();
  const int fd = ::socket(peer.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw_errno("connect " + peer.to_string() + ": socket");
  sock = io_handle(fd);
  object = sock.get();
  io_leaf::await_suspend(h);
}

void connect_op::prep(io_uring_sqe* sqe) noexcept { io_uring_prep_connect(sqe, object->fd, peer.data(), peer.size()); }

bool connect_op::on_cancel() noexcept {
  // Connected anyway: deliver the stream (completion wins); the caller may close it. Failed
  // anyway (refused, unreachable): deliver the error, as every leaf does.
  return res == -ECANCELED || res == -EINTR;
}

tcp_stream connect_op::await_resume() {
  if (res < 0) throw std::system_error(-res, std::system_category(), "connect " + peer.to_string());
  if (peer.family() == AF_INET || peer.family() == AF_INET6) {
    int one = 1;
    ::setsockopt(sock.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  // Hand the descriptor over: the stream takes the handle's reference.
  const int fd = sock.get()->fd;
  sock.get()->fd = -1;
  sock.reset();
  return tcp_stream(fd);
}

// ---- datagrams -------------------------------------------------------------------------------

namespace {
struct msg_storage {
  msghdr msg;
  iovec iov;
};
static_assert(sizeof(msg_storage) <= sizeof(datagram_op::hdr));
}  // namespace

datagram_op::datagram_op(io_object* o, bool is_send, std::span<char> b, const address* to)
    : io_leaf(o), send(is_send), buf(b) {
  if (to) peer = *to;
}

datagram_op::datagram_op(datagram_op&& o) noexcept : io_leaf(std::move(o)), send(o.send), buf(o.buf), peer(o.peer) {}

bool datagram_op::await_ready() {
  if (!send && !object->stash_datagrams.empty()) {
    taken = std::move(object->stash_datagrams.front());
    object->stash_datagrams.erase(object->stash_datagrams.begin());
    const std::string& d = taken;
    socklen_t len;
    std::memcpy(&len, d.data(), sizeof len);
    std::memcpy(peer.data(), d.data() + sizeof len, len);
    *peer.size_ptr() = len;
    const std::size_t payload = d.size() - sizeof len - len;
    from_stash = payload;
    std::memcpy(buf.data(), d.data() + sizeof len + len, std::min(payload, buf.size()));
    stashed = true;
    return true;
  }
  check_in_executor();
  return false;
}

void datagram_op::prep(io_uring_sqe* sqe) noexcept {
  auto* m = new (hdr) msg_storage{};
  m->iov.iov_base = buf.data();
  m->iov.iov_len = buf.size();
  m->msg.msg_iov = &m->iov;
  m->msg.msg_iovlen = 1;
  m->msg.msg_name = peer.data();
  if (send) {
    m->msg.msg_namelen = peer.size();
    io_uring_prep_sendmsg(sqe, object->fd, &m->msg, MSG_NOSIGNAL);
  } else {
    m->msg.msg_namelen = sizeof(sockaddr_storage);
    io_uring_prep_recvmsg(sqe, object->fd, &m->msg, MSG_TRUNC);
  }
}

// A received datagram as the stash keeps it: sender address length, address, payload.
std::string datagram_op::record() const {
  const auto* m = reinterpret_cast<const msg_storage*>(hdr);
  const socklen_t len = m->msg.msg_namelen;
  const std::size_t payload = std::min(static_cast<std::size_t>(res), buf.size());
  std::string d(sizeof len + len + payload, '\0');
  std::memcpy(d.data(), &len, sizeof len);
  std::memcpy(d.data() + sizeof len, peer.data(), len);
  std::memcpy(d.data() + sizeof len + len, buf.data(), payload);
  return d;
}

bool datagram_op::on_cancel() noexcept {
  if (res >= 0 && !send) {
    object->stash_datagrams.push_back(record());  // received anyway: the next recv_from gets it
    return true;
  }
  if (res >= 0) return false;  // a datagram that went out was sent
  return res == -ECANCELED || res == -EINTR;
}

bool datagram_op::give_back() noexcept {
  if (send) return false;
  auto& q = object->stash_datagrams;
  if (stashed) {
    q.insert(q.begin(), std::move(taken));
  } else if (res >= 0) {
    q.insert(q.begin(), record());
  } else {
    return false;
  }
  return true;
}

datagram datagram_op::await_resume() {
  if (stashed) return {from_stash, peer};
  if (res < 0) throw_io_error(res, send ? "send_to" : "recv_from");
  if (!send) *peer.size_ptr() = reinterpret_cast<const msg_storage*>(hdr)->msg.msg_namelen;
  return {static_cast<std::size_t>(res), peer};
}

}  // namespace detail

// ---- address -------------------------------------------------------------------------------

address::address() noexcept : storage_{}, len_(0) {}

address address::parse(std::string_view host, std::uint16_t port) {
  address a;
  const std::string h(host);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage_);
  if (::inet_pton(AF_INET, h.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    a.len_ = sizeof(sockaddr_in);
    return a;
  }
  a.storage_ = {};
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage_);
  if (::inet_pton(AF_INET6, h.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    a.len_ = sizeof(sockaddr_in6);
    return a;
  }
  throw std::invalid_argument("quell: not a numeric IPv4 or IPv6 address: \"" + h + "\"");
}

address address::unix_path(std::string_view path) {
  address a;
  auto* un = reinterpret_cast<sockaddr_un*>(&a.storage_);
  if (path.empty() || path.size() >= sizeof(un->sun_path)) {
    throw std::invalid_argument("quell: Unix socket path is empty or longer than " +
                                std::to_string(sizeof(un->sun_path) - 1) + " bytes");
  }
  un->sun_family = AF_UNIX;
  std::memcpy(un->sun_path, path.data(), path.size());
  a.len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return a;
}

address address::from(const sockaddr* sa, socklen_t len) {
  address a;
  len = std::min<socklen_t>(len, sizeof(sockaddr_storage));
  std::memcpy(&a.storage_, sa, len);
  a.len_ = len;
  return a;
}

int address::family() const noexcept { return len_ ? storage_.ss_family : AF_UNSPEC; }

std::uint16_t address::port() const noexcept {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  return 0;
}

std::string address::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  switch (family()) {
    case AF_INET:
      ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf, sizeof buf);
      return std::string(buf) + ":" + std::to_string(port());
    case AF_INET6:
      ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buf, sizeof buf);
      {
        std::string out = "[";  // built step by step: g++ 12 warns (-Wrestrict) on "[" + std::string(...)
        out += buf;
        out += "]:";
        out += std::to_string(port());
        return out;
      }
    case AF_UNIX: {
      const auto* un = reinterpret_cast<const sockaddr_un*>(&storage_);
      return "unix:" + std::string(un->sun_path, ::strnlen(un->sun_path, sizeof un->sun_path));
    }
    default:
      return "(no address)";
  }
}

namespace {
address sock_name(int fd, bool peer) {
  address a;
  *a.size_ptr() = sizeof(sockaddr_storage);
  const int rc = peer ? ::getpeername(fd, a.data(), a.size_ptr()) : ::getsockname(fd, a.data(), a.size_ptr());
  if (rc != 0) throw std::system_error(errno, std::system_category(), peer ? "getpeername" : "getsockname");
  return a;
}

int bound_socket(const address& local, int type, const char* what, bool reuse_port = false) {
  if (reuse_port && local.family() == AF_UNIX) {
    throw std::invalid_argument(std::string(what) + " " + local.to_string() +
                                ": reuse_port needs an IPv4 or IPv6 address (Unix sockets have no SO_REUSEPORT)");
  }
  const int fd = ::socket(local.family(), type | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::system_category(), std::string(what) + " " + local.to_string());
  if (local.family() != AF_UNIX) {
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuse_port && ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
      const int err = errno;
      ::close(fd);
      throw std::system_error(err, std::system_category(),
                              std::string(what) + " " + local.to_string() + " (SO_REUSEPORT)");
    }
  }
  if (::bind(fd, local.data(), local.size()) != 0) {
    const int err = errno;
    ::close(fd);
    throw std::system_error(err, std::system_category(), std::string(what) + " " + local.to_string());
  }
  return fd;
}
}  // namespace

// ---- sockets ---------------------------------------------------------------------------------

void tcp_stream::set_receive_ahead(bool on) {
  detail::io_object* o = h_.use("set_receive_ahead");
  if (!on) {
    detail::ahead_turn_off(o);
    return;
  }
  o->ahead_off = false;
  if (o->ahead && o->ahead->m == detail::receive_ahead::mode::off && o->ahead->state != detail::io_op::phase::queued &&
      o->ahead->state != detail::io_op::phase::in_flight) {
    o->ahead->m = detail::receive_ahead::mode::idle;
  }
}

void tcp_stream::set_receive_bound(std::size_t bytes) {
  h_.use("set_receive_bound")->ahead_bound = std::max<std::size_t>(bytes, 1);
}

void set_receive_ring(const receive_ring_options& options) {
  if (!detail::tls.current) throw std::logic_error("quell: set_receive_ring is called outside an executor");
  const std::uint32_t n = options.buffers;
  if (options.buffer_size == 0 || n == 0 || n > 32768 || (n & (n - 1)) != 0) {
    throw std::invalid_argument(
        "quell: set_receive_ring: buffer_size must be positive and buffers a power of two "
        "from 1 to 32768 (got " +
        std::to_string(options.buffer_size) + " x " + std::to_string(n) + ")");
  }
  detail::reactor::ring_options r;
  r.buffer_size = options.buffer_size;
  r.buffers = n;
  r.enabled = options.receive_ahead;
  if (!detail::tls.current->io().configure_ring(r)) {
    throw std::logic_error(
        "quell: set_receive_ring: this executor's receive ring is set up already (set it before "
        "the first read)");
  }
}

void tcp_stream::shutdown(int how) {
  if (::shutdown(h_.use("shutdown")->fd, how) != 0) throw std::system_error(errno, std::system_category(), "shutdown");
}

address tcp_stream::local_address() const { return sock_name(h_.use("local_address")->fd, false); }
address tcp_stream::peer_address() const { return sock_name(h_.use("peer_address")->fd, true); }

tcp_listener tcp_listener::bind(const address& local, listen_options options) {
  const int fd = bound_socket(local, SOCK_STREAM, "bind", options.reuse_port);
  if (::listen(fd, options.backlog) != 0) {
    const int err = errno;
    ::close(fd);
    throw std::system_error(err, std::system_category(), "listen " + local.to_string());
  }
  tcp_listener l;
  l.h_ = detail::io_handle(fd);
  if (options.accept_queue == 0) {
    l.h_.get()->ahead_off = true;
  } else {
    l.h_.get()->ahead_bound = options.accept_queue;
  }
  return l;
}

address tcp_listener::local_address() const { return sock_name(h_.use("local_address")->fd, false); }

udp_socket udp_socket::bind(const address& local) {
  udp_socket s;
  s.h_ = detail::io_handle(bound_socket(local, SOCK_DGRAM, "bind"));
  return s;
}

address udp_socket::local_address() const { return sock_name(h_.use("local_address")->fd, false); }

}  // namespace quell
