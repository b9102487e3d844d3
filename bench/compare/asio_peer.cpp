// asio_peer.cpp: the Boost.Asio 1.81 peer of the quell comparison (bench/compare/WORKLOADS.md).
//
// One program, one workload per call: `asio_peer <W1|W2|W3|W4|W5|W5m|W6a|W6b|W7|W8|W9|W10|W11|W12>`,
// printing `RESULT <workload> <unit> <value>` lines. Asio's public API only: C++20 awaitables
// (awaitable, co_spawn, use_awaitable, as_tuple, experimental::awaitable_operators,
// bind_cancellation_slot, cancellation_signal), one io_context run from one thread with the
// default epoll reactor (W10 and W11: two io_contexts, each run from its own thread). Every
// io_context gets concurrency hint 1 (the documented "run from one thread" hint: the scheduler
// keeps thread-private queues), not the UNSAFE hints.
//
// How each workload maps to Asio:
//   W1  await_chain          `sum += co_await child(i)`, child an awaitable<int> that co_returns i;
//                            the loop runs in an awaitable<> co_spawn'ed on the io_context.
//   W2  race_pending_loser   `co_await (ready_branch() || never_branch())` (awaitable_operators);
//                            never_branch waits on a steady_timer at time_point::max() and counts
//                            the hook when the wait ends with operation_aborted.
//   W3  spawn_cancel         100,000 co_spawn'ed tasks, each waiting on its own 1 h steady_timer,
//                            each bound to its own cancellation_signal (bind_cancellation_slot);
//                            poll() once so every task has armed its timer, then emit terminal on
//                            every signal and run until every completion handler ran.
//   W4  timeout_fast_op      `co_await (ready_branch(i) || timer.async_wait(loser_token))`
//                            with a steady_timer set to 1 s, the documented timeout idiom
//                            (loser_token: see its definition below).
//   W5  tcp_echo             acceptor + 50 server sessions (read_some, write back) + 50 clients
//                            (async_write 64 B, async_read 64 B, compare), TCP_NODELAY both ends.
//   W6a cancel, same turn    `co_await (ready_branch() || sock.async_read_some(buf, loser_token))`.
//   W6b cancel, kernel-side  the read bound to a cancellation_signal; a post()ed handler emits the
//                            cancel after the read is registered with the reactor; the read ends
//                            with operation_aborted.
//   W7  cancel_latency       root -> 100 subtrees -> 100 leaves; each leaf is co_spawn'ed with its
//                            own cancellation_signal; half read a socketpair end (2,500 pairs, both
//                            ends read), half wait on a 1 h timer; the hook counts operation_aborted.
//                            Cancelling the root is a walk over the tree emitting every signal.
//   W10 cross_core_call      `sum += co_await co_spawn(ctx1, child(i), use_awaitable)` from a
//                            coroutine on ctx0; the completion comes back to ctx0.
//   W11 cross_core_cancel    co_spawn(ctx1, child, bind_cancellation_slot(sig.slot(),
//                            use_awaitable)) awaited on ctx0 (operator&&) together with a coroutine
//                            on ctx0 that emits sig; co_spawn forwards the cancellation to ctx1,
//                            where the child's async_read_some ends with operation_aborted.
//
// Heap accounting (W3): operator new/delete are replaced and count live bytes with
// malloc_usable_size. Asio's own recycling allocator (coroutine frames, handlers, cancellation
// handlers) normally calls std::aligned_alloc/std::free directly, which the replaced operator new
// would never see; the two BOOST_ASIO_DISABLE_* macros below make it fall back to ::operator new,
// so every byte Asio allocates is counted. For align <= 16 glibc's aligned_alloc is malloc, so the
// allocation path costs the same.

#define BOOST_ASIO_DISABLE_STD_ALIGNED_ALLOC 1
#define BOOST_ASIO_DISABLE_BOOST_ALIGN 1

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/parallel_group.hpp>

#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string_view>
#include <thread>
#include <vector>

#include "echo_message.hpp"

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------
// Counting global allocator. The program is single-threaded; relaxed load + store (not an
// atomic read-modify-write) keeps the counter free of locked instructions on the hot paths.
// (W10 and W11 run two threads: their updates may then be lost, but they never read the count.)

static std::atomic<std::size_t> g_live_bytes{0};

static inline void count_alloc(void* p) noexcept {
  g_live_bytes.store(g_live_bytes.load(std::memory_order_relaxed) + malloc_usable_size(p),
                     std::memory_order_relaxed);
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

// ---------------------------------------------------------------------------------------------
// Harness

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
// `batch(n)` returns an awaitable doing n operations and checking them.
template <class Batch>
static awaitable<double> measure_ns_per_op(Batch batch) {
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
  for (int b = 0; b < 5; ++b) {
    const auto t0 = clock_type::now();
    co_await batch(per_batch);
    ns.push_back(seconds_since(t0) * 1e9 / static_cast<double>(per_batch));
  }
  co_return median(ns);
}

// Runs the awaitable `make()` returns to completion on a single-threaded io_context; an exception
// escaping it propagates out of run().
template <class MakeAwaitable>
static void run_on_io_context(MakeAwaitable make) {
  asio::io_context ioc(1);
  asio::co_spawn(ioc, make(), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  ioc.run();
}

// A connected loopback TCP pair (W6).
static std::pair<tcp::socket, tcp::socket> tcp_pair(asio::io_context& ioc) {
  tcp::acceptor acc(ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  tcp::socket a(ioc), b(ioc);
  a.connect(acc.local_endpoint());
  acc.accept(b);
  a.set_option(tcp::no_delay(true));
  b.set_option(tcp::no_delay(true));
  return {std::move(a), std::move(b)};
}

// The completion token of an operation that is expected to lose a race (W4's timer, W6a's read).
// Plain use_awaitable turns the loser's operation_aborted into a thrown system_error (caught and
// dropped by operator||), one exception per operation; as_tuple(use_awaitable) delivers the same
// error as a value, which is how an Asio user keeps expected cancellations off the exception path.
// -DASIO_PEER_THROWING_LOSER restores the literal `use_awaitable` spelling of WORKLOADS.md.
#ifdef ASIO_PEER_THROWING_LOSER
constexpr auto loser_token = use_awaitable;
#else
constexpr auto loser_token = asio::as_tuple(use_awaitable);
#endif

// ---------------------------------------------------------------------------------------------
// W1 await_chain

static awaitable<int> child(int i) { co_return i; }

static awaitable<void> w1_batch(std::uint64_t n) {
  std::int64_t sum = 0;
  for (int i = 0; i < static_cast<int>(n); ++i) sum += co_await child(i);
  const auto N = static_cast<std::int64_t>(n);
  if (sum != N * (N - 1) / 2) fail("W1", "sum != N(N-1)/2");
}

static void run_w1() {
  double ns = 0;
  run_on_io_context([&]() -> awaitable<void> { ns = co_await measure_ns_per_op(w1_batch); });
  result("W1", "ns/op", ns);
}

// ---------------------------------------------------------------------------------------------
// W2 race_pending_loser

static awaitable<int> ready_branch(int v) { co_return v; }

static awaitable<int> never_branch(std::uint64_t& hooks) {
  asio::steady_timer t(co_await asio::this_coro::executor, asio::steady_timer::time_point::max());
  // as_tuple: the cancelled wait is the expected outcome here, not an exceptional one.
  auto [ec] = co_await t.async_wait(asio::as_tuple(use_awaitable));
  if (ec == asio::error::operation_aborted) ++hooks;  // the cancellation hook
  co_return 0;
}

static awaitable<void> w2_batch(std::uint64_t n) {
  std::uint64_t hooks = 0;
  std::int64_t sum = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    auto r = co_await (ready_branch(1) || never_branch(hooks));
    if (r.index() != 0) fail("W2", "the never-completing branch won");
    sum += std::get<0>(r);
  }
  if (sum != static_cast<std::int64_t>(n)) fail("W2", "sum of ready values != N");
  if (hooks != n) fail("W2", "hook count != N");
}

static void run_w2() {
  double ns = 0;
  run_on_io_context([&]() -> awaitable<void> { ns = co_await measure_ns_per_op(w2_batch); });
  result("W2", "ns/op", ns);
}

// ---------------------------------------------------------------------------------------------
// W8 any_of_pending_loser: Asio has no combinator that keeps a loser's value; its nearest is the
// race of W2 (operator||), measured again under W8's name.

static void run_w8() {
  double ns = 0;
  run_on_io_context([&]() -> awaitable<void> { ns = co_await measure_ns_per_op(w2_batch); });
  result("W8", "ns/op", ns);
}

// ---------------------------------------------------------------------------------------------
// W9 task_set_next: 100,000 co_spawn'ed members, each yielding once (a post) then returning its
// index, awaited as one ranged parallel_group with wait_for_all, which hands back the values
// with their completion order.

namespace w9 {
constexpr std::int64_t kTasks = 100'000;

static awaitable<std::int64_t> member(std::int64_t i) {
  co_await asio::post(co_await asio::this_coro::executor, use_awaitable);
  co_return i;
}

static double one_rep() {
  double ns = 0;
  run_on_io_context([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    const auto t0 = clock_type::now();
    std::vector<decltype(asio::co_spawn(ex, member(0), asio::deferred))> ops;
    ops.reserve(static_cast<std::size_t>(kTasks));
    for (std::int64_t i = 0; i < kTasks; ++i) ops.push_back(asio::co_spawn(ex, member(i), asio::deferred));
    auto [order, errors, values] = co_await asio::experimental::make_parallel_group(std::move(ops))
                                       .async_wait(asio::experimental::wait_for_all(), use_awaitable);
    std::int64_t sum = 0;
    for (std::size_t k : order) sum += values[k];  // in completion order
    const auto t1 = clock_type::now();
    for (auto& e : errors) {
      if (e) fail("W9", "a member failed");
    }
    if (static_cast<std::int64_t>(order.size()) != kTasks || sum != kTasks * (kTasks - 1) / 2)
      fail("W9", "not every member's value was taken once");
    ns = std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(kTasks);
  });
  return ns;
}
}  // namespace w9

static void run_w9() {
  std::vector<double> ns;
  for (int r = 0; r < 3; ++r) ns.push_back(w9::one_rep());
  result("W9", "ns/task", median(ns));
}

// ---------------------------------------------------------------------------------------------
// W3 spawn_cancel

namespace w3 {
constexpr std::size_t kTasks = 100'000;

struct counters {
  std::size_t started = 0, cancelled = 0, ended = 0;
  clock_type::time_point last_end;
};

static awaitable<void> sleeper(counters& c) {
  asio::steady_timer t(co_await asio::this_coro::executor, 1h);
  ++c.started;
  auto [ec] = co_await t.async_wait(asio::as_tuple(use_awaitable));
  if (ec == asio::error::operation_aborted) ++c.cancelled;
}

struct rep_result {
  double ns_per_task, bytes_per_task;
};

static rep_result one_rep() {
  asio::io_context ioc(1);
  { asio::steady_timer warm(ioc); }  // create the timer service outside the measured span
  counters c;

  const std::size_t bytes_before = live_bytes();
  const auto t0 = clock_type::now();
  // Each task's own signal is per-task state the cancel needs, so it is counted in bytes/task.
  auto signals = std::make_unique<asio::cancellation_signal[]>(kTasks);
  for (std::size_t i = 0; i < kTasks; ++i)
    asio::co_spawn(ioc, sleeper(c),
                   asio::bind_cancellation_slot(signals[i].slot(), [&c](std::exception_ptr e) {
                     if (e) std::rethrow_exception(e);
                     if (++c.ended == kTasks) c.last_end = clock_type::now();
                   }));
  ioc.poll();  // run once: every task starts and arms its timer, then blocks
  const std::size_t bytes_blocked = live_bytes();
  if (c.started != kTasks || c.ended != 0) fail("W3", "not every task was blocked on its timer");

  for (std::size_t i = 0; i < kTasks; ++i) signals[i].emit(asio::cancellation_type::terminal);
  ioc.run();  // until every completion handler ran (nothing else holds work)

  if (c.ended != kTasks) fail("W3", "not every task ended");
  if (c.cancelled != kTasks) fail("W3", "not every task ended cancelled");
  const double ns = std::chrono::duration<double, std::nano>(c.last_end - t0).count();
  return {ns / kTasks,
          static_cast<double>(bytes_blocked - bytes_before) / static_cast<double>(kTasks)};
}
}  // namespace w3

static void run_w3() {
  std::vector<double> ns, bytes;
  for (int r = 0; r < 3; ++r) {
    auto rr = w3::one_rep();
    ns.push_back(rr.ns_per_task);
    bytes.push_back(rr.bytes_per_task);
  }
  result("W3", "ns/task", median(ns));
  result("W3", "bytes/task", median(bytes));
}

// ---------------------------------------------------------------------------------------------
// W4 timeout_fast_op

static awaitable<void> w4_batch(std::uint64_t n) {
  auto ex = co_await asio::this_coro::executor;
  std::int64_t sum = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    asio::steady_timer timer(ex, 1s);
    auto r = co_await (ready_branch(static_cast<int>(i & 0xffff)) ||
                       timer.async_wait(loser_token));
    if (r.index() != 0) fail("W4", "the 1 s timeout fired");
    sum += std::get<0>(r);
  }
  std::int64_t expect = 0;
  for (std::uint64_t i = 0; i < n; ++i) expect += static_cast<std::int64_t>(i & 0xffff);
  if (sum != expect) fail("W4", "sum of returned values");
}

static void run_w4() {
  double ns = 0;
  run_on_io_context([&]() -> awaitable<void> { ns = co_await measure_ns_per_op(w4_batch); });
  result("W4", "ns/op", ns);
}

// ---------------------------------------------------------------------------------------------
// W5 tcp_echo

namespace w5 {
constexpr int kConns = 50;
constexpr std::size_t kMsg = 64;

struct state {
  std::uint64_t round_trips = 0;
  bool stop = false;
  int clients_done = 0;
};

static awaitable<void> server_session(tcp::socket sock) {
  std::array<char, 4096> data;
  for (;;) {
    auto [ec, n] = co_await sock.async_read_some(asio::buffer(data), asio::as_tuple(use_awaitable));
    if (ec) co_return;  // eof once the client closes
    co_await asio::async_write(sock, asio::buffer(data, n), use_awaitable);
  }
}

static awaitable<void> listener(tcp::acceptor& acc) {
  for (int i = 0; i < kConns; ++i) {
    tcp::socket s = co_await acc.async_accept(use_awaitable);
    s.set_option(tcp::no_delay(true));
    asio::co_spawn(acc.get_executor(), server_session(std::move(s)), asio::detached);
  }
}

static awaitable<void> client(int id, tcp::endpoint ep, state& st) {
  tcp::socket sock(co_await asio::this_coro::executor);
  co_await sock.async_connect(ep, use_awaitable);
  sock.set_option(tcp::no_delay(true));
  std::array<unsigned char, kMsg> out, in;
  for (std::uint64_t seq = 0; !st.stop; ++seq) {
    echo_message::fill(out.data(), id, seq);  // a different message every round trip
    co_await asio::async_write(sock, asio::buffer(out), use_awaitable);
    co_await asio::async_read(sock, asio::buffer(in), use_awaitable);
    if (std::memcmp(in.data(), out.data(), kMsg) != 0) fail("W5", "echo differs from message");
    ++st.round_trips;
  }
  sock.shutdown(tcp::socket::shutdown_send);
  ++st.clients_done;
}

static awaitable<void> timed_window(state& st, double& msg_per_s) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  t.expires_after(200ms);  // warm-up
  co_await t.async_wait(use_awaitable);
  const std::uint64_t c0 = st.round_trips;
  const auto t0 = clock_type::now();
  t.expires_after(2s);
  co_await t.async_wait(use_awaitable);
  const std::uint64_t c1 = st.round_trips;
  msg_per_s = static_cast<double>(c1 - c0) / seconds_since(t0);
  st.stop = true;
}
}  // namespace w5

static double w5_instance() {
  asio::io_context ioc(1);
  tcp::acceptor acc(ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  w5::state st;
  double msg_per_s = 0;
  auto rethrow = [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  };
  asio::co_spawn(ioc, w5::listener(acc), rethrow);
  for (int i = 0; i < w5::kConns; ++i)
    asio::co_spawn(ioc, w5::client(i, acc.local_endpoint(), st), rethrow);
  asio::co_spawn(ioc, w5::timed_window(st, msg_per_s), rethrow);
  ioc.run();  // returns once the clients stopped and the servers saw eof
  if (st.clients_done != w5::kConns) fail("W5", "not every client finished");
  if (msg_per_s <= 0) fail("W5", "no round trips in the timed window");
  return msg_per_s;
}

static void run_w5() { result("W5", "msg/s", w5_instance()); }

// W5m: W5 on one thread, then W5 on as many threads as the process has CPUs, at once (each its
// own io_context with its own listener, clients and servers: one io_context per thread).
static void run_w5m() {
  const double one = w5_instance();
  cpu_set_t set;
  CPU_ZERO(&set);
  const int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? std::max(1, CPU_COUNT(&set)) : 1;
  std::vector<double> each(static_cast<std::size_t>(cpus));
  std::vector<std::thread> threads;
  for (int i = 0; i < cpus; ++i) threads.emplace_back([&each, i] { each[static_cast<std::size_t>(i)] = w5_instance(); });
  for (auto& t : threads) t.join();
  double all = 0;
  for (double v : each) all += v;
  result("W5m", "msg/s@1", one);
  result("W5m", "msg/s", all);
  result("W5m", "scaling", all / one);
}

// ---------------------------------------------------------------------------------------------
// W6 cancel_inflight_read

// After the loop: the socket must still work. Send one byte from the peer and read it back.
static awaitable<void> check_socket_usable(const char* w, tcp::socket& sock, tcp::socket& peer) {
  const char x = 'x';
  co_await asio::async_write(peer, asio::buffer(&x, 1), use_awaitable);
  char y = 0;
  const std::size_t n = co_await sock.async_read_some(asio::buffer(&y, 1), use_awaitable);
  if (n != 1 || y != 'x') fail(w, "socket unusable after the cancelled reads");
}

static awaitable<void> w6a_batch(tcp::socket& sock, std::uint64_t n) {
  char buf[64];
  for (std::uint64_t i = 0; i < n; ++i) {
    auto r = co_await (ready_branch(1) || sock.async_read_some(asio::buffer(buf), loser_token));
    if (r.index() != 0) fail("W6a", "the read returned data");
  }
}

static void run_w6a() {
  asio::io_context ioc(1);
  auto pair = tcp_pair(ioc);  // (not a structured binding: clang 14 cannot capture those)
  tcp::socket& sock = pair.first;
  tcp::socket& peer = pair.second;
  double ns = 0;
  asio::co_spawn(
      ioc,
      [&]() -> awaitable<void> {
        ns = co_await measure_ns_per_op([&](std::uint64_t n) { return w6a_batch(sock, n); });
        co_await check_socket_usable("W6a", sock, peer);
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  ioc.run();
  result("W6a", "ns/op", ns);
}

static awaitable<void> w6b_batch(tcp::socket& sock, std::uint64_t n) {
  auto ex = co_await asio::this_coro::executor;
  asio::cancellation_signal sig;
  char buf[64];
  for (std::uint64_t i = 0; i < n; ++i) {
    // Queued now, runs after this coroutine has suspended in the read, i.e. once the read has
    // been tried (EAGAIN) and parked with the epoll reactor.
    asio::post(ex, [&sig] { sig.emit(asio::cancellation_type::terminal); });
    auto [ec, got] = co_await sock.async_read_some(
        asio::buffer(buf), asio::bind_cancellation_slot(sig.slot(), asio::as_tuple(use_awaitable)));
    if (got != 0) fail("W6b", "the read returned data");
    if (ec != asio::error::operation_aborted) fail("W6b", "the read did not end operation_aborted");
  }
}

static void run_w6b() {
  asio::io_context ioc(1);
  auto pair = tcp_pair(ioc);  // (not a structured binding: clang 14 cannot capture those)
  tcp::socket& sock = pair.first;
  tcp::socket& peer = pair.second;
  double ns = 0;
  asio::co_spawn(
      ioc,
      [&]() -> awaitable<void> {
        ns = co_await measure_ns_per_op([&](std::uint64_t n) { return w6b_batch(sock, n); });
        co_await check_socket_usable("W6b", sock, peer);
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  ioc.run();
  result("W6b", "ns/op", ns);
}

// ---------------------------------------------------------------------------------------------
// W7 cancel_latency

namespace w7 {
constexpr int kSubtrees = 100, kLeavesPer = 100, kLeaves = kSubtrees * kLeavesPer;
constexpr int kPairs = 2'500;
using unix_socket = asio::local::stream_protocol::socket;

struct root_state {
  int started = 0, hooks = 0, data_reads = 0, live_subtrees = 0;
  clock_type::time_point all_ended;
};

struct subtree {
  std::array<asio::cancellation_signal, kLeavesPer> leaves;  // one signal per leaf
  int live = 0;
};

static awaitable<void> read_leaf(unix_socket& s, root_state& r) {
  char b[16];
  ++r.started;
  auto [ec, n] = co_await s.async_read_some(asio::buffer(b), asio::as_tuple(use_awaitable));
  if (n != 0) ++r.data_reads;
  if (ec == asio::error::operation_aborted) ++r.hooks;  // the cancellation hook
}

static awaitable<void> timer_leaf(root_state& r) {
  asio::steady_timer t(co_await asio::this_coro::executor, 1h);
  ++r.started;
  auto [ec] = co_await t.async_wait(asio::as_tuple(use_awaitable));
  if (ec == asio::error::operation_aborted) ++r.hooks;  // the cancellation hook
}

static double one_rep(asio::io_context& ioc, std::vector<unix_socket>& ends) {
  root_state r;
  auto tree = std::make_unique<std::array<subtree, kSubtrees>>();
  r.live_subtrees = kSubtrees;
  int next_end = 0;
  for (subtree& st : *tree) {
    st.live = kLeavesPer;
    for (int j = 0; j < kLeavesPer; ++j) {
      // The leaf's completion: the subtree joins its leaves, the root joins its subtrees.
      auto done = asio::bind_cancellation_slot(st.leaves[j].slot(), [&r, &st](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
        if (--st.live == 0 && --r.live_subtrees == 0) r.all_ended = clock_type::now();
      });
      if (j % 2 == 0)
        asio::co_spawn(ioc, read_leaf(ends[next_end++], r), std::move(done));
      else
        asio::co_spawn(ioc, timer_leaf(r), std::move(done));
    }
  }
  ioc.restart();
  ioc.poll();  // every leaf starts and blocks on its read or timer
  if (r.started != kLeaves || r.live_subtrees != kSubtrees) fail("W7", "not every leaf blocked");

  const auto t0 = clock_type::now();
  for (subtree& st : *tree)  // cancelling the root: a walk over the tree
    for (auto& sig : st.leaves) sig.emit(asio::cancellation_type::terminal);
  ioc.run();

  if (r.live_subtrees != 0) fail("W7", "not every leaf ended");
  if (r.hooks != kLeaves) fail("W7", "hook count != 10,000");
  if (r.data_reads != 0) fail("W7", "a read returned data");
  return std::chrono::duration<double, std::micro>(r.all_ended - t0).count();
}
}  // namespace w7

static void run_w7() {
  asio::io_context ioc(1);
  std::vector<w7::unix_socket> ends;
  ends.reserve(2 * w7::kPairs);
  for (int i = 0; i < w7::kPairs; ++i) {
    ends.emplace_back(ioc);
    ends.emplace_back(ioc);
    asio::local::connect_pair(ends[ends.size() - 2], ends.back());
  }
  std::vector<double> us;
  for (int rep = 0; rep < 3; ++rep) us.push_back(w7::one_rep(ioc, ends));
  result("W7", "us", median(us));
}

// ---------------------------------------------------------------------------------------------
// W10 cross_core_call and W11 cross_core_cancel: two io_contexts, each run() by its own thread,
// nothing pinned. The loop runs on ctx0; the children are co_spawn'ed on ctx1.

// Runs the awaitable `make(ctx1)` returns on ctx0 while a second thread runs ctx1; work guards keep
// both contexts running until the awaitable has finished. An exception escaping it is rethrown here.
template <class MakeAwaitable>
static void run_on_two_contexts(MakeAwaitable make) {
  asio::io_context ctx0(1), ctx1(1);
  auto guard0 = asio::make_work_guard(ctx0);
  auto guard1 = asio::make_work_guard(ctx1);
  std::exception_ptr error;
  asio::co_spawn(ctx0, make(ctx1), [&](std::exception_ptr e) {
    error = e;
    guard0.reset();
    guard1.reset();
  });
  std::thread thread0([&] { ctx0.run(); });
  std::thread thread1([&] { ctx1.run(); });
  thread0.join();
  thread1.join();
  if (error) std::rethrow_exception(error);
}

// W10: the child is W1's `child`, co_spawn'ed on ctx1; use_awaitable resumes the caller on ctx0.
static awaitable<void> w10_batch(asio::io_context& ctx1, std::uint64_t n) {
  std::int64_t sum = 0;
  for (int i = 0; i < static_cast<int>(n); ++i)
    sum += co_await asio::co_spawn(ctx1, child(i), use_awaitable);
  const auto N = static_cast<std::int64_t>(n);
  if (sum != N * (N - 1) / 2) fail("W10", "sum != N(N-1)/2");
}

static void run_w10() {
  double ns = 0;
  run_on_two_contexts([&](asio::io_context& ctx1) -> awaitable<void> {
    ns = co_await measure_ns_per_op([&ctx1](std::uint64_t n) { return w10_batch(ctx1, n); });
  });
  result("W10", "ns/op", ns);
}

// W11: per repetition a socketpair on ctx1 (opened before and closed after the timed span); the
// child reads one end on ctx1. The caller on ctx0 awaits the child, co_spawn'ed with its own
// signal bound (bind_cancellation_slot(sig.slot(), use_awaitable)), together with (operator&&) a
// coroutine on ctx0 that waits until the child is about to read, gives ctx1's thread 1 ms to
// register the read with its reactor, takes t0 and emits the signal on ctx0's thread. co_spawn's
// cancellation handler (the handler has an associated executor, ctx0's) dispatches the emit to
// the child's executor, ctx1, whose thread cancels the read (asio/impl/co_spawn.hpp). t1 is taken
// when the caller's await of the child has returned on ctx0.
namespace w11 {
constexpr int kReps = 1000;
using unix_socket = asio::local::stream_protocol::socket;

struct counters {
  std::atomic<int> hooks{0}, data_reads{0};
};

static awaitable<void> child(unix_socket& s, std::atomic<bool>& reading, counters& c) {
  char buf[64];
  reading = true;  // right before the read
  auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), asio::as_tuple(use_awaitable));
  if (n != 0) ++c.data_reads;
  if (ec == asio::error::operation_aborted) ++c.hooks;  // the cancellation hook
}

static awaitable<void> await_child(asio::io_context& ctx1, unix_socket& s, std::atomic<bool>& reading,
                                   counters& c, asio::cancellation_signal& sig,
                                   clock_type::time_point& t1) {
  co_await asio::co_spawn(ctx1, child(s, reading, c),
                          asio::bind_cancellation_slot(sig.slot(), use_awaitable));
  t1 = clock_type::now();
}

static awaitable<void> cancel_child(std::atomic<bool>& reading, asio::cancellation_signal& sig,
                                    clock_type::time_point& t0) {
  auto ex0 = co_await asio::this_coro::executor;
  while (!reading) co_await asio::post(ex0, use_awaitable);
  asio::steady_timer t(ex0, 1ms);  // ctx1's thread registers the read with its reactor
  co_await t.async_wait(use_awaitable);
  t0 = clock_type::now();
  sig.emit(asio::cancellation_type::terminal);
}

static awaitable<double> run(asio::io_context& ctx1) {
  counters c;
  // Every repetition's signal outlives the whole run: a signal owns the cancellation handler
  // co_spawn installs in its slot, which ctx1's thread may still be leaving when ctx0 resumes.
  auto signals = std::make_unique<asio::cancellation_signal[]>(kReps);
  std::vector<double> us;
  us.reserve(kReps);
  for (int rep = 0; rep < kReps; ++rep) {
    unix_socket a(ctx1), b(ctx1);
    asio::local::connect_pair(a, b);
    std::atomic<bool> reading{false};
    clock_type::time_point t0, t1;
    co_await (await_child(ctx1, a, reading, c, signals[rep], t1) &&
              cancel_child(reading, signals[rep], t0));
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  if (c.hooks != kReps) fail("W11", "hook count != 1,000");
  if (c.data_reads != 0) fail("W11", "a read returned data");
  co_return median(us);
}
}  // namespace w11

static void run_w11() {
  double us = 0;
  run_on_two_contexts([&](asio::io_context& ctx1) -> awaitable<void> { us = co_await w11::run(ctx1); });
  result("W11", "us", us);
}

// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// W12 bulk_read: a writer coroutine async_write()s 1 MiB chunks, a reader coroutine async_read()s
// them into a 1 MiB buffer on the other end of a loopback pair.

namespace w12 {
struct state {
  std::uint64_t sent = 0, received = 0;
  bool stop = false, writer_done = false;
  double mb_per_s = 0;
};

static awaitable<void> writer(tcp::socket& s, state& st) {
  std::vector<unsigned char> out(bulk_chunk::size);
  bulk_chunk::fill_pattern(out.data());
  while (!st.stop) {
    bulk_chunk::stamp(out.data(), st.sent);
    co_await asio::async_write(s, asio::buffer(out), use_awaitable);
    ++st.sent;
  }
  st.writer_done = true;
}

static awaitable<void> reader(tcp::socket& s, state& st) {
  std::vector<unsigned char> in(bulk_chunk::size);
  const auto start = clock_type::now();
  auto t0 = start;
  std::uint64_t c0 = 0;
  bool warm = true;
  while (!(st.writer_done && st.received == st.sent)) {
    co_await asio::async_read(s, asio::buffer(in), use_awaitable);
    if (!bulk_chunk::check(in.data(), st.received)) fail("W12", "a chunk arrived out of order or damaged");
    ++st.received;
    if (st.stop) continue;
    const auto now = clock_type::now();
    if (warm && now - start >= 200ms) {
      warm = false;
      t0 = now;
      c0 = st.received;
    } else if (!warm && now - t0 >= 1s) {
      st.mb_per_s = static_cast<double>((st.received - c0) * bulk_chunk::size) / 1e6 /
                    std::chrono::duration<double>(now - t0).count();
      st.stop = true;
    }
  }
}
}  // namespace w12

static void run_w12() {
  asio::io_context ioc(1);
  auto pair = tcp_pair(ioc);
  w12::state st;
  auto rethrow = [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  };
  asio::co_spawn(ioc, w12::reader(pair.first, st), rethrow);
  asio::co_spawn(ioc, w12::writer(pair.second, st), rethrow);
  ioc.run();
  if (st.mb_per_s <= 0) fail("W12", "no chunk in the timed window");
  result("W12", "MB/s", st.mb_per_s);
}

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
  if (w == "W1") run_w1();
  else if (w == "W2") run_w2();
  else if (w == "W3") run_w3();
  else if (w == "W8") run_w8();
  else if (w == "W9") run_w9();
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
  return 0;
}
