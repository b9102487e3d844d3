// quell_peer.cpp: the quell peer of the comparison (bench/compare/WORKLOADS.md).
//
// One program, one workload per call: `quell_peer <W1|...|W11>`, printing
// `RESULT <workload> <unit> <value>` lines. quell's public API, written the way its docs show it,
// on one executor (quell::block_on) per call; W3 runs each repetition on a fresh executor.
//
// How each workload maps to quell:
//   W1  await_chain          `sum += co_await child(i)`, child a quell::task<int> that co_returns i.
//   W2  race_pending_loser   `co_await race(ready(1), on_cancel(pending<int>(), hook))`, the hook a
//                            synchronous lambda counting its runs.
//   W3  spawn_cancel         a task_group; 100,000 spawned tasks, each `co_await sleep_for(1h)`;
//                            one yield() lets the executor turn once; then cancel_and_join().
//   W4  timeout_fast_op      `co_await timeout(1s, ready(i))`.
//   W5  tcp_echo             with_scope: an accepting child spawns 50 echo servers (read_some,
//                            write_all), 50 client children (write_all 64 B, read_exact 64 B,
//                            compare); the body times the window. TCP_NODELAY both ends (quell's
//                            connect sets it on the client; the server sets it after accept).
//   W5m tcp_echo, every core W5 on a runtime of one core, then W5 on each core of a runtime of all
//                            cores at once (on_each_core): every core its own listener and pairs.
//   W6a cancel, same turn    `co_await race(ready(1), sock.read_some(buf))`.
//   W6b cancel, kernel-side  `co_await race(sock.read_some(buf), yield())`: yield() completes in
//                            the executor's next turn, after the read was submitted (tokio's
//                            branch is yield_now() itself; a task around yield() would add a
//                            coroutine frame no other peer pays for).
//   W12 bulk_read            a writer task write_all()s 1 MiB chunks, a reader task read_exact()s
//                            them into a 1 MiB buffer on the other end of a loopback pair; twice:
//                            receive-ahead (MB/s: the copy out of the ring) and one receive per
//                            read (MB/s@one-shot: the kernel copies into the buffer).
//   W8  any_of_pending_loser W2 with `any_of` instead of race: every branch's value is kept.
//   W9  task_set_next        a task_set<int64_t>; 100,000 members, each `co_await yield()` then
//                            returning its index; close(), then next() until nullopt, summing.
//   W7  cancel_latency       a root task_group of 100 subtree tasks, each `with_scope` spawning 100
//                            leaf tasks: even leaves `on_cancel(end.read_some(buf), hook)` on one end
//                            of 2,500 socketpairs (5,000 ends, each read by one leaf; a connected
//                            socket is adopted with `tcp_stream(fd)`), odd leaves
//                            `on_cancel(sleep_for(1h), hook)`. Cancelling the root is
//                            `root.cancel_and_join()`.
//
// Heap accounting (W3): operator new/delete are replaced and count live bytes with
// malloc_usable_size, as in asio_peer.cpp. quell's coroutine frames come from a per-thread
// recycling pool (quell/detail/frame_pool.hpp) whose misses go to ::operator new, so they are
// counted; but frames the pool caches stay live in the allocator's view while no task uses them.
// bytes/task therefore subtracts the bytes sitting in the pool's free lists (walked, each block's
// malloc_usable_size) at both measuring points: it is the memory the tasks really hold.
//
// Self-checks and accounting also read three quell::detail counters (not used by the workloads
// themselves): the reactor's io_uring_enter count (W6a: no system call; W6b: the read reached the
// kernel; W7: the reads were submitted), its in-flight count, and the frame pool's free lists.
//
// Set QUELL_PEER_VERBOSE=1 for diagnostics on stderr (allocations per operation, W3's raw delta,
// W5's io_uring_enter calls per round trip).

#include <malloc.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string_view>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "echo_message.hpp"
#include "quell/quell.hpp"

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------
// Counting global allocator (the same as asio_peer.cpp's, plus a count of allocations for the
// verbose diagnostics). Single-threaded: relaxed load + store, no locked instructions.

static std::atomic<std::size_t> g_live_bytes{0};
static std::atomic<std::uint64_t> g_allocs{0};

static inline void count_alloc(void* p) noexcept {
  g_live_bytes.store(g_live_bytes.load(std::memory_order_relaxed) + malloc_usable_size(p),
                     std::memory_order_relaxed);
  g_allocs.store(g_allocs.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}
static inline void count_free(void* p) noexcept {
  if (p)
    g_live_bytes.store(g_live_bytes.load(std::memory_order_relaxed) - malloc_usable_size(p),
                       std::memory_order_relaxed);
}
static void* counted_malloc(std::size_t n) {
  void* p = std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  count_alloc(p);
  return p;
}
static void* counted_aligned(std::size_t n, std::align_val_t a) {
  void* p = nullptr;
  std::size_t al = std::max(static_cast<std::size_t>(a), sizeof(void*));
  if (posix_memalign(&p, al, n ? n : 1) != 0) throw std::bad_alloc();
  count_alloc(p);
  return p;
}
static void counted_free(void* p) noexcept {
  count_free(p);
  std::free(p);
}

void* operator new(std::size_t n) { return counted_malloc(n); }
void* operator new[](std::size_t n) { return counted_malloc(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try { return counted_malloc(n); } catch (...) { return nullptr; }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try { return counted_malloc(n); } catch (...) { return nullptr; }
}
void* operator new(std::size_t n, std::align_val_t a) { return counted_aligned(n, a); }
void* operator new[](std::size_t n, std::align_val_t a) { return counted_aligned(n, a); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { counted_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_free(p); }

static std::size_t live_bytes() { return g_live_bytes.load(std::memory_order_relaxed); }
static std::uint64_t allocs() { return g_allocs.load(std::memory_order_relaxed); }

// Bytes held by this thread's coroutine frame pool: allocated (so counted as live) but free.
static std::size_t frame_pool_cached_bytes() {
  std::size_t n = 0;
#if QUELL_FRAME_POOL
  for (auto* f : quell::detail::tls_frames.heads)
    for (; f; f = f->next) n += malloc_usable_size(f);
#endif
  return n;
}

// ---------------------------------------------------------------------------------------------
// Harness

static bool verbose() {
  static const bool v = [] {
    const char* e = std::getenv("QUELL_PEER_VERBOSE");
    return e && *e && *e != '0';
  }();
  return v;
}

[[noreturn]] static void fail(const char* workload, const char* what) {
  std::fprintf(stderr, "%s: check failed: %s\n", workload, what);
  std::exit(1);
}

static double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

static void result(const char* w, const char* unit, double v) {
  std::printf("RESULT %s %s %.6g\n", w, unit, v);
  std::fflush(stdout);
}

template <class T>
static T median(std::vector<T> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Warm-up of ~0.1 s (doubling the batch until a batch is long enough to time), then 5 batches of
// ~0.2 s with a fixed operation count chosen from the warm-up rate; the median batch's ns/op.
// `batch(n)` returns a quell::task<> doing n operations and checking them.
template <class Batch>
static quell::task<double> measure_ns_per_op(const char* w, Batch batch) {
  std::uint64_t n = 64;
  double rate = 0;
  const auto warm_start = clock_type::now();
  for (;;) {
    const auto t0 = clock_type::now();
    co_await batch(n);
    const double dt = seconds_since(t0);
    if (dt > 0) rate = static_cast<double>(n) / dt;
    if (seconds_since(warm_start) >= 0.1) break;
    if (dt < 0.02) n *= 2;
  }
  const auto per_batch = static_cast<std::uint64_t>(std::max(1.0, rate * 0.2));
  std::vector<double> ns;
  const std::uint64_t a0 = allocs();
  for (int b = 0; b < 5; ++b) {
    const auto t0 = clock_type::now();
    co_await batch(per_batch);
    ns.push_back(seconds_since(t0) * 1e9 / static_cast<double>(per_batch));
  }
  if (verbose()) {
    std::fprintf(stderr, "%s: %llu ops/batch, %.3f allocations/op\n", w,
                 static_cast<unsigned long long>(per_batch),
                 static_cast<double>(allocs() - a0) / static_cast<double>(5 * per_batch));
  }
  co_return median(ns);
}

// QUELL_PEER_RING=<buffer size>x<count> (e.g. 65536x128) and QUELL_PEER_BOUND=<bytes>: W5 and
// W12 with another receive ring or per-socket bound than the defaults (how the defaults were
// chosen: docs/decisions.md); QUELL_PEER_RECEIVE_AHEAD=0: W5, W6b, W7 and W12 with receive-ahead
// off (the A/B in docs/performance.md). Call inside the executor, before the first read.
static void ring_from_env() {
  if (const char* e = std::getenv("QUELL_PEER_RECEIVE_AHEAD"); e && *e == '0') {
    quell::receive_ring_options o;
    o.receive_ahead = false;  // one receive per read, as before receive-ahead (an A/B in one run)
    quell::set_receive_ring(o);
    return;
  }
  if (const char* e = std::getenv("QUELL_PEER_RING"); e && *e) {
    quell::receive_ring_options o;
    unsigned long size = 0, count = 0;
    if (std::sscanf(e, "%lux%lu", &size, &count) != 2) fail("QUELL_PEER_RING", "expected <size>x<count>");
    o.buffer_size = static_cast<std::uint32_t>(size);
    o.buffers = static_cast<std::uint32_t>(count);
    quell::set_receive_ring(o);
  }
}
static void bound_from_env(quell::tcp_stream& s) {
  if (const char* e = std::getenv("QUELL_PEER_BOUND"); e && *e) s.set_receive_bound(std::strtoul(e, nullptr, 10));
}

// A connected loopback TCP pair (W6): (server side, client side).
static quell::task<std::pair<quell::tcp_stream, quell::tcp_stream>> tcp_pair(quell::tcp_listener& l) {
  auto both = co_await quell::join(l.accept(), quell::tcp_stream::connect(l.local_address()));
  quell::tcp_stream server = std::move(std::get<0>(both));
  quell::tcp_stream client = std::move(std::get<1>(both));
  int one = 1;  // connect() already set TCP_NODELAY on the client side
  ::setsockopt(server.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  co_return std::pair<quell::tcp_stream, quell::tcp_stream>(std::move(server), std::move(client));
}

// ---------------------------------------------------------------------------------------------
// W1 await_chain

static quell::task<int> child(int i) { co_return i; }

static quell::task<> w1_batch(std::uint64_t n) {
  std::int64_t sum = 0;
  for (int i = 0; i < static_cast<int>(n); ++i) sum += co_await child(i);
  const auto N = static_cast<std::int64_t>(n);
  if (sum != N * (N - 1) / 2) fail("W1", "sum != N(N-1)/2");
}

static void run_w1() { result("W1", "ns/op", quell::block_on(measure_ns_per_op("W1", w1_batch))); }

// ---------------------------------------------------------------------------------------------
// W2 race_pending_loser

static quell::task<> w2_batch(std::uint64_t n) {
  std::uint64_t hooks = 0;
  std::int64_t sum = 0;
  auto hook = [&hooks] { ++hooks; };  // the loser's cancellation hook
  for (std::uint64_t i = 0; i < n; ++i)
    sum += co_await quell::race(quell::ready(1), quell::on_cancel(quell::pending<int>(), hook));
  if (sum != static_cast<std::int64_t>(n)) fail("W2", "sum of ready values != N");
  if (hooks != n) fail("W2", "hook count != N");
}

static void run_w2() { result("W2", "ns/op", quell::block_on(measure_ns_per_op("W2", w2_batch))); }

// ---------------------------------------------------------------------------------------------
// W8 any_of_pending_loser: W2 with any_of, which keeps every branch's value

static quell::task<> w8_batch(std::uint64_t n) {
  std::uint64_t hooks = 0;
  std::int64_t sum = 0;
  auto hook = [&hooks] { ++hooks; };  // the loser's cancellation hook
  for (std::uint64_t i = 0; i < n; ++i) {
    auto [won, lost] = co_await quell::any_of(quell::ready(1), quell::on_cancel(quell::pending<int>(), hook));
    if (!won || lost) fail("W8", "the ready branch lost or the pending one produced a value");
    sum += *won;
  }
  if (sum != static_cast<std::int64_t>(n)) fail("W8", "sum of ready values != N");
  if (hooks != n) fail("W8", "hook count != N");
}

static void run_w8() { result("W8", "ns/op", quell::block_on(measure_ns_per_op("W8", w8_batch))); }

// ---------------------------------------------------------------------------------------------
// W9 task_set_next: 100,000 members, each yielding once then returning its index; every result
// taken with next(), in completion order

namespace w9 {
constexpr std::int64_t kTasks = 100'000;

static quell::task<std::int64_t> member(std::int64_t i) {
  co_await quell::yield();
  co_return i;
}

static quell::task<double> one_rep() {
  quell::task_set<std::int64_t> set;
  const auto t0 = clock_type::now();
  for (std::int64_t i = 0; i < kTasks; ++i) set.spawn(member(i));
  set.close();
  std::int64_t sum = 0, n = 0;
  while (auto v = co_await set.next()) {
    sum += *v;
    ++n;
  }
  const auto t1 = clock_type::now();
  if (n != kTasks || sum != kTasks * (kTasks - 1) / 2) fail("W9", "not every member's value was taken once");
  co_return std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(kTasks);
}
}  // namespace w9

static void run_w9() {
  std::vector<double> ns;
  for (int r = 0; r < 3; ++r) ns.push_back(quell::block_on(w9::one_rep()));
  result("W9", "ns/task", median(ns));
}

// ---------------------------------------------------------------------------------------------
// W3 spawn_cancel

namespace w3 {
constexpr std::size_t kTasks = 100'000;

struct counters {
  std::size_t started = 0, completed = 0, ended = 0;
};

// Counts the task's end: its frame (and so this local) is destroyed when the task has ended,
// whichever way it ended.
struct end_counter {
  counters& c;
  ~end_counter() { ++c.ended; }
};

static quell::task<> sleeper(counters& c) {
  end_counter e{c};
  ++c.started;
  co_await quell::sleep_for(1h);
  ++c.completed;  // only if the sleep finished: a cancelled task does not run past its co_await
}

struct rep_result {
  double ns_per_task, bytes_per_task;
};

static quell::task<rep_result> one_rep() {
  counters c;
  quell::task_group g;

  const std::size_t live_before = live_bytes(), pool_before = frame_pool_cached_bytes();
  const auto t0 = clock_type::now();
  for (std::size_t i = 0; i < kTasks; ++i) g.spawn(sleeper(c));  // each runs to its sleep here
  co_await quell::yield();  // the executor turns once: every task is parked on its timer
  const std::size_t live_blocked = live_bytes(), pool_blocked = frame_pool_cached_bytes();
  if (c.started != kTasks || c.ended != 0 || g.running() != kTasks)
    fail("W3", "not every task was blocked on its timer");

  co_await g.cancel_and_join();
  const auto t1 = clock_type::now();

  if (c.ended != kTasks || g.running() != 0) fail("W3", "not every task ended");
  if (c.completed != 0) fail("W3", "not every task ended cancelled");
  const double ns = std::chrono::duration<double, std::nano>(t1 - t0).count();
  // Live bytes minus what the frame pool holds unused, at both points.
  const double held_before = static_cast<double>(live_before) - static_cast<double>(pool_before);
  const double held_blocked = static_cast<double>(live_blocked) - static_cast<double>(pool_blocked);
  if (verbose()) {
    std::fprintf(stderr, "W3: raw live-bytes delta %.1f B/task, frame pool cached %zu -> %zu B\n",
                 (static_cast<double>(live_blocked) - static_cast<double>(live_before)) / kTasks, pool_before,
                 pool_blocked);
  }
  co_return rep_result{ns / kTasks, (held_blocked - held_before) / static_cast<double>(kTasks)};
}
}  // namespace w3

static void run_w3() {
  std::vector<double> ns, bytes;
  for (int r = 0; r < 3; ++r) {
    const std::uint64_t a0 = allocs();
    auto rr = quell::block_on(w3::one_rep());  // a fresh executor per repetition, like asio's
    if (verbose())
      std::fprintf(stderr, "W3 rep %d: %.1f ns/task, %.1f B/task, %.2f allocations/task\n", r, rr.ns_per_task,
                   rr.bytes_per_task, static_cast<double>(allocs() - a0) / w3::kTasks);
    ns.push_back(rr.ns_per_task);
    bytes.push_back(rr.bytes_per_task);
  }
  result("W3", "ns/task", median(ns));
  result("W3", "bytes/task", median(bytes));
}

// ---------------------------------------------------------------------------------------------
// W4 timeout_fast_op

static quell::task<> w4_batch(std::uint64_t n) {
  std::int64_t sum = 0, expect = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    const int v = static_cast<int>(i & 0xffff);
    sum += co_await quell::timeout(1s, quell::ready(v));
    expect += v;
  }
  if (sum != expect) fail("W4", "sum of returned values");
}

static void run_w4() { result("W4", "ns/op", quell::block_on(measure_ns_per_op("W4", w4_batch))); }

// ---------------------------------------------------------------------------------------------
// W5 tcp_echo

namespace w5 {
constexpr int kConns = 50;
constexpr std::size_t kMsg = 64;

struct state {
  std::uint64_t round_trips = 0;
  bool stop = false;
  int clients_done = 0, servers_done = 0;
};

static quell::task<> server_session(quell::tcp_stream s, state& st) {
  char data[4096];
  for (;;) {
    const std::size_t n = co_await s.read_some(data);
    if (n == 0) break;  // eof once the client shut down its side
    co_await s.write_all(std::string_view(data, n));
  }
  co_await s.close();
  ++st.servers_done;
}

static quell::task<> acceptor(quell::tcp_listener& l, quell::scope& sc, state& st) {
  for (int i = 0; i < kConns; ++i) {
    quell::tcp_stream s = co_await l.accept();
    int one = 1;
    ::setsockopt(s.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sc.spawn(server_session(std::move(s), st));
  }
}

static quell::task<> client(int id, quell::address ep, state& st) {
  quell::tcp_stream s = co_await quell::tcp_stream::connect(ep);  // sets TCP_NODELAY
  std::array<char, kMsg> out, in;
  for (std::uint64_t seq = 0; !st.stop; ++seq) {
    echo_message::fill(out.data(), id, seq);  // a different message every round trip
    co_await s.write_all(std::string_view(out.data(), kMsg));
    co_await s.read_exact(in);
    if (std::memcmp(in.data(), out.data(), kMsg) != 0) fail("W5", "echo differs from message");
    ++st.round_trips;
  }
  s.shutdown();
  co_await s.close();
  ++st.clients_done;
}

static quell::task<double> timed_window(state& st) {
  co_await quell::sleep_for(200ms);  // warm-up
  const std::uint64_t c0 = st.round_trips, e0 = quell::detail::reactor::current().enters();
  const auto t0 = clock_type::now();
  co_await quell::sleep_for(2s);
  const std::uint64_t c1 = st.round_trips, e1 = quell::detail::reactor::current().enters();
  const double msg_per_s = static_cast<double>(c1 - c0) / seconds_since(t0);
  if (verbose() && c1 > c0)
    std::fprintf(stderr, "W5: %.3f io_uring_enter calls per round trip\n",
                 static_cast<double>(e1 - e0) / static_cast<double>(c1 - c0));
  st.stop = true;
  co_return msg_per_s;
}

static quell::task<double> run() {
  ring_from_env();
  auto l = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
  const quell::address ep = l.local_address();
  state st;
  auto body = [&](quell::scope& sc) -> quell::task<double> {
    sc.spawn(acceptor(l, sc, st));
    for (int i = 0; i < kConns; ++i) sc.spawn(client(i, ep, st));
    co_return co_await timed_window(st);
  };
  const double msg_per_s = co_await quell::with_scope(body);  // ends once every child has ended
  co_await l.close();
  if (st.clients_done != kConns) fail("W5", "not every client finished");
  if (st.servers_done != kConns) fail("W5", "not every server saw eof");
  if (msg_per_s <= 0) fail("W5", "no round trips in the timed window");
  co_return msg_per_s;
}
}  // namespace w5

static void run_w5() { result("W5", "msg/s", quell::block_on(w5::run())); }

// ---------------------------------------------------------------------------------------------
// W6 cancel_inflight_read

// After the loop: the socket must still work. Send one byte from the peer and read it back.
static quell::task<> check_socket_usable(const char* w, quell::tcp_stream& sock, quell::tcp_stream& peer) {
  if (sock.buffered() != 0) fail(w, "a cancelled read kept data");
  co_await peer.write_all("x");
  char y = 0;
  const std::size_t n = co_await sock.read_some(std::span<char>(&y, 1));
  if (n != 1 || y != 'x') fail(w, "socket unusable after the cancelled reads");
}

static quell::task<> w6a_batch(quell::tcp_stream& sock, std::uint64_t n) {
  char buf[64];
  const std::uint64_t enters0 = quell::detail::reactor::current().enters();
  for (std::uint64_t i = 0; i < n; ++i) {
    auto r = co_await quell::race(quell::ready(1), sock.read_some(buf));
    if (r.index() != 0) fail("W6a", "the read returned data");
  }
  // Same turn: each read was unlinked from the submission queue before any SQE existed.
  if (quell::detail::reactor::current().enters() != enters0) fail("W6a", "a same-turn cancel entered the kernel");
}

static quell::task<> w6b_batch(quell::tcp_stream& sock, std::uint64_t n) {
  char buf[64];
  const std::uint64_t enters0 = quell::detail::reactor::current().enters();
  for (std::uint64_t i = 0; i < n; ++i) {
    auto r = co_await quell::race(sock.read_some(buf), quell::yield());
    if (r.index() != 1) fail("W6b", "the read returned data");
  }
  quell::detail::reactor& io = quell::detail::reactor::current();
  if (io.ring_ready()) {
    // Receive-ahead: the socket's multishot receive stays armed in the kernel; each read waited
    // on its queue and was cancelled there, without a system call.
    // (Two multishots: this socket's receive and the listener's accept.)
    if (io.background_in_flight() != 2) fail("W6b", "the socket's receive is not armed in the kernel");
  } else if (io.enters() - enters0 < 2 * n) {
    // One receive per read: each read was submitted in one io_uring_enter and cancelled by an
    // ASYNC_CANCEL in another.
    fail("W6b", "a read was cancelled before it reached the kernel");
  }
}

template <bool Kernel>
static quell::task<double> w6_run(const char* w) {
  ring_from_env();
  auto l = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
  auto pair = co_await tcp_pair(l);
  quell::tcp_stream& sock = pair.first;
  quell::tcp_stream& peer = pair.second;
  auto batch = [&sock](std::uint64_t n) { return Kernel ? w6b_batch(sock, n) : w6a_batch(sock, n); };
  const double ns = co_await measure_ns_per_op(w, batch);
  if (quell::detail::reactor::current().in_flight() != 0) fail(w, "a cancelled read is still in flight");
  co_await check_socket_usable(w, sock, peer);
  co_await sock.close();
  co_await peer.close();
  co_await l.close();
  co_return ns;
}

static void run_w6a() { result("W6a", "ns/op", quell::block_on(w6_run<false>("W6a"))); }
static void run_w6b() { result("W6b", "ns/op", quell::block_on(w6_run<true>("W6b"))); }

// ---------------------------------------------------------------------------------------------
// W7 cancel_latency

namespace w7 {
constexpr int kSubtrees = 100, kLeavesPer = 100, kLeaves = kSubtrees * kLeavesPer;
constexpr int kPairs = 2'500, kEnds = 2 * kPairs;
static_assert(kEnds == kLeaves / 2, "every socket end is read by exactly one leaf");

struct state {
  int started = 0, hooks = 0, data_reads = 0, timers_fired = 0, ended = 0;
};

struct end_counter {
  state& st;
  ~end_counter() { ++st.ended; }
};

static quell::task<> read_leaf(quell::tcp_stream& end, state& st) {
  end_counter e{st};
  char buf[16];
  ++st.started;
  auto hook = [&st] { ++st.hooks; };
  co_await quell::on_cancel(end.read_some(buf), hook);
  ++st.data_reads;  // only if the read finished (data or eof): never expected
}

static quell::task<> timer_leaf(state& st) {
  end_counter e{st};
  ++st.started;
  auto hook = [&st] { ++st.hooks; };
  co_await quell::on_cancel(quell::sleep_for(1h), hook);
  ++st.timers_fired;
}

static quell::task<> subtree(std::vector<quell::tcp_stream>& ends, int first_end, state& st) {
  auto body = [&](quell::scope& s) -> quell::task<> {
    int next = first_end;
    for (int j = 0; j < kLeavesPer; ++j) {
      if (j % 2 == 0) {
        s.spawn(read_leaf(ends[static_cast<std::size_t>(next++)], st));
      } else {
        s.spawn(timer_leaf(st));
      }
    }
    co_return;  // the scope waits for its leaves
  };
  co_await quell::with_scope(body);
}

static quell::task<double> one_rep(std::vector<quell::tcp_stream>& ends) {
  state st;
  quell::task_group root;
  for (int k = 0; k < kSubtrees; ++k) root.spawn(subtree(ends, k * (kLeavesPer / 2), st));
  // Every leaf ran to its first suspension inside spawn; one executor turn hands the queued reads
  // to io_uring (the executor flushes its submission queue between turns).
  quell::detail::reactor& io = quell::detail::reactor::current();
  const std::uint64_t enters0 = io.enters();
  co_await quell::yield();
  if (st.started != kLeaves || st.ended != 0 || root.running() != kSubtrees) fail("W7", "not every leaf blocked");
  // Receive-ahead: each end's multishot receive is armed in the kernel (from the first repetition
  // on) and its read waits on the socket's queue; otherwise each read was submitted in this turn.
  const bool armed =
      io.ring_ready() ? io.background_in_flight() == static_cast<std::size_t>(kEnds) : io.enters() != enters0;
  if (io.in_flight() != static_cast<std::size_t>(kEnds) || !armed) fail("W7", "not every read is in the kernel");

  const auto t0 = clock_type::now();
  co_await root.cancel_and_join();
  const auto t1 = clock_type::now();

  if (st.ended != kLeaves || root.running() != 0) fail("W7", "not every leaf ended");
  if (st.hooks != kLeaves) fail("W7", "hook count != 10,000");
  if (st.data_reads != 0) fail("W7", "a read returned");
  if (st.timers_fired != 0) fail("W7", "a timer fired");
  if (io.in_flight() != 0) fail("W7", "a read is still in the kernel");
  for (auto& e : ends)
    if (e.buffered() != 0) fail("W7", "a cancelled read kept data");
  co_return std::chrono::duration<double, std::micro>(t1 - t0).count();
}

static quell::task<double> run() {
  ring_from_env();
  std::vector<quell::tcp_stream> ends;
  ends.reserve(kEnds);
  for (int i = 0; i < kPairs; ++i) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) fail("W7", "socketpair failed");
    ends.emplace_back(fds[0]);  // tcp_stream adopts a connected stream socket
    ends.emplace_back(fds[1]);
  }
  std::vector<double> us;
  for (int rep = 0; rep < 3; ++rep) us.push_back(co_await one_rep(ends));
  for (auto& e : ends) co_await e.close();
  co_return median(us);
}
}  // namespace w7

static void run_w7() { result("W7", "us", quell::block_on(w7::run())); }

// ---------------------------------------------------------------------------------------------
// W10 cross_core_call and W11 cross_core_cancel: a runtime of two cores, the loop on core 0

static quell::task<> w10_batch(std::uint64_t n) {
  std::int64_t sum = 0;
  for (int i = 0; i < static_cast<int>(n); ++i) {
    auto make = [i] { return quell::ready(i); };  // named: see the g++ 12 note in README
    sum += co_await quell::on(1, make);
  }
  const auto N = static_cast<std::int64_t>(n);
  if (sum != N * (N - 1) / 2) fail("W10", "sum != N(N-1)/2");
}

static void run_w10() {
  quell::runtime rt{2};
  result("W10", "ns/op", rt.run(measure_ns_per_op("W10", w10_batch)));
}

namespace w11 {
constexpr int kReps = 1000;

quell::task<double> run() {
  std::atomic<int> hooks{0};
  std::atomic<int> data_reads{0};
  std::vector<double> us;
  us.reserve(kReps);
  for (int rep = 0; rep < kReps; ++rep) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) fail("W11", "socketpair failed");
    std::atomic<bool> reading{false};
    auto child = [&, fd = fds[0]]() -> quell::task<> {
      quell::tcp_stream s{fd};
      char buf[64];
      auto hook = [&hooks] { ++hooks; };
      reading = true;
      co_await quell::on_cancel(s.read_some(std::span(buf)), hook);
      ++data_reads;  // never: cancelled
    };
    auto make = [&] { return child(); };
    clock_type::time_point t0;
    // The trigger wins the race once core 1's read is in the kernel; the race then cancels the
    // call and returns only when the child on core 1 has ended and its hook has run.
    auto trigger = [&]() -> quell::task<> {
      while (!reading) co_await quell::yield();
      co_await quell::sleep_for(std::chrono::milliseconds(1));  // core 1 submits its read
      t0 = clock_type::now();
    };
    co_await quell::race(quell::on(1, make), trigger());
    const double took = seconds_since(t0) * 1e6;
    ::close(fds[1]);
    us.push_back(took);
  }
  if (hooks != kReps) fail("W11", "hook count != 1,000");
  if (data_reads != 0) fail("W11", "a read returned");
  co_return median(us);
}
}  // namespace w11

static void run_w11() {
  quell::runtime rt{2};
  result("W11", "us", rt.run(w11::run()));
}

// ---------------------------------------------------------------------------------------------
// W5m tcp_echo on every core: W5 on a runtime of one core, then W5 on every core of a runtime of
// all cores at once (each core its own listener, clients and servers: a pair never crosses cores).

static void run_w5m() {
  double one = 0;
  {
    quell::runtime rt{1};
    one = rt.run(w5::run());
  }
  double all = 0;
  unsigned cores = 0;
  {
    quell::runtime rt;  // one core per CPU the process may use
    cores = rt.size();
    auto per_core = [] { return w5::run(); };
    auto every_core = [&]() -> quell::task<double> {
      const std::vector<double> each = co_await quell::on_each_core(per_core);
      double sum = 0;
      for (double v : each) sum += v;
      co_return sum;
    };
    all = rt.run(every_core());
  }
  if (verbose()) std::fprintf(stderr, "W5m: %u cores\n", cores);
  result("W5m", "msg/s@1", one);
  result("W5m", "msg/s", all);
  result("W5m", "scaling", all / one);
}

// ---------------------------------------------------------------------------------------------
// W12 bulk_read

namespace w12 {
struct state {
  std::uint64_t sent = 0, received = 0;
  bool stop = false, writer_done = false;
};

static quell::task<> writer(quell::tcp_stream& s, state& st) {
  std::vector<unsigned char> out(bulk_chunk::size);
  bulk_chunk::fill_pattern(out.data());
  while (!st.stop) {
    bulk_chunk::stamp(out.data(), st.sent);
    co_await s.write_all(std::string_view(reinterpret_cast<const char*>(out.data()), out.size()));
    ++st.sent;
  }
  st.writer_done = true;
}

// Reads whole chunks until the window has passed and every chunk written has been read (the
// writer, when not done, is inside write_all of a chunk that will arrive).
static quell::task<double> reader(quell::tcp_stream& s, state& st) {
  std::vector<unsigned char> in(bulk_chunk::size);
  const auto start = clock_type::now();
  auto t0 = start;
  std::uint64_t c0 = 0;
  double mb_per_s = 0;
  bool warm = true;
  while (!(st.writer_done && st.received == st.sent)) {
    co_await s.read_exact(std::span<char>(reinterpret_cast<char*>(in.data()), in.size()));
    if (!bulk_chunk::check(in.data(), st.received)) fail("W12", "a chunk arrived out of order or damaged");
    ++st.received;
    if (st.stop) continue;
    const auto now = clock_type::now();
    if (warm && now - start >= 200ms) {
      warm = false;
      t0 = now;
      c0 = st.received;
    } else if (!warm && now - t0 >= 1s) {
      mb_per_s = static_cast<double>((st.received - c0) * bulk_chunk::size) / 1e6 /
                 std::chrono::duration<double>(now - t0).count();
      st.stop = true;
    }
  }
  co_return mb_per_s;
}

static quell::task<double> run(bool ahead) {
  ring_from_env();
  auto l = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
  auto pair = co_await tcp_pair(l);
  quell::tcp_stream& in = pair.first;
  quell::tcp_stream& out = pair.second;
  in.set_receive_ahead(ahead);
  bound_from_env(in);
  state st;
  auto [mb_per_s, none] = co_await quell::join(reader(in, st), writer(out, st));
  (void)none;
  if (mb_per_s <= 0) fail("W12", "no chunk in the timed window");
  co_await in.close();
  co_await out.close();
  co_await l.close();
  co_return mb_per_s;
}
}  // namespace w12

static void run_w12() {
  result("W12", "MB/s", quell::block_on(w12::run(true)));
  result("W12", "MB/s@one-shot", quell::block_on(w12::run(false)));
}

// ---------------------------------------------------------------------------------------------

int main(int argc, char** argv) {
  // W7 needs ~5,000 descriptors: raise the soft limit to the hard limit.
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <W1|W2|W3|W4|W5|W5m|W6a|W6b|W7|W8|W9|W10|W11|W12>\n", argv[0]);
    return 2;
  }
  const std::string_view w = argv[1];
  try {
    if (w == "W1") run_w1();
    else if (w == "W2") run_w2();
  else if (w == "W8") run_w8();
  else if (w == "W9") run_w9();
    else if (w == "W3") run_w3();
    else if (w == "W4") run_w4();
    else if (w == "W5") run_w5();
    else if (w == "W5m") run_w5m();
    else if (w == "W6a") run_w6a();
    else if (w == "W6b") run_w6b();
    else if (w == "W7") run_w7();
    else if (w == "W10") run_w10();
    else if (w == "W11") run_w11();
    else if (w == "W12") run_w12();
    else {
      std::fprintf(stderr, "unknown workload %s\n", argv[1]);
      return 2;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: failed: %s\n", argv[1], e.what());
    return 1;
  }
  return 0;
}
