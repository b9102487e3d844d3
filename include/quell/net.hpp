// Sockets on io_uring: tcp_listener, tcp_stream, udp_socket (IPv4, IPv6, Unix).
//
//   auto listener = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
//   quell::tcp_stream conn = co_await listener.accept();
//   char buf[4096];
//   std::size_t n = co_await conn.read_some(buf);      // 0: the peer closed its side
//   co_await conn.write_all(std::string_view(buf, n));
//   co_await conn.close();
//
// Receive-ahead (streams and listeners, on by default). A stream keeps one multishot receive
// armed in the kernel from its first read that has to wait until it closes; the kernel fills
// buffers of a ring its executor owns (set_receive_ring) and each CQE's bytes are copied at once,
// to the read that waits (one copy, as a plain recv makes) or to the stream's queue, and the
// buffer goes back to the ring. So:
//   - Who owns the bytes: the stream, from the moment its executor reaps them. read_some and
//     read_exact take from the queue, or wait *in user space* for the next bytes.
//   - When the kernel is touched: to arm the receive (once), to re-arm it (below), to close.
//     Cancelling a read never is: it is taken off the stream's list of waiting reads, ends in
//     the same turn, and whatever arrives afterwards waits in the queue for the next read.
//   - The bound: the queue holds at most set_receive_bound bytes (default 64 KiB). The receive is
//     armed for at most the room left (Linux 6.17's length cap; older kernels: cancelled once the
//     queue is full, so it may hold one kernel wake-up's worth more); it is armed again once reads
//     take the queue below half. Meanwhile the kernel's socket buffer fills and TCP tells the
//     peer to wait, as it does for a socket nobody reads. Bytes handed straight to a waiting read
//     do not count: a read that wants more than the room (a 1 MiB read_exact) is armed for the
//     room plus what it wants, and if it is cancelled while it waits the receive is cancelled
//     with it and armed again within the bound.
//   - The cost: two copies (the kernel's into the ring, quell's out of it) where a plain recv
//     makes one. It shows only in bulk transfer (large reads); a socket that carries mostly
//     that can call set_receive_ahead(false) before its first read.
//   - A ring that runs dry (ENOBUFS) stops the receive until the executor's next step, when the
//     buffers handled meanwhile are back: it never fails a read.
//   - The end of the stream and errors (ECONNRESET) come after every byte received before them;
//     an error is reported once, then the stream reads as ended.
// A listener keeps one multishot accept armed the same way; connections queue (listen_options::
// accept_queue, default 64; above it the kernel's backlog holds them) until accept() takes them.
// Closing a listener closes the connections it queued. Writes, connect, UDP and files submit one
// operation per call. Receive-ahead falls back to one receive per read, with one line on stderr,
// on kernels without multishot receive (before 6.1) or provided-buffer rings, and per socket
// (tcp_stream::set_receive_ahead(false), listen_options::accept_queue = 0).
//
// Every operation that goes to the kernel is an io_uring leaf with two-phase cancellation
// (quell/detail/reactor.hpp): cancelled before it reached the kernel, it ends at once without a
// system call; cancelled in the kernel, it ends when the kernel has let go of it (its buffer is
// untouched from then on).
//
// Cancel-safety: "cancelled" means "it did not happen", so nothing received is dropped. A cancel
// can meet an operation in three places: before it reached the kernel, in the kernel, or after
// the kernel finished it but before its waiter resumed (the completion window: the result was
// reaped in the same step as the work that now cancels it). Each operation's rule, for the
// second and third (the first simply never happened):
//   - read_some, read_exact: whatever they received (bytes, the end of the stream) stays in the
//     stream and is returned first by the next read, and the read ends cancelled; read_exact
//     keeps all it received, even a complete buffer. With receive-ahead the second place does not
//     exist (a waiting read is not in the kernel), and the third is bytes handed to a waiting read
//     that is cancelled before it resumes: they go back to the front of the queue.
//   - accept: a connection it received anyway is returned by the next accept; it ends cancelled.
//   - recv_from: a datagram it received anyway is returned by the next recv_from; it ends
//     cancelled.
//   - write_all: a cancelled write stores how many bytes went out in `*written` (if given): the
//     prefix of the data the peer may have received. One that finished anyway completes normally
//     (completion wins: what went out cannot be taken back).
//   - connect: one that connected anyway delivers the stream (completion wins); a waiter that
//     discards it (a race's loser) closes it.
//   - send_to: a datagram that went out anyway is reported sent.
//   - every one of them: an operation that failed anyway (a real error such as ECONNRESET or
//     ECONNREFUSED, not the cancel's own ECANCELED) delivers that error (completion wins).
// A read, accept or recv_from that completed at once (from what the stream or listener kept) or
// completed normally, but whose result the waiting combinator discards (a race's loser), puts it
// back in front of the queue as well (the leaf protocol's await_give_back), so a race of such
// operations drops nothing either.
//
// close() cancels the socket's pending operations (IORING_ASYNC_CANCEL_FD), waits until the kernel
// has finished each of them, then releases the descriptor, so a reused fd number never sees an
// old completion. Those operations end with std::system_error(ECANCELED) in their waiters. close()
// itself is not cancellable (it finishes as soon as the kernel confirms). Destroying a socket
// without close() closes it the same way in the background (a socket with receive-ahead armed is
// shut down at once, so its peer sees the end then, and its descriptor is released at the
// executor's next step); operations started afterwards, or on a closed socket, throw
// std::system_error(EBADF). An executor that ends cancels the receive-ahead of sockets that outlive
// it (what they received stays with them; a later executor arms them again).
//
// Errors are std::system_error carrying the errno and what was attempted ("connect 127.0.0.1:1:
// Connection refused"); read_exact throws quell::end_of_stream if the peer closes first.
//
// Connecting to a host name: tcp_stream::connect(host, port) resolves it (quell/resolve.hpp)
// and races the addresses with Happy Eyeballs; connect_any(addresses) does the second part alone.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "quell/detail/io_leaf.hpp"
#include "quell/task.hpp"

struct msghdr;
struct iovec;

namespace quell {

class tcp_stream;
struct connect_options;  // quell/resolve.hpp

// A socket address: IPv4, IPv6 or a Unix-domain path.
class address {
 public:
  address() noexcept;
  // A numeric IPv4 or IPv6 literal ("127.0.0.1", "::1"); throws std::invalid_argument otherwise.
  static address parse(std::string_view host, std::uint16_t port);
  static address unix_path(std::string_view path);
  static address from(const sockaddr* sa, socklen_t len);

  int family() const noexcept;
  std::uint16_t port() const noexcept;  // 0 for Unix paths
  std::string to_string() const;        // "127.0.0.1:80", "[::1]:80", "unix:/tmp/s"
  const sockaddr* data() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
  sockaddr* data() noexcept { return reinterpret_cast<sockaddr*>(&storage_); }
  socklen_t size() const noexcept { return len_; }
  socklen_t* size_ptr() noexcept { return &len_; }

 private:
  sockaddr_storage storage_;
  socklen_t len_;
};

// What send_to and recv_from yield: the payload's size, and the destination or the sender.
struct datagram {
  std::size_t size = 0;
  address peer;
};

namespace detail {

// Holds one reference to an io_object (a descriptor shared with the operations in flight on it).
class io_handle {
 public:
  io_handle() noexcept = default;
  explicit io_handle(int fd);  // takes ownership of fd
  io_handle(io_handle&& o) noexcept : obj_(std::exchange(o.obj_, nullptr)) {}
  io_handle& operator=(io_handle&& o) noexcept;
  ~io_handle() { reset(); }

  io_object* get() const noexcept { return obj_; }
  bool is_open() const noexcept { return obj_ && !obj_->closing; }
  int fd() const noexcept { return obj_ ? obj_->fd : -1; }
  // The object for a new operation; throws std::system_error(EBADF) if closed.
  io_object* use(const char* what) const;
  // Drops this reference; if operations are pending, cancels them and lets the last one close.
  void reset() noexcept;
  // Gives up the descriptor without closing it; see tcp_stream::release.
  int release(const char* what);

 private:
  io_object* obj_ = nullptr;
};

struct read_some_op : io_leaf<read_some_op> {
  read_some_op(io_object* o, std::span<char> b) : io_leaf(o), buf(b) {}
  bool await_ready();
  bool parks();
  bool feed_me() noexcept;
  void prep(io_uring_sqe* sqe) noexcept;
  bool on_cqe(int) noexcept { return true; }
  bool on_cancel() noexcept;
  bool give_back() noexcept;
  std::size_t await_resume();

  std::span<char> buf;
  std::size_t from_stash = 0;
  bool ready = false;     // served by await_ready (res: an error it found, if negative)
  bool took_eof = false;  // ... with the end of stream a cancelled one-shot read kept
  bool fed = false;       // served by receive-ahead: res is what it took (bytes, 0 or an error)
};

struct read_exact_op : io_leaf<read_exact_op> {
  read_exact_op(io_object* o, std::span<char> b) : io_leaf(o), buf(b) {}
  bool await_ready();
  bool parks();
  bool feed_me() noexcept;
  void prep(io_uring_sqe* sqe) noexcept;
  bool on_cqe(int res) noexcept;
  bool on_cancel() noexcept;
  bool give_back() noexcept;
  void await_resume();

  std::span<char> buf;
  std::size_t got = 0;
  bool eof = false;
  bool ahead = false;  // waits for receive-ahead: what it took came from the front of the queue
};

struct write_all_op : io_leaf<write_all_op> {
  write_all_op(io_object* o, std::string_view d, std::size_t* w) : io_leaf(o), data(d), written(w) {}
  bool await_ready();
  void prep(io_uring_sqe* sqe) noexcept;
  bool on_cqe(int res) noexcept;
  bool on_cancel() noexcept;
  void await_resume();

  std::string_view data;
  std::size_t* written;
  std::size_t done = 0;
};

struct accept_op : io_leaf<accept_op> {
  explicit accept_op(io_object* o) : io_leaf(o) {}
  bool await_ready();
  bool parks();
  bool feed_me() noexcept;
  void prep(io_uring_sqe* sqe) noexcept;
  bool on_cqe(int) noexcept { return true; }
  bool on_cancel() noexcept;
  bool give_back() noexcept;
  tcp_stream await_resume();

  int stashed_fd = -1;
  bool ready = false;  // an error await_ready found (in res)
  bool fed = false;    // served by receive-ahead (res: the descriptor or an error)
};

struct connect_op : io_leaf<connect_op> {
  static constexpr bool no_transient_retry = true;  // a second connect on the socket would fail
  explicit connect_op(const address& a) : io_leaf(nullptr), peer(a) {}
  connect_op(connect_op&& o) noexcept : io_leaf(std::move(o)), peer(o.peer) {}
  void await_suspend(std::coroutine_handle<> h);
  void prep(io_uring_sqe* sqe) noexcept;
  bool on_cqe(int) noexcept { return true; }
  bool on_cancel() noexcept;
  tcp_stream await_resume();

  address peer;
  io_handle sock;
};

struct close_op {
  io_handle* h;
  bool await_ready() noexcept;
  void await_suspend(std::coroutine_handle<> waiter) noexcept;
  void await_resume() noexcept;
};

struct datagram_op : io_leaf<datagram_op> {
  datagram_op(io_object* o, bool is_send, std::span<char> b, const address* to);
  datagram_op(datagram_op&& o) noexcept;
  bool await_ready();
  void prep(io_uring_sqe* sqe) noexcept;
  bool on_cqe(int) noexcept { return true; }
  bool on_cancel() noexcept;
  bool give_back() noexcept;
  datagram await_resume();
  std::string record() const;

  bool send;
  std::span<char> buf;
  address peer;
  alignas(8) unsigned char hdr[80];  // struct msghdr + struct iovec, kept in the frame
  std::size_t from_stash = 0;
  bool stashed = false;
  std::string taken;  // the stash's record, when served from it (given back whole)
};

}  // namespace detail

class tcp_stream {
 public:
  tcp_stream() noexcept = default;
  explicit tcp_stream(int fd) : h_(fd) {}  // adopts a connected socket

  // Connects to `peer` (awaitable yielding a tcp_stream).
  static detail::connect_op connect(const address& peer) { return detail::connect_op(peer); }
  // Resolves `host` (quell/resolve.hpp) and connects to one of its addresses with Happy Eyeballs
  // (RFC 8305): attempts staggered by 250 ms, the first to connect wins, the others are cancelled
  // and awaited. The contract, errors and cancellation: quell/resolve.hpp.
  static task<tcp_stream> connect(std::string_view host, std::uint16_t port);
  static task<tcp_stream> connect(std::string_view host, std::uint16_t port, const connect_options& options);
  // Happy Eyeballs over the given addresses (no name to resolve).
  static task<tcp_stream> connect_any(std::span<const address> peers);
  static task<tcp_stream> connect_any(std::span<const address> peers, const connect_options& options);

  // Reads what is available (at least one byte, unless the peer closed: then 0).
  detail::read_some_op read_some(std::span<char> buf) { return {h_.use("read"), buf}; }
  // Reads exactly buf.size() bytes; throws end_of_stream if the peer closes first.
  detail::read_exact_op read_exact(std::span<char> buf) { return {h_.use("read"), buf}; }
  // Writes every byte of `data`. `*written` follows its progress (see the cancel-safety notes).
  detail::write_all_op write_all(std::string_view data, std::size_t* written = nullptr) {
    return {h_.use("write"), data, written};
  }
  // shutdown(2): SHUT_WR tells the peer no more data will come. Throws std::system_error.
  void shutdown(int how = SHUT_WR);
  detail::close_op close() noexcept { return {&h_}; }

  bool is_open() const noexcept { return h_.is_open(); }
  int native_handle() const noexcept { return h_.fd(); }
  // Gives the connected descriptor up without closing it, to be adopted elsewhere (another core:
  // `tcp_stream(fd)` there); this stream is closed afterwards. Only while no operation is in
  // flight on it and nothing received is kept for the next read (those would be lost): otherwise
  // std::logic_error, and the stream stays as it was.
  int release() { return h_.release("release"); }
  address local_address() const;
  address peer_address() const;
  // Bytes received and not read yet (receive-ahead's queue, and what cancelled reads kept).
  std::size_t buffered() const noexcept { return h_.get() ? h_.get()->stashed() : 0; }

  // Receive-ahead (on by default): false makes every read one receive of its own, from the next
  // read on. Turned off while armed, the multishot is cancelled and reads wait for its end (what
  // it received is read first). Throws std::system_error(EBADF) on a closed stream.
  void set_receive_ahead(bool on);
  // The most bytes receive-ahead keeps for this stream before it stops receiving (default
  // 64 KiB); it starts again once reads take the queue below half. From the next arm on.
  void set_receive_bound(std::size_t bytes);

 private:
  detail::io_handle h_;
};

// The receive ring of an executor: the provided buffers its sockets' multishot receives fill.
struct receive_ring_options {
  std::uint32_t buffer_size = detail::default_receive_buffer_size;  // bytes per buffer
  std::uint32_t buffers = detail::default_receive_buffers;          // a power of two, at most 32768
  bool receive_ahead = true;  // false: every socket of this executor reads one receive per read
};
// Sets the receive ring of the executor running on the calling thread. Only before the first
// read of a socket there (std::logic_error afterwards, or outside an executor);
// std::invalid_argument for a size of 0 or a count that is not a power of two up to 32768.
void set_receive_ring(const receive_ring_options& options);

struct listen_options {
  int backlog = 512;
  // SO_REUSEPORT: several listeners (one per core) bound to the same address and port, each
  // given its share of the new connections by the kernel (a hash of the connection's addresses
  // and ports, so one client's connections do not all land on one core, and no connection moves
  // between them). Every listener on the port must set it, and belong to the same user. Bind the
  // first one (port 0 picks a free port), then the others to its local_address(). IPv4 and IPv6
  // only (std::invalid_argument for a Unix path).
  bool reuse_port = false;
  // Connections the listener's multishot accept takes ahead of accept() (receive-ahead); above
  // it the accept stops and the kernel's backlog holds the rest. 0: one accept per call.
  std::size_t accept_queue = detail::default_accept_bound;
};

class tcp_listener {
 public:
  tcp_listener() noexcept = default;
  // socket + SO_REUSEADDR (+ SO_REUSEPORT) + bind + listen, synchronously; throws
  // std::system_error ("bind 127.0.0.1:8080: Address already in use"). Port 0 picks a free port.
  static tcp_listener bind(const address& local, listen_options options = {});
  static tcp_listener bind(const address& local, int backlog) { return bind(local, listen_options{backlog}); }

  detail::accept_op accept() { return detail::accept_op(h_.use("accept")); }
  detail::close_op close() noexcept { return {&h_}; }

  bool is_open() const noexcept { return h_.is_open(); }
  int native_handle() const noexcept { return h_.fd(); }
  address local_address() const;

 private:
  detail::io_handle h_;
};

class udp_socket {
 public:
  udp_socket() noexcept = default;
  // Binds a datagram socket (port 0: any free port); throws std::system_error.
  static udp_socket bind(const address& local);

  detail::datagram_op send_to(std::string_view data, const address& to) {
    return {h_.use("send_to"), true, std::span<char>(const_cast<char*>(data.data()), data.size()), &to};
  }
  // Yields the datagram's size (truncated to buf.size()) and its sender.
  detail::datagram_op recv_from(std::span<char> buf) { return {h_.use("recv_from"), false, buf, nullptr}; }
  detail::close_op close() noexcept { return {&h_}; }

  bool is_open() const noexcept { return h_.is_open(); }
  address local_address() const;

 private:
  detail::io_handle h_;
};

}  // namespace quell
