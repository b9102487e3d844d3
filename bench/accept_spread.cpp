// accept_spread: two ways to serve new connections on every core, measured alternately in one
// run (the choice behind http::server's every_core, docs/decisions.md "Serving on every core").
//
//   reuse_port  each core has its own listener on the same port (SO_REUSEPORT); the kernel picks
//               the core of each new connection, which then never leaves it.
//   handoff     core 0 owns the only listener; each accepted connection is released and handed
//               to the next core in turn (`on(core, ...)` adopting the descriptor there), the way
//               a single acceptor feeds worker threads.
//
// On every core, 16 client tasks loop: connect, send one byte, read its echo, close (an abortive
// close, SO_LINGER 0, so the loopback does not fill with TIME_WAIT); the server side reads the
// byte, writes it back and closes. Reported: connections per second over all cores (0.2 s of
// warm-up, then 1 s), per mode, three rounds alternating, medians, and reuse_port/handoff.
// Both ends live on the same cores: on a 2-core machine this measures what the server side costs
// beside its own load, not a separate client machine.
//
//   quell_bench_accept [rounds]
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "quell/quell.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
constexpr int kClientsPerCore = 16;

struct shared_state {
  quell::address at;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> connections{0};
  std::atomic<std::uint64_t> failures{0};
  std::atomic<unsigned> cores_done{0};
  quell::shared_event clients_done;  // every core's clients have stopped: the servers may go
};

quell::task<void> serve(quell::tcp_stream s) {
  char b = 0;
  try {
    if (co_await s.read_some(std::span<char>(&b, 1)) == 1) co_await s.write_all(std::string_view(&b, 1));
  } catch (const std::system_error&) {
  }
  co_await s.close();
}

quell::task<void> client(shared_state& st) {
  char out = 'x', in = 0;
  while (!st.stop.load(std::memory_order_relaxed)) {
    try {
      quell::tcp_stream c = co_await quell::tcp_stream::connect(st.at);
      const linger abort_on_close{1, 0};
      ::setsockopt(c.native_handle(), SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close);
      co_await c.write_all(std::string_view(&out, 1));
      co_await c.read_exact(std::span<char>(&in, 1));
      co_await c.close();
      if (in != out) std::abort();
      st.connections.fetch_add(1, std::memory_order_relaxed);
    } catch (const std::exception&) {  // refused, reset, or closed without the echo
      st.failures.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

quell::task<void> clients(shared_state& st) {
  auto body = [&](quell::scope& s) -> quell::task<void> {
    for (int i = 0; i < kClientsPerCore; ++i) s.spawn(client(st));
    co_return;
  };
  co_await quell::with_scope(body);
}

quell::task<void> accept_here(quell::tcp_listener& l) {
  auto body = [&](quell::scope& s) -> quell::task<void> {
    for (;;) s.spawn(serve(co_await l.accept()));
  };
  co_await quell::with_scope(body);
}

quell::task<void> accept_and_hand_off(quell::tcp_listener& l) {
  const unsigned n = quell::core_count();
  unsigned next = 0;
  auto body = [&](quell::scope& s) -> quell::task<void> {
    for (;;) {
      quell::tcp_stream conn = co_await l.accept();
      const unsigned to = next++ % n;
      if (to == quell::this_core()) {
        s.spawn(serve(std::move(conn)));
        continue;
      }
      const int fd = conn.release();
      auto adopt = [fd] { return serve(quell::tcp_stream(fd)); };
      s.spawn(quell::on(to, adopt));
    }
  };
  co_await quell::with_scope(body);
}

// One measurement: connections per second over every core.
double measure(quell::runtime& rt, bool reuse_port) {
  shared_state st;
  quell::listen_options lo;
  lo.reuse_port = reuse_port;
  quell::tcp_listener home = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0), lo);
  st.at = home.local_address();
  auto per_core = [&]() -> quell::task<void> {
    quell::tcp_listener own;
    quell::tcp_listener* l = nullptr;
    if (quell::this_core() == 0) {
      l = &home;
    } else if (reuse_port) {
      own = quell::tcp_listener::bind(st.at, lo);
      l = &own;
    }
    auto body = [&](quell::scope& s) -> quell::task<void> {
      if (l) s.spawn(reuse_port ? accept_here(*l) : accept_and_hand_off(*l));
      co_await clients(st);
      if (st.cores_done.fetch_add(1) + 1 == quell::core_count()) st.clients_done.set();
      co_await st.clients_done.wait();
      s.cancel();  // the accept loops
    };
    co_await quell::with_scope(body);
    if (own.is_open()) co_await own.close();
  };
  auto root = [&]() -> quell::task<double> {
    double per_s = 0;
    auto body = [&](quell::scope& s) -> quell::task<void> {
      auto make = [&] { return per_core(); };
      s.spawn([&] { return quell::on_each_core(make); });
      co_await quell::sleep_for(std::chrono::milliseconds(200));
      const std::uint64_t c0 = st.connections.load();
      const auto t0 = clock_type::now();
      co_await quell::sleep_for(std::chrono::seconds(1));
      const std::uint64_t c1 = st.connections.load();
      per_s = static_cast<double>(c1 - c0) / std::chrono::duration<double>(clock_type::now() - t0).count();
      st.stop = true;
    };
    co_await quell::with_scope(body);
    co_await home.close();
    co_return per_s;
  };
  const double r = rt.run(root());
  if (st.failures.load() > 0) std::fprintf(stderr, "accept_spread: %llu failed connections\n",
                                           static_cast<unsigned long long>(st.failures.load()));
  return r;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 3;
  quell::runtime rt;
  std::vector<double> reuse, handoff;
  for (int r = 0; r < rounds; ++r) {
    if (r % 2 == 0) {
      reuse.push_back(measure(rt, true));
      handoff.push_back(measure(rt, false));
    } else {
      handoff.push_back(measure(rt, false));
      reuse.push_back(measure(rt, true));
    }
    std::printf("round %d: reuse_port %.0f conn/s, handoff %.0f conn/s\n", r + 1, reuse.back(), handoff.back());
  }
  const double a = median(reuse), b = median(handoff);
  std::printf("%u cores, %d client tasks per core, medians of %d rounds: reuse_port %.0f conn/s, handoff %.0f "
              "conn/s, reuse_port/handoff %.2fx\n",
              rt.size(), kClientsPerCore, rounds, a, b, a / b);
}
