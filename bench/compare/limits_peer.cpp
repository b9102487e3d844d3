// limits_peer.cpp: the limits of the comparison (bench/compare/WORKLOADS.md): what the workloads
// cost written directly, without a runtime.
//
// One program, one workload per call: `limits_peer <W1|W2|W3|W4|W5|W6a|W6b|W7|W8|W9>`, printing
// `RESULT <workload> <unit> <value>` lines, same timing convention as the other peers.
//
//   W1   the minimal hand-written C++20 task of bench/minimal_task.hpp (symmetric transfer, plain
//        new/delete, no cancellation), the same loop: `sum += co_await child(i)`.
//   W5   hand-written liburing: one ring (quell's reactor's setup flags), 50 loopback TCP
//        connections, a completion loop; the servers' recvs stay posted; each client sends 64 B,
//        receives the 64 B echo, compares, repeats; submit_and_wait batching. TCP_NODELAY on
//        both ends. Ported from bench/bench_io.cpp's W5_tcp_echo_raw, time-based.
//   W6b  hand-written liburing: submit a recv on an idle connected socket, then an
//        IORING_OP_ASYNC_CANCEL for it; wait for both CQEs. Ported from W6b_cancel_in_kernel_raw.
//   W12  hand-written liburing: a send and a recv of the rest of a 1 MiB chunk stay posted on the
//        two ends of a loopback pair; the kernel copies straight into the reader's buffer.
//   W2, W3, W4, W6a, W7, W8, W9: no limit is defined (`RESULT <W> n/a no-limit`).
//
// Built a second time with LIMITS_MULTISHOT (quell_compare_limits_multishot, peer "limit-ms"):
// the limits of receive-ahead, hand-written the same way.
//   W5   every socket keeps one multishot recv armed into a provided-buffer ring (the ring quell's
//        reactor registers: same buffer size and count); each CQE's bytes are copied out and the
//        buffer returned at once; sends are single-shot.
//   W6b  arm a multishot recv on the idle socket, cancel it, wait for its final CQE and the
//        cancel's: what a runtime would pay per cancelled read if it stopped the multishot for it.
//   W12  the reader keeps a multishot recv armed; each CQE's bytes are copied into its buffer.
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "../minimal_task.hpp"
#include "echo_message.hpp"

using clock_type = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Harness (as in the other C++ peers)

// QUELL_PEER_VERBOSE=1: diagnostics on stderr (as quell_peer).
static bool verbose() {
  const char* e = std::getenv("QUELL_PEER_VERBOSE");
  return e && *e && *e != '0';
}

[[noreturn]] static void fail(const char* workload, const char* what) {
  std::fprintf(stderr, "%s: check failed: %s\n", workload, what);
  std::exit(1);
}

[[noreturn]] static void die(const char* workload, const char* what, int err) {
  std::fprintf(stderr, "%s: %s: %s\n", workload, what, std::strerror(err));
  std::exit(1);
}

static double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

static void result(const char* w, const char* unit, double v) {
  std::printf("RESULT %s %s %.6g\n", w, unit, v);
  std::fflush(stdout);
}

static void no_limit(const char* w) {
  std::printf("RESULT %s n/a no-limit\n", w);
  std::fflush(stdout);
}

template <class T>
static T median(std::vector<T> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Warm-up of ~0.1 s (doubling the batch until a batch is long enough to time), then 5 batches of
// ~0.2 s with a fixed operation count chosen from the warm-up rate; the median batch's ns/op.
// `batch(n)` does n operations and checks them.
template <class Batch>
static double measure_ns_per_op(Batch batch) {
  std::uint64_t n = 64;
  double rate = 0;
  const auto warm_start = clock_type::now();
  for (;;) {
    const auto t0 = clock_type::now();
    batch(n);
    const double dt = seconds_since(t0);
    if (dt > 0) rate = static_cast<double>(n) / dt;
    if (seconds_since(warm_start) >= 0.1) break;
    if (dt < 0.02) n *= 2;
  }
  const auto per_batch = static_cast<std::uint64_t>(std::max(1.0, rate * 0.2));
  std::vector<double> ns;
  for (int b = 0; b < 5; ++b) {
    const auto t0 = clock_type::now();
    batch(per_batch);
    ns.push_back(seconds_since(t0) * 1e9 / static_cast<double>(per_batch));
  }
  return median(ns);
}

// ---------------------------------------------------------------------------------------------
// W1 await_chain: the minimal task

static minimal::task<int> child(int i) { co_return i; }

static minimal::task<std::int64_t> w1_loop(std::uint64_t n) {
  std::int64_t sum = 0;
  for (int i = 0; i < static_cast<int>(n); ++i) sum += co_await child(i);
  co_return sum;
}

static void w1_batch(std::uint64_t n) {
  const std::int64_t sum = w1_loop(n).sync_wait();
  const auto N = static_cast<std::int64_t>(n);
  if (sum != N * (N - 1) / 2) fail("W1", "sum != N(N-1)/2");
}

[[maybe_unused]] static void run_w1() { result("W1", "ns/op", measure_ns_per_op(w1_batch)); }

// ---------------------------------------------------------------------------------------------
// Rings and sockets

// The ring as quell's reactor makes it: the same setup flags, newest first.
static void init_ring(const char* w, io_uring* r, unsigned entries) {
  const unsigned attempts[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, IORING_SETUP_COOP_TASKRUN, 0};
  int err = 0;
  for (unsigned f : attempts) {
    io_uring_params p;
    std::memset(&p, 0, sizeof p);
    p.flags = f;
    err = io_uring_queue_init_params(entries, r, &p);
    if (err == 0) return;
    if (err != -EINVAL) break;
  }
  die(w, "io_uring_queue_init_params", -err);
}

// n connected loopback TCP pairs, TCP_NODELAY on both ends.
struct raw_sockets {
  int listener = -1;
  std::vector<int> client, server;
  raw_sockets(const char* w, int n) {
    listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0) die(w, "socket", errno);
    int one = 1;
    ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) die(w, "bind", errno);
    if (::listen(listener, 512) < 0) die(w, "listen", errno);
    socklen_t len = sizeof a;
    ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
    for (int i = 0; i < n; ++i) {
      const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (c < 0) die(w, "socket", errno);
      if (::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) die(w, "connect", errno);
      const int sv = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (sv < 0) die(w, "accept", errno);
      ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ::setsockopt(sv, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      client.push_back(c);
      server.push_back(sv);
    }
  }
  ~raw_sockets() {
    for (int f : client) ::close(f);
    for (int f : server) ::close(f);
    ::close(listener);
  }
  raw_sockets(const raw_sockets&) = delete;
  raw_sockets& operator=(const raw_sockets&) = delete;
};

// ---------------------------------------------------------------------------------------------
// W5 tcp_echo: one ring, a completion loop, user_data = connection << 2 | operation.

namespace w5 {
constexpr int kConns = 50;
constexpr int kMsg = 64;

enum op : std::uint64_t { client_send, client_recv, server_recv, server_send };

struct conn {
  char out[kMsg], in[kMsg], sbuf[kMsg];
  int in_got = 0;             // client: bytes of the echo received so far
  int out_sent = 0;           // client: bytes of the message sent so far
  int s_len = 0, s_sent = 0;  // server: bytes received, bytes echoed back so far
  std::uint64_t seq = 0;      // client: next message number
  bool client_idle = false;   // client: stopped after the window
};

static double run() {
  raw_sockets socks("W5", kConns);
  io_uring ring;
  init_ring("W5", &ring, 256);
  std::vector<conn> conns(kConns);
  auto sqe = [&]() {
    io_uring_sqe* e = io_uring_get_sqe(&ring);
    if (!e) {
      io_uring_submit(&ring);
      e = io_uring_get_sqe(&ring);
    }
    return e;
  };
  auto send_client = [&](int i) {
    conn& c = conns[i];
    io_uring_sqe* e = sqe();
    io_uring_prep_send(e, socks.client[i], c.out + c.out_sent, kMsg - c.out_sent, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(e, std::uint64_t(i) << 2 | client_send);
  };
  auto recv_client = [&](int i) {
    conn& c = conns[i];
    io_uring_sqe* e = sqe();
    io_uring_prep_recv(e, socks.client[i], c.in + c.in_got, kMsg - c.in_got, 0);
    io_uring_sqe_set_data64(e, std::uint64_t(i) << 2 | client_recv);
  };
  auto recv_server = [&](int i) {
    io_uring_sqe* e = sqe();
    io_uring_prep_recv(e, socks.server[i], conns[i].sbuf, kMsg, 0);
    io_uring_sqe_set_data64(e, std::uint64_t(i) << 2 | server_recv);
  };
  auto send_server = [&](int i) {
    conn& c = conns[i];
    io_uring_sqe* e = sqe();
    io_uring_prep_send(e, socks.server[i], c.sbuf + c.s_sent, c.s_len - c.s_sent, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(e, std::uint64_t(i) << 2 | server_send);
  };
  auto start_message = [&](int i) {
    conn& c = conns[i];
    echo_message::fill(c.out, i, c.seq);
    c.out_sent = 0;
    c.in_got = 0;
    send_client(i);
  };

  std::uint64_t round_trips = 0, c0 = 0, c1 = 0, enters = 0, e0 = 0, e1 = 0;
  const auto start = clock_type::now();
  auto t0 = start, t1 = start;
  bool warm = true, stop = false;
  int active = kConns;                              // clients with a round trip under way
  for (int i = 0; i < kConns; ++i) recv_server(i);  // the servers' recvs stay posted throughout
  for (int i = 0; i < kConns; ++i) start_message(i);
  while (active > 0) {
    io_uring_submit_and_wait(&ring, 1);
    ++enters;
    // The window: 0.2 s warm-up, then 2 s; one clock read per io_uring_enter.
    if (!stop) {
      const auto now = clock_type::now();
      if (warm && now - start >= std::chrono::milliseconds(200)) {
        warm = false;
        c0 = round_trips;
        e0 = enters;
        t0 = now;
      } else if (!warm && now - t0 >= std::chrono::seconds(2)) {
        stop = true;
        c1 = round_trips;
        e1 = enters;
        t1 = now;
      }
    }
    unsigned head, seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++seen;
      const int i = static_cast<int>(cqe->user_data >> 2);
      const int res = cqe->res;
      conn& c = conns[i];
      if (res <= 0) fail("W5", "a raw send or recv failed");
      switch (cqe->user_data & 3) {
        case client_send:
          c.out_sent += res;
          if (c.out_sent < kMsg) {
            send_client(i);
          } else {
            recv_client(i);
          }
          break;
        case client_recv:
          c.in_got += res;
          if (c.in_got < kMsg) {
            recv_client(i);
            break;
          }
          if (std::memcmp(c.in, c.out, kMsg) != 0) fail("W5", "echo differs from message");
          ++round_trips;
          ++c.seq;
          if (!stop) {
            start_message(i);
          } else {
            c.client_idle = true;
            --active;
          }
          break;
        case server_recv:
          c.s_len = res;
          c.s_sent = 0;
          send_server(i);
          break;
        case server_send:
          c.s_sent += res;
          if (c.s_sent < c.s_len) {
            send_server(i);
          } else {
            recv_server(i);
          }
          break;
      }
    }
    io_uring_cq_advance(&ring, seen);
  }
  io_uring_queue_exit(&ring);  // cancels the servers' recvs
  for (const conn& c : conns)
    if (!c.client_idle) fail("W5", "not every client finished");
  if (c1 <= c0) fail("W5", "no round trips in the timed window");
  if (verbose())
    std::fprintf(stderr, "W5: %.3f io_uring_enter calls per round trip\n",
                 static_cast<double>(e1 - e0) / static_cast<double>(c1 - c0));
  return static_cast<double>(c1 - c0) / std::chrono::duration<double>(t1 - t0).count();
}
}  // namespace w5

[[maybe_unused]] static void run_w5() { result("W5", "msg/s", w5::run()); }

// ---------------------------------------------------------------------------------------------
// W6b cancel_inflight_read, kernel-side: submit a recv on the idle socket, then an ASYNC_CANCEL
// for it; wait for both CQEs.

[[maybe_unused]] static void run_w6b() {
  raw_sockets socks("W6b", 1);
  const int sock = socks.server[0], peer = socks.client[0];
  io_uring ring;
  init_ring("W6b", &ring, 256);
  char buf[64];
  std::uint64_t tag = 0;
  auto batch = [&](std::uint64_t n) {
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint64_t ud = ++tag << 1;
      io_uring_sqe* e = io_uring_get_sqe(&ring);
      io_uring_prep_recv(e, sock, buf, sizeof buf, 0);
      io_uring_sqe_set_data64(e, ud);
      io_uring_submit(&ring);  // the recv reaches the kernel (no data: it is parked there)
      e = io_uring_get_sqe(&ring);
      io_uring_prep_cancel64(e, ud, 0);
      io_uring_sqe_set_data64(e, ud | 1);
      int need = 2;
      io_uring_submit_and_wait(&ring, 2);
      while (need > 0) {
        unsigned head, seen = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&ring, head, cqe) {
          ++seen;
          --need;
          if (cqe->user_data == ud && cqe->res != -ECANCELED) fail("W6b", "the recv was not cancelled");
          if (cqe->user_data == (ud | 1) && cqe->res != 0) fail("W6b", "the cancel did not find the recv");
        }
        io_uring_cq_advance(&ring, seen);
        if (need > 0) io_uring_submit_and_wait(&ring, 1);  // rarely: the two CQEs came apart
      }
    }
  };
  const double ns = measure_ns_per_op(batch);
  // The socket still works: one byte from the peer, read through the ring.
  if (::send(peer, "x", 1, MSG_NOSIGNAL) != 1) fail("W6b", "send from the peer failed");
  io_uring_sqe* e = io_uring_get_sqe(&ring);
  io_uring_prep_recv(e, sock, buf, sizeof buf, 0);
  io_uring_sqe_set_data64(e, 7);
  io_uring_submit_and_wait(&ring, 1);
  io_uring_cqe* cqe = nullptr;
  if (io_uring_wait_cqe(&ring, &cqe) != 0 || cqe->user_data != 7 || cqe->res != 1 || buf[0] != 'x')
    fail("W6b", "socket unusable after the cancelled reads");
  io_uring_cqe_seen(&ring, cqe);
  io_uring_queue_exit(&ring);
  result("W6b", "ns/op", ns);
}

// ---------------------------------------------------------------------------------------------
// W12 bulk_read: one ring; a send of the rest of the current 1 MiB chunk stays posted on one end
// of a loopback pair, and the other end receives into a 1 MiB buffer: a recv of the rest of the
// chunk (the kernel copies straight into it), or with LIMITS_MULTISHOT a multishot recv into the
// provided-buffer ring whose bytes are copied into it (what receive-ahead pays).
namespace w12 {
enum op : std::uint64_t { sending = 1, receiving = 2 };

template <class Receiver>
static double run(Receiver& recv, io_uring& ring, int to, int from) {
  std::vector<unsigned char> out(bulk_chunk::size), in(bulk_chunk::size);
  bulk_chunk::fill_pattern(out.data());
  std::uint64_t sent = 0, received = 0, c0 = 0;
  std::size_t out_off = 0, in_got = 0;
  bool stop = false, writer_done = false, warm = true;
  double mb_per_s = 0;
  const auto start = clock_type::now();
  auto t0 = start;
  auto post_send = [&] {
    io_uring_sqe* e = io_uring_get_sqe(&ring);
    io_uring_prep_send(e, to, out.data() + out_off, bulk_chunk::size - out_off, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(e, sending);
  };
  // Bytes of the chunk being read arrived: count whole chunks, check them, time the window.
  auto got = [&](std::size_t n) {
    in_got += n;
    if (in_got < bulk_chunk::size) return;
    in_got = 0;
    if (!bulk_chunk::check(in.data(), received)) fail("W12", "a chunk arrived out of order or damaged");
    ++received;
    if (stop) return;
    const auto now = clock_type::now();
    if (warm && now - start >= std::chrono::milliseconds(200)) {
      warm = false;
      t0 = now;
      c0 = received;
    } else if (!warm && now - t0 >= std::chrono::seconds(1)) {
      mb_per_s = static_cast<double>((received - c0) * bulk_chunk::size) / 1e6 /
                 std::chrono::duration<double>(now - t0).count();
      stop = true;
    }
  };
  bulk_chunk::stamp(out.data(), 0);
  post_send();
  recv.start(ring, from, in.data(), in_got);
  while (!(writer_done && received == sent)) {
    io_uring_submit_and_wait(&ring, 1);
    unsigned head, seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++seen;
      if (cqe->user_data == sending) {
        if (cqe->res <= 0) fail("W12", "a raw send failed");
        out_off += static_cast<std::size_t>(cqe->res);
        if (out_off == bulk_chunk::size) {
          out_off = 0;
          ++sent;
          if (stop) {
            writer_done = true;
            continue;
          }
          bulk_chunk::stamp(out.data(), sent);
        }
        post_send();
      } else {
        recv.completed(ring, cqe, from, in.data(), in_got, got);
      }
    }
    io_uring_cq_advance(&ring, seen);
    recv.publish();
  }
  return mb_per_s;
}

// One recv of the rest of the chunk, straight into it.
struct one_shot {
  void start(io_uring& ring, int fd, unsigned char* in, std::size_t in_got) {
    io_uring_sqe* e = io_uring_get_sqe(&ring);
    io_uring_prep_recv(e, fd, in + in_got, bulk_chunk::size - in_got, 0);
    io_uring_sqe_set_data64(e, receiving);
  }
  template <class Got>
  void completed(io_uring& ring, io_uring_cqe* cqe, int fd, unsigned char* in, std::size_t& in_got, Got& got) {
    if (cqe->res <= 0) fail("W12", "a raw recv failed");
    got(static_cast<std::size_t>(cqe->res));
    start(ring, fd, in, in_got);
  }
  void publish() {}
};
}  // namespace w12

[[maybe_unused]] static void run_w12() {
  raw_sockets socks("W12", 1);
  io_uring ring;
  init_ring("W12", &ring, 64);
  w12::one_shot recv;
  const double mb_per_s = w12::run(recv, ring, socks.client[0], socks.server[0]);
  io_uring_queue_exit(&ring);
  if (mb_per_s <= 0) fail("W12", "no chunk in the timed window");
  result("W12", "MB/s", mb_per_s);
}

// ---------------------------------------------------------------------------------------------
// Receive-ahead limits (LIMITS_MULTISHOT): multishot recv into a provided-buffer ring.

#ifdef LIMITS_MULTISHOT
#include <sys/mman.h>

#include "quell/detail/receive_ahead.hpp"

namespace ms {
constexpr unsigned kBufSize = quell::detail::default_receive_buffer_size;
constexpr unsigned kBufs = quell::detail::default_receive_buffers;

struct buffer_ring {
  io_uring_buf_ring* br = nullptr;
  char* slab = nullptr;
  std::size_t ring_bytes = 0;
  int returned = 0;
  buffer_ring(const char* w, io_uring* ring) {
    ring_bytes = (kBufs * sizeof(io_uring_buf) + 4095) & ~std::size_t{4095};
    void* r = ::mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void* b =
        ::mmap(nullptr, std::size_t{kBufSize} * kBufs, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED || b == MAP_FAILED) die(w, "mmap", errno);
    br = static_cast<io_uring_buf_ring*>(r);
    slab = static_cast<char*>(b);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<std::uint64_t>(br);
    reg.ring_entries = kBufs;
    reg.bgid = 0;
    if (int rc = io_uring_register_buf_ring(ring, &reg, 0); rc != 0) die(w, "io_uring_register_buf_ring", -rc);
    io_uring_buf_ring_init(br);
    for (unsigned i = 0; i < kBufs; ++i)
      io_uring_buf_ring_add(br, slab + std::size_t{i} * kBufSize, kBufSize, static_cast<unsigned short>(i),
                            io_uring_buf_ring_mask(kBufs), static_cast<int>(i));
    io_uring_buf_ring_advance(br, static_cast<int>(kBufs));
  }
  const char* get(unsigned bid) const { return slab + std::size_t{bid} * kBufSize; }
  void give(unsigned bid) {
    io_uring_buf_ring_add(br, slab + std::size_t{bid} * kBufSize, kBufSize, static_cast<unsigned short>(bid),
                          io_uring_buf_ring_mask(kBufs), returned++);
  }
  void publish() {
    if (returned) io_uring_buf_ring_advance(br, returned);
    returned = 0;
  }
  ~buffer_ring() {
    ::munmap(br, ring_bytes);
    ::munmap(slab, std::size_t{kBufSize} * kBufs);
  }
};

void prep_multishot(io_uring_sqe* e, int fd, std::uint64_t ud) {
  io_uring_prep_recv_multishot(e, fd, nullptr, 0, 0);
  e->flags |= IOSQE_BUFFER_SELECT;
  e->buf_group = 0;
  io_uring_sqe_set_data64(e, ud);
}

// W5 with receive-ahead: user_data = connection << 2 | operation.
namespace w5 {
constexpr int kConns = 50;
constexpr int kMsg = 64;
enum op : std::uint64_t { client_send, client_recv, server_recv, server_send };

struct conn {
  char out[kMsg], in[kMsg], sbuf[kMsg];
  int in_got = 0, out_sent = 0, s_len = 0, s_sent = 0;
  std::uint64_t seq = 0;
  bool client_idle = false;
};

static double run() {
  raw_sockets socks("W5", kConns);
  io_uring ring;
  init_ring("W5", &ring, 256);
  buffer_ring bufs("W5", &ring);
  std::vector<conn> conns(kConns);
  auto sqe = [&]() {
    io_uring_sqe* e = io_uring_get_sqe(&ring);
    if (!e) {
      io_uring_submit(&ring);
      e = io_uring_get_sqe(&ring);
    }
    return e;
  };
  auto send_client = [&](int i) {
    conn& c = conns[i];
    io_uring_sqe* e = sqe();
    io_uring_prep_send(e, socks.client[i], c.out + c.out_sent, kMsg - c.out_sent, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(e, std::uint64_t(i) << 2 | client_send);
  };
  auto send_server = [&](int i) {
    conn& c = conns[i];
    io_uring_sqe* e = sqe();
    io_uring_prep_send(e, socks.server[i], c.sbuf + c.s_sent, c.s_len - c.s_sent, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(e, std::uint64_t(i) << 2 | server_send);
  };
  auto start_message = [&](int i) {
    conn& c = conns[i];
    echo_message::fill(c.out, i, c.seq);
    c.out_sent = 0;
    c.in_got = 0;
    send_client(i);
  };
  std::uint64_t round_trips = 0, c0 = 0, c1 = 0;
  const auto start = clock_type::now();
  auto t0 = start, t1 = start;
  bool warm = true, stop = false;
  int active = kConns;
  for (int i = 0; i < kConns; ++i) {
    prep_multishot(sqe(), socks.server[i], std::uint64_t(i) << 2 | server_recv);
    prep_multishot(sqe(), socks.client[i], std::uint64_t(i) << 2 | client_recv);
  }
  for (int i = 0; i < kConns; ++i) start_message(i);
  while (active > 0) {
    io_uring_submit_and_wait(&ring, 1);
    if (!stop) {
      const auto now = clock_type::now();
      if (warm && now - start >= std::chrono::milliseconds(200)) {
        warm = false;
        c0 = round_trips;
        t0 = now;
      } else if (!warm && now - t0 >= std::chrono::seconds(2)) {
        stop = true;
        c1 = round_trips;
        t1 = now;
      }
    }
    unsigned head, seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++seen;
      const int i = static_cast<int>(cqe->user_data >> 2);
      const int res = cqe->res;
      const unsigned flags = cqe->flags;
      conn& c = conns[i];
      const std::uint64_t kind = cqe->user_data & 3;
      if (kind == client_recv || kind == server_recv) {
        if (res <= 0) fail("W5", "a multishot recv ended");
        const unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        const char* data = bufs.get(bid);
        if (kind == client_recv) {
          std::memcpy(c.in + c.in_got, data, static_cast<std::size_t>(res));
          c.in_got += res;
        } else {
          std::memcpy(c.sbuf, data, static_cast<std::size_t>(res));
          c.s_len = res;
          c.s_sent = 0;
        }
        bufs.give(bid);
        if (!(flags & IORING_CQE_F_MORE))
          prep_multishot(sqe(), kind == client_recv ? socks.client[i] : socks.server[i], cqe->user_data);
        if (kind == server_recv) {
          send_server(i);
        } else if (c.in_got == kMsg) {
          if (std::memcmp(c.in, c.out, kMsg) != 0) fail("W5", "echo differs from message");
          ++round_trips;
          ++c.seq;
          if (!stop) {
            start_message(i);
          } else {
            c.client_idle = true;
            --active;
          }
        }
        continue;
      }
      if (res <= 0) fail("W5", "a raw send failed");
      if (kind == client_send) {
        c.out_sent += res;
        if (c.out_sent < kMsg) send_client(i);
      } else {
        c.s_sent += res;
        if (c.s_sent < c.s_len) send_server(i);
      }
    }
    io_uring_cq_advance(&ring, seen);
    bufs.publish();
  }
  io_uring_queue_exit(&ring);
  if (c1 <= c0) fail("W5", "no round trips in the timed window");
  return static_cast<double>(c1 - c0) / std::chrono::duration<double>(t1 - t0).count();
}
}  // namespace w5

static void run_w6b() {
  raw_sockets socks("W6b", 1);
  const int sock = socks.server[0], peer = socks.client[0];
  io_uring ring;
  init_ring("W6b", &ring, 256);
  buffer_ring bufs("W6b", &ring);
  std::uint64_t tag = 0;
  auto batch = [&](std::uint64_t n) {
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint64_t ud = ++tag << 1;
      prep_multishot(io_uring_get_sqe(&ring), sock, ud);
      io_uring_submit(&ring);  // armed in the kernel (no data: it waits there)
      io_uring_sqe* e = io_uring_get_sqe(&ring);
      io_uring_prep_cancel64(e, ud, 0);
      io_uring_sqe_set_data64(e, ud | 1);
      int need = 2;
      io_uring_submit_and_wait(&ring, 2);
      while (need > 0) {
        unsigned head, seen = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&ring, head, cqe) {
          ++seen;
          if (cqe->user_data == ud && (cqe->flags & IORING_CQE_F_MORE)) continue;  // (never: no data)
          --need;
          if (cqe->user_data == ud && cqe->res != -ECANCELED) fail("W6b", "the multishot was not cancelled");
        }
        io_uring_cq_advance(&ring, seen);
        if (need > 0) io_uring_submit_and_wait(&ring, 1);
      }
    }
  };
  const double ns = measure_ns_per_op(batch);
  if (::send(peer, "x", 1, MSG_NOSIGNAL) != 1) fail("W6b", "send from the peer failed");
  char b = 0;
  if (::recv(sock, &b, 1, 0) != 1 || b != 'x') fail("W6b", "socket unusable after the cancelled receives");
  io_uring_queue_exit(&ring);
  result("W6b", "ns/op", ns);
}

// W12 with receive-ahead: each CQE's bytes are copied into the chunk (spanning two chunks if the
// kernel's segment does), the buffer returned at once.
struct multishot_receiver {
  buffer_ring& bufs;
  void start(io_uring& ring, int fd, unsigned char*, std::size_t) {
    prep_multishot(io_uring_get_sqe(&ring), fd, w12::receiving);
  }
  template <class Got>
  void completed(io_uring& ring, io_uring_cqe* cqe, int fd, unsigned char* in, std::size_t& in_got, Got& got) {
    if (cqe->res <= 0) fail("W12", "a multishot recv ended");
    const unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    const char* data = bufs.get(bid);
    auto left = static_cast<std::size_t>(cqe->res);
    while (left > 0) {
      const std::size_t n = std::min(left, bulk_chunk::size - in_got);
      std::memcpy(in + in_got, data, n);
      data += n;
      left -= n;
      got(n);
    }
    bufs.give(bid);
    if (!(cqe->flags & IORING_CQE_F_MORE)) start(ring, fd, in, in_got);
  }
  void publish() { bufs.publish(); }
};

static void run_w12() {
  raw_sockets socks("W12", 1);
  io_uring ring;
  init_ring("W12", &ring, 64);
  buffer_ring bufs("W12", &ring);
  multishot_receiver recv{bufs};
  const double mb_per_s = w12::run(recv, ring, socks.client[0], socks.server[0]);
  io_uring_queue_exit(&ring);
  if (mb_per_s <= 0) fail("W12", "no chunk in the timed window");
  result("W12", "MB/s", mb_per_s);
}
}  // namespace ms
#endif

// ---------------------------------------------------------------------------------------------

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <W1|W2|W3|W4|W5|W5m|W6a|W6b|W7|W8|W9|W10|W11>\n", argv[0]);
    return 2;
  }
  const std::string_view w = argv[1];
#ifdef LIMITS_MULTISHOT
  if (w == "W5")
    result("W5", "msg/s", ms::w5::run());
  else if (w == "W6b")
    ms::run_w6b();
  else if (w == "W12")
    ms::run_w12();
  else if (w == "W1")
    no_limit(argv[1]);
#else
  if (w == "W1")
    run_w1();
  else if (w == "W5")
    run_w5();
  else if (w == "W6b")
    run_w6b();
  else if (w == "W12")
    run_w12();
#endif
  else if (w == "W2" || w == "W3" || w == "W4" || w == "W6a" || w == "W7" || w == "W8" || w == "W9" || w == "W5m" ||
           w == "W10" || w == "W11")
    no_limit(argv[1]);
  else {
    std::fprintf(stderr, "unknown workload %s\n", argv[1]);
    return 2;
  }
  return 0;
}
