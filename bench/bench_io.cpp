// W4 timeout_fast_op, W5 tcp_echo and W6 cancel_inflight_read, each beside a reference measured in
// the same run (the op alone, or the same work written directly against liburing). Prints quell's
// figure, the reference and the ratio; targets are information only (the exit code is 0).
//
// The quell benchmarks keep Google Benchmark's `for (auto _ : s)` loop inside a coroutine, so the
// executor, its io_uring and the sockets are set up once per run, outside the timed region.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include "quell/quell.hpp"

using namespace std::chrono_literals;

namespace {

constexpr int batch = 1000;        // operations per benchmark iteration (W4, W6a)
constexpr int cancel_batch = 100;  // kernel round trips per benchmark iteration (W6b)
constexpr int connections = 50;    // W5
constexpr int msg_size = 64;       // W5
constexpr int rounds = 200;        // W5: round trips per connection per benchmark iteration
constexpr int echo_iterations = 25;

quell::detail::reactor& io() { return quell::detail::reactor::current(); }

// io_uring setup flags of quell's reactor and of the raw references' rings (printed at the end).
unsigned quell_ring_flags = ~0u, raw_ring_flags = ~0u;

// ---- W4: a 1 s timeout around an operation that completes at once ----
//
// quell::timeout arms a timer (a heap insertion, one clock read) and disarms it (a removal) when
// the operation finishes first.
quell::task<int> q_child(int i) { co_return i; }

quell::task<> w4_ready_body(benchmark::State& s, bool with_timeout) {
  long sum = 0, expect = 0;
  for (auto _ : s) {
    for (int i = 0; i < batch; ++i) {
      if (with_timeout) {
        sum += co_await quell::timeout(1s, quell::ready(i));
      } else {
        sum += co_await quell::ready(i);
      }
    }
    expect += long{batch} * (batch - 1) / 2;
  }
  if (sum != expect) s.SkipWithError("wrong sum: the timeout fired although the operation completed at once");
}
quell::task<> w4_task_body(benchmark::State& s, bool with_timeout) {
  long sum = 0, expect = 0;
  for (auto _ : s) {
    for (int i = 0; i < batch; ++i) {
      if (with_timeout) {
        sum += co_await quell::timeout(1s, q_child(i));
      } else {
        sum += co_await q_child(i);
      }
    }
    expect += long{batch} * (batch - 1) / 2;
  }
  if (sum != expect) s.SkipWithError("wrong sum: the timeout fired although the operation completed at once");
}

void W4_timeout_fast_op_quell(benchmark::State& s) { quell::block_on(w4_ready_body(s, true)); }
void W4_fast_op_alone_quell(benchmark::State& s) { quell::block_on(w4_ready_body(s, false)); }
void W4_timeout_task_op_quell(benchmark::State& s) { quell::block_on(w4_task_body(s, true)); }
void W4_task_op_alone_quell(benchmark::State& s) { quell::block_on(w4_task_body(s, false)); }

// ---- helpers for raw sockets and rings ----

[[noreturn]] void die(const char* what) { throw std::system_error(errno, std::system_category(), what); }

// The ring as quell's reactor makes it: the same setup flags, newest first.
unsigned init_ring(io_uring* r, unsigned entries) {
  const unsigned attempts[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, IORING_SETUP_COOP_TASKRUN, 0};
  int err = 0;
  for (unsigned f : attempts) {
    io_uring_params p;
    std::memset(&p, 0, sizeof p);
    p.flags = f;
    err = io_uring_queue_init_params(entries, r, &p);
    if (err == 0) return raw_ring_flags = f;
    if (err != -EINVAL) break;
  }
  throw std::system_error(-err, std::system_category(), "io_uring_queue_init_params");
}

struct raw_sockets {
  int listener = -1;
  std::vector<int> client, server;
  explicit raw_sockets(int n) {
    listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0) die("socket");
    int one = 1;
    ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) die("bind");
    if (::listen(listener, 512) < 0) die("listen");
    socklen_t len = sizeof a;
    ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
    for (int i = 0; i < n; ++i) {
      const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (c < 0) die("socket");
      if (::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) die("connect");
      ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // as quell's connect does
      const int sv = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (sv < 0) die("accept");
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

// Message `n` of connection `c`: 64 bytes that differ per connection and per round.
void fill_message(char* m, int c, long n) {
  for (int k = 0; k < msg_size; ++k) m[k] = static_cast<char>('a' + (c * 7 + n * 13 + k) % 26);
}

// ---- W5: TCP echo over 127.0.0.1, 50 connections, 64-byte messages ----

quell::task<> q_echo_server(quell::tcp_stream c) {
  char buf[msg_size];
  for (;;) {
    const std::size_t n = co_await c.read_some(buf);
    if (n == 0) break;
    co_await c.write_all(std::string_view(buf, n));
  }
  co_await c.close();
}

quell::task<long> q_echo_client(quell::tcp_stream& c, int id, long first, int n) {
  char msg[msg_size], got[msg_size];
  long ok = 0;
  for (int r = 0; r < n; ++r) {
    fill_message(msg, id, first + r);
    co_await c.write_all(std::string_view(msg, msg_size));
    co_await c.read_exact(got);
    if (std::memcmp(msg, got, msg_size) == 0) ++ok;
  }
  co_return ok;
}

quell::task<> q_echo_servers(std::vector<quell::tcp_stream>& servers) {
  std::vector<quell::task<>> handlers;
  for (auto& sv : servers) handlers.push_back(q_echo_server(std::move(sv)));
  co_await quell::join(std::move(handlers));
}

quell::task<> q_echo_clients(benchmark::State& s, std::vector<quell::tcp_stream>& clients, long& echoed) {
  long round = 0;
  const std::uint64_t enters0 = io().enters();
  for (auto _ : s) {
    std::vector<quell::task<long>> cs;
    for (int i = 0; i < connections; ++i) cs.push_back(q_echo_client(clients[i], i, round, rounds));
    for (long ok : co_await quell::join(std::move(cs))) echoed += ok;
    round += rounds;
  }
  s.counters["enters/msg"] = double(io().enters() - enters0) / double(s.iterations() * connections * rounds);
  for (auto& c : clients) c.shutdown();
  for (auto& c : clients) co_await c.close();
}

quell::task<> w5_body(benchmark::State& s, long& echoed) {
  auto l = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
  std::vector<quell::tcp_stream> clients, servers;
  for (int i = 0; i < connections; ++i) {
    auto [sv, cl] = co_await quell::join(l.accept(), quell::tcp_stream::connect(l.local_address()));
    servers.push_back(std::move(sv));
    clients.push_back(std::move(cl));
  }
  co_await quell::join(q_echo_servers(servers), q_echo_clients(s, clients, echoed));
  co_await l.close();
}

void W5_tcp_echo_quell(benchmark::State& s) {
  long echoed = 0;
  quell::block_on(w5_body(s, echoed));
  if (echoed != s.iterations() * connections * rounds) s.SkipWithError("an echo came back different");
  s.SetItemsProcessed(s.iterations() * connections * rounds);
}

// The raw version: one ring, a completion loop, user_data = connection << 2 | operation.
enum raw_op : std::uint64_t { client_send, client_recv, server_recv, server_send };

struct raw_conn {
  char out[msg_size], in[msg_size], sbuf[msg_size];
  int in_got = 0;             // client: bytes of the echo received so far
  int out_sent = 0;           // client: bytes of the message sent so far
  int s_len = 0, s_sent = 0;  // server: bytes received, bytes echoed back so far
  long next = 0;              // client: next message number
  int left = 0;               // client: round trips left in this iteration
};

void W5_tcp_echo_raw(benchmark::State& s) {
  raw_sockets socks(connections);
  io_uring ring;
  init_ring(&ring, 256);
  std::vector<raw_conn> conns(connections);
  auto sqe = [&]() {
    io_uring_sqe* e = io_uring_get_sqe(&ring);
    if (!e) {
      io_uring_submit(&ring);
      e = io_uring_get_sqe(&ring);
    }
    return e;
  };
  auto send_client = [&](int i) {
    raw_conn& c = conns[i];
    io_uring_sqe* e = sqe();
    io_uring_prep_send(e, socks.client[i], c.out + c.out_sent, msg_size - c.out_sent, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(e, std::uint64_t(i) << 2 | client_send);
  };
  auto recv_client = [&](int i) {
    raw_conn& c = conns[i];
    io_uring_sqe* e = sqe();
    io_uring_prep_recv(e, socks.client[i], c.in + c.in_got, msg_size - c.in_got, 0);
    io_uring_sqe_set_data64(e, std::uint64_t(i) << 2 | client_recv);
  };
  auto recv_server = [&](int i) {
    io_uring_sqe* e = sqe();
    io_uring_prep_recv(e, socks.server[i], conns[i].sbuf, msg_size, 0);
    io_uring_sqe_set_data64(e, std::uint64_t(i) << 2 | server_recv);
  };
  auto send_server = [&](int i) {
    raw_conn& c = conns[i];
    io_uring_sqe* e = sqe();
    io_uring_prep_send(e, socks.server[i], c.sbuf + c.s_sent, c.s_len - c.s_sent, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(e, std::uint64_t(i) << 2 | server_send);
  };
  auto start_message = [&](int i) {
    raw_conn& c = conns[i];
    fill_message(c.out, i, c.next);
    c.out_sent = 0;
    c.in_got = 0;
    send_client(i);
  };
  for (int i = 0; i < connections; ++i) recv_server(i);  // the servers' reads stay posted throughout
  long echoed = 0, enters = 0;
  const char* error = nullptr;
  for (auto _ : s) {
    int active = connections;
    for (int i = 0; i < connections; ++i) {
      conns[i].left = rounds;
      start_message(i);
    }
    while (active > 0 && !error) {
      io_uring_submit_and_wait(&ring, 1);
      ++enters;
      unsigned head, seen = 0;
      io_uring_cqe* cqe;
      io_uring_for_each_cqe(&ring, head, cqe) {
        ++seen;
        const int i = static_cast<int>(cqe->user_data >> 2);
        const int res = cqe->res;
        raw_conn& c = conns[i];
        if (res <= 0) {
          error = "a raw send or recv failed";
          continue;
        }
        switch (cqe->user_data & 3) {
          case client_send:
            c.out_sent += res;
            if (c.out_sent < msg_size) {
              send_client(i);
            } else {
              recv_client(i);
            }
            break;
          case client_recv:
            c.in_got += res;
            if (c.in_got < msg_size) {
              recv_client(i);
              break;
            }
            if (std::memcmp(c.in, c.out, msg_size) == 0) ++echoed;
            ++c.next;
            if (--c.left > 0) {
              start_message(i);
            } else {
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
  }
  io_uring_queue_exit(&ring);  // cancels the servers' reads
  s.counters["enters/msg"] = double(enters) / double(s.iterations() * connections * rounds);
  if (error) {
    s.SkipWithError(error);
  } else if (echoed != s.iterations() * connections * rounds) {
    s.SkipWithError("an echo came back different");
  }
  s.SetItemsProcessed(s.iterations() * connections * rounds);
}

// ---- W6: cancel a read on an idle connection ----

quell::task<std::tuple<quell::tcp_stream, quell::tcp_stream>> connected_pair(quell::tcp_listener& l) {
  auto [server, client] = co_await quell::join(l.accept(), quell::tcp_stream::connect(l.local_address()));
  co_return std::tuple<quell::tcp_stream, quell::tcp_stream>(std::move(server), std::move(client));
}

// (a) same turn: the read is queued, loses to a ready value and is unlinked before any SQE exists.
quell::task<> w6a_body(benchmark::State& s) {
  auto l = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
  auto [server, client] = co_await connected_pair(l);
  char buf[64];
  long nonzero = 0;
  const std::uint64_t enters0 = io().enters();
  for (auto _ : s) {
    for (int i = 0; i < batch; ++i) {
      nonzero += static_cast<long>(co_await quell::race(server.read_some(buf), quell::ready(std::size_t{0})));
    }
  }
  const std::uint64_t enters = io().enters() - enters0;
  if (nonzero != 0 || server.buffered() != 0) {
    s.SkipWithError("the cancelled read delivered data");
  } else if (enters != 0) {
    s.SkipWithError("same-turn cancel entered the kernel");
  } else if (io().in_flight() != 0) {
    s.SkipWithError("a cancelled read is still in flight");
  }
  co_await client.close();
  co_await server.close();
  co_await l.close();
}
void W6a_cancel_same_turn_quell(benchmark::State& s) { quell::block_on(w6a_body(s)); }

// (b) in the kernel: the read is submitted at the end of the first turn; the other branch wins in
// the next turn, so the read is cancelled with an ASYNC_CANCEL and race waits for its final CQE.
quell::task<std::size_t> after_one_turn() {
  co_await quell::yield();
  co_return 0;
}
quell::task<> w6b_body(benchmark::State& s) {
  auto l = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
  auto [server, client] = co_await connected_pair(l);
  char buf[64];
  long nonzero = 0, too_few = 0;
  const std::uint64_t enters0 = io().enters();
  for (auto _ : s) {
    for (int i = 0; i < cancel_batch; ++i) {
      const std::uint64_t e0 = io().enters();
      nonzero += static_cast<long>(co_await quell::race(server.read_some(buf), after_one_turn()));
      // one enter submits the read, one submits the cancel and waits for the read's last CQE
      if (io().enters() - e0 < 2) ++too_few;
    }
  }
  quell_ring_flags = io().setup_flags();
  const double per_op = double(io().enters() - enters0) / double(s.iterations() * cancel_batch);
  s.counters["enters/op"] = per_op;
  if (nonzero != 0 || server.buffered() != 0) {
    s.SkipWithError("the cancelled read delivered data");
  } else if (too_few != 0) {
    s.SkipWithError("a read was cancelled without reaching the kernel");
  } else if (io().in_flight() != 0) {
    s.SkipWithError("a cancelled read is still in flight");
  }
  co_await client.close();
  co_await server.close();
  co_await l.close();
}
void W6b_cancel_in_kernel_quell(benchmark::State& s) { quell::block_on(w6b_body(s)); }

// The raw round trip: submit a recv on the idle socket, then an ASYNC_CANCEL for it; wait for both.
void W6b_cancel_in_kernel_raw(benchmark::State& s) {
  raw_sockets socks(1);
  io_uring ring;
  init_ring(&ring, 256);
  char buf[64];
  long bad = 0;
  std::uint64_t tag = 0;
  for (auto _ : s) {
    for (int i = 0; i < cancel_batch; ++i) {
      const std::uint64_t ud = ++tag << 1;
      io_uring_sqe* e = io_uring_get_sqe(&ring);
      io_uring_prep_recv(e, socks.server[0], buf, sizeof buf, 0);
      io_uring_sqe_set_data64(e, ud);
      io_uring_submit(&ring);
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
          if (cqe->user_data == ud && cqe->res != -ECANCELED) ++bad;
          if (cqe->user_data == (ud | 1) && cqe->res != 0) ++bad;
        }
        io_uring_cq_advance(&ring, seen);
        if (need > 0) io_uring_submit_and_wait(&ring, 1);  // rarely: the two CQEs came apart
      }
    }
  }
  io_uring_queue_exit(&ring);
  if (bad != 0) s.SkipWithError("the raw recv was not cancelled in the kernel");
}

BENCHMARK(W4_fast_op_alone_quell);
BENCHMARK(W4_timeout_fast_op_quell);
BENCHMARK(W4_task_op_alone_quell);
BENCHMARK(W4_timeout_task_op_quell);
BENCHMARK(W5_tcp_echo_raw)->Iterations(echo_iterations)->UseRealTime();
BENCHMARK(W5_tcp_echo_quell)->Iterations(echo_iterations)->UseRealTime();
BENCHMARK(W6a_cancel_same_turn_quell);
BENCHMARK(W6b_cancel_in_kernel_raw)->UseRealTime();
BENCHMARK(W6b_cancel_in_kernel_quell)->UseRealTime();

// Remembers each benchmark's real time per iteration (ns), so main can print ratios.
class recorder : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, double> ns_per_iter;
  std::map<std::string, std::string> errors;
  recorder() : ConsoleReporter(isatty(STDOUT_FILENO) ? OO_ColorTabular : OO_Tabular) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.run_type != Run::RT_Iteration) continue;
      if (r.error_occurred) {
        errors[r.benchmark_name()] = r.error_message;
        continue;
      }
      ns_per_iter[r.benchmark_name()] = r.GetAdjustedRealTime();  // default unit: ns
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  recorder rep;
  benchmark::RunSpecifiedBenchmarks(&rep);
  // ns per operation, or -1 if the benchmark did not run (filtered out or failed)
  auto per_op = [&](const std::string& prefix, double ops) {
    for (const auto& [name, ns] : rep.ns_per_iter)
      if (name.rfind(prefix, 0) == 0) return ns / ops;
    return -1.0;
  };
  const double w4 = per_op("W4_timeout_fast_op_quell", batch);
  const double w4ref = per_op("W4_fast_op_alone_quell", batch);
  const double w4t = per_op("W4_timeout_task_op_quell", batch);
  const double w4tref = per_op("W4_task_op_alone_quell", batch);
  const double msgs = double(connections) * rounds;
  const double w5 = per_op("W5_tcp_echo_quell", msgs);
  const double w5raw = per_op("W5_tcp_echo_raw", msgs);
  const double w6a = per_op("W6a_cancel_same_turn_quell", batch);
  const double w6b = per_op("W6b_cancel_in_kernel_quell", cancel_batch);
  const double w6braw = per_op("W6b_cancel_in_kernel_raw", cancel_batch);

  auto have = [](double a) { return a > 0; };
  auto verdict = [](bool ok) { return ok ? "PASS" : "MISS"; };
  std::printf("\n%-30s %12s %12s %8s  %-18s %s\n", "workload", "quell", "reference", "ratio", "target", "");
  if (have(w4) && have(w4ref)) {
    std::printf("%-30s %9.2f ns %9.2f ns %7.2fx  %-18s %s\n", "W4 timeout_fast_op (ready)", w4, w4ref, w4 / w4ref,
                "<= 60 ns", verdict(w4 <= 60.0));
  }
  if (have(w4t) && have(w4tref)) {
    std::printf("%-30s %9.2f ns %9.2f ns %7.2fx  %-18s %s\n", "W4 timeout_fast_op (task)", w4t, w4tref, w4t / w4tref,
                "(information)", "");
  }
  if (have(w5) && have(w5raw)) {
    const double q = 1e9 / w5, r = 1e9 / w5raw;  // messages per second
    std::printf("%-30s %7.0f k/s %7.0f k/s %7.2fx  %-18s %s\n", "W5 tcp_echo (msgs/s)", q / 1e3, r / 1e3, q / r,
                ">= 1.0x raw", verdict(q / r >= 1.0));
  }
  if (have(w6a)) {
    std::printf("%-30s %9.2f ns %12s %8s  %-18s %s\n", "W6a cancel read, same turn", w6a, "-", "-",
                "<= 50 ns, 0 enters", verdict(w6a <= 50.0));
  }
  if (have(w6b) && have(w6braw)) {
    std::printf("%-30s %9.0f ns %9.0f ns %7.2fx  %-18s %s\n", "W6b cancel read, in kernel", w6b, w6braw, w6b / w6braw,
                "<= 1.1x raw", verdict(w6b / w6braw <= 1.1));
  }
  for (const auto& [name, msg] : rep.errors) std::printf("SKIPPED %s: %s\n", name.c_str(), msg.c_str());
  std::printf(
      "references: W4 the same loop without the timeout; W5 and W6b hand-written liburing on a ring with\n"
      "quell's setup flags (W5: one ring, 50+50 sockets, submit_and_wait batching; W6b: submit recv, then\n"
      "ASYNC_CANCEL, wait for both CQEs).\n");
  std::printf("io_uring setup flags: quell 0x%x, raw 0x%x\n", quell_ring_flags, raw_ring_flags);
  return 0;
}
