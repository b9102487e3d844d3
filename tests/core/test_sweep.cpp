// cancel_sweep applied to the seed scenarios, scopes, joins, task groups and the synchronization
// primitives: every run cancelled at every suspension point, gracefully and forcibly, must leave
// nothing behind. One deliberately broken scenario shows that the sweep catches a leak.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "quell/quell.hpp"
#include "quell/testing.hpp"
#include "support/log.hpp"

using namespace std::chrono_literals;
using quell::on_cancel;
using quell::sleep_for;
using quell::task;
using quell::testing::cancel_sweep;
using quell::testing::ledger;
using quell::testing::sweep_point;
using ended = quell::testing::sweep_point::ended;

namespace {

// How much each sweep covered, in the test log (the closing notes quote it).
void print(const char* what, const quell::testing::sweep_report& r) {
  std::printf("[ sweep    ] %s: %llu suspension points, %llu completion windows, %llu runs\n", what,
              static_cast<unsigned long long>(r.points), static_cast<unsigned long long>(r.completions),
              static_cast<unsigned long long>(r.runs));
}

// The gateway pattern: a permit per request, held until the request's async cleanup (telling the
// backend to stop, waiting for its acknowledgement) has finished.
struct gateway {
  quell::semaphore permits{2};
  ledger jobs;  // a job is released when its cleanup starts: exactly once
  ledger acks;  // a cleanup's wait for the acknowledgement ends with its frame (finished or forced)

  void check() const {
    jobs.expect_balanced();
    acks.expect_balanced();
    if (permits.available() != 2) throw std::logic_error("a permit was lost");
  }

  task<int> request(std::string name, quell::duration work, bool fails) {
    quell::permit p = co_await permits.acquire();
    jobs.acquire(name);
    auto stop_job = [this, name, p = std::move(p)]() mutable -> task<> {  // owns the permit
      jobs.release(name);
      ledger::hold waiting(acks, name);
      co_await sleep_for(3ms);  // the backend's acknowledgement
    };
    co_await quell::defer(std::move(stop_job));
    co_await sleep_for(work);
    if (fails) throw std::runtime_error(name + " failed");
    co_return 1;
  }
};

}  // namespace

TEST(Sweep, AScopeOfRequestsHoldingPermitsUntilTheirAsyncCleanupLeavesNothingBehindWhereverItIsCancelled) {
  std::unique_ptr<gateway> g;
  auto report = cancel_sweep(
      [&](quell::virtual_clock&) -> task<> {
        g = std::make_unique<gateway>();
        return [](gateway& gw) -> task<> {
          co_await quell::with_scope([&](quell::scope& s) -> task<> {
            s.spawn(gw.request("a", 10ms, false));
            s.spawn(gw.request("b", 20ms, false));
            s.spawn(gw.request("c", 5ms, true));
            co_return;
          });
        }(*g);
      },
      [&](const sweep_point& p) {
        g->check();
        if (p.at == 0 && p.outcome != ended::error)
          throw std::logic_error("the reference run should fail with c's error");
      });
  EXPECT_GT(report.points, 5u);
  EXPECT_GT(report.completions, 5u);
  EXPECT_EQ(report.runs, 1 + 2 * report.points + 2 * report.completions);
  print("scope of requests", report);
}

TEST(Sweep, JoinOfThreeWithAsyncCleanupsIsBalancedAtEveryCancellationPoint) {
  std::unique_ptr<gateway> g;
  auto report = cancel_sweep(
      [&](quell::virtual_clock&) -> task<> {
        g = std::make_unique<gateway>();
        return [](gateway& gw) -> task<> {
          auto r = co_await quell::join(gw.request("a", 1ms, false), gw.request("b", 2ms, false),
                                        gw.request("c", 3ms, false));
          (void)r;
        }(*g);
      },
      [&](const sweep_point&) { g->check(); });
  EXPECT_GT(report.points, 3u);
  print("join of three", report);
}

TEST(Sweep, TheCancelDuringCancellationSeedRunsEveryStartedHookToItsEnd) {
  struct state {
    ledger hooks;
    bool done = false;
  };
  std::unique_ptr<state> st;
  auto report = cancel_sweep(
      [&](quell::virtual_clock&) -> task<> {
        st = std::make_unique<state>();
        return [](state& s) -> task<> {
          auto slow_hook = [&s]() -> task<> {
            ledger::hold running(s.hooks, "b hook");  // a second run would be reported
            co_await sleep_for(5ms);
          };
          auto race_hook = [&s]() -> task<> {
            ledger::hold running(s.hooks, "race hook");
            co_await quell::yield();
          };
          auto a = []() -> task<int> {
            co_await sleep_for(10ms);
            co_return 42;
          };
          co_await on_cancel(quell::race(a(), on_cancel(quell::pending<int>(), slow_hook)), race_hook);
        }(*st);
      },
      [&](const sweep_point&) { st->hooks.expect_balanced(); });
  print("seed 4", report);
}

TEST(Sweep, ATaskGroupClosedWithCancelAndJoinLeavesNothingBehind) {
  struct server {
    ledger conns;
    quell::task_group group{};
    task<> serve(std::string name) {
      conns.acquire(name);
      auto goodbye = [this, name]() -> task<> {
        conns.release(name);
        co_await sleep_for(1ms);
      };
      co_await quell::defer(goodbye);
      co_await sleep_for(1h);
    }
  };
  std::unique_ptr<server> srv;
  auto report = cancel_sweep(
      [&](quell::virtual_clock&) -> task<> {
        srv = std::make_unique<server>();
        return [](server& s) -> task<> {
          // The group is closed on every exit, cancellation included: as an async cleanup.
          auto close = [&s]() -> task<> {
            co_await s.group.cancel_and_join(quell::cancel_reason(quell::cancel_kind::shutdown));
          };
          co_await quell::defer(close);
          s.group.spawn(s.serve("x"));
          s.group.spawn(s.serve("y"));
          co_await sleep_for(10ms);
        }(*srv);
      },
      [&](const sweep_point&) {
        srv->conns.expect_balanced();
        if (srv->group.running() != 0) throw std::logic_error("a connection task is still running");
      });
  print("task group", report);
}

TEST(Sweep, AChannelLosesNoValueWhereverItsProducerAndConsumerAreCancelled) {
  struct state {
    quell::channel<int> ch{2};
    int sent = 0;
    int received = 0;
  };
  std::unique_ptr<state> st;
  auto report = cancel_sweep(
      [&](quell::virtual_clock&) -> task<> {
        st = std::make_unique<state>();
        return [](state& s) -> task<> {
          auto producer = [&s]() -> task<> {
            for (int i = 0; i < 6; ++i) {
              int v = i;
              co_await s.ch.send(v);
              ++s.sent;
              co_await sleep_for(1ms);
            }
          };
          auto consumer = [&s]() -> task<> {
            for (;;) {
              auto v = co_await quell::move_on_after(3ms, s.ch.receive());
              if (!v) continue;
              if (!*v) co_return;
              ++s.received;
            }
          };
          co_await quell::race(producer(), consumer());
        }(*st);
      },
      [&](const sweep_point&) {
        const int left = static_cast<int>(st->ch.size());
        if (st->received + left != st->sent) {
          throw std::logic_error("sent " + std::to_string(st->sent) + ", received " + std::to_string(st->received) +
                                 ", left in the channel " + std::to_string(left));
        }
      });
  print("channel", report);
}

TEST(Sweep, DeadlinesShieldsAndDeferTogetherRunEachCleanupExactlyOnce) {
  std::unique_ptr<ledger> l;
  auto report = cancel_sweep(
      [&](quell::virtual_clock&) -> task<> {
        l = std::make_unique<ledger>();
        return [](ledger& lg) -> task<> {
          auto inner = [&lg]() -> task<> {
            lg.acquire("inner");
            auto release = [&lg]() -> task<> {
              lg.release("inner");
              ledger::hold flushing(lg, "flush");
              co_await quell::shield(sleep_for(2ms));
            };
            co_await quell::defer(release, 5ms);
            co_await quell::shield(sleep_for(5ms), 3ms);
            co_await sleep_for(1h);
          };
          co_await quell::move_on_after(10ms, inner());
          co_await quell::timeout(1s, sleep_for(1ms));
        }(*l);
      },
      [&](const sweep_point&) { l->expect_balanced(); });
  print("deadlines+shields+defer", report);
}

TEST(Sweep, ASweepCatchesCleanupWrittenAsPlainCodeAfterACoAwait) {
  std::unique_ptr<ledger> l;
  auto sweep = [&] {
    cancel_sweep(
        [&](quell::virtual_clock&) -> task<> {
          l = std::make_unique<ledger>();
          return [](ledger& lg) -> task<> {
            lg.acquire("connection");
            co_await sleep_for(1ms);  // cancelled here, the line below never runs
            lg.release("connection");
          }(*l);
        },
        [&](const sweep_point&) { l->expect_balanced(); });
  };
  try {
    sweep();
    FAIL() << "the sweep should have found the leak";
  } catch (const quell::testing::sweep_failure& e) {
    EXPECT_NE(std::string(e.what()).find("graceful cancel at suspension point 1 of 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("still held: connection"), std::string::npos) << e.what();
  }
}

TEST(Sweep, SemaphoreWaitersCancelledAnywhereTakeNothingAndLoseNothing) {
  struct state {
    quell::semaphore sem{2};
    ledger held;
    int max_in_use = 0, in_use = 0;
  };
  std::unique_ptr<state> st;
  auto report = cancel_sweep(
      [&](quell::virtual_clock&) -> task<> {
        st = std::make_unique<state>();
        return [](state& s) -> task<> {
          auto worker = [&s](int id, quell::duration hold_for) -> task<> {
            quell::permit p = co_await s.sem.acquire();
            ledger::hold h(s.held, "worker " + std::to_string(id));
            s.max_in_use = std::max(s.max_in_use, ++s.in_use);
            auto done = [&s] { --s.in_use; };
            co_await quell::on_cancel(sleep_for(hold_for), done);
            --s.in_use;
          };
          co_await quell::join(worker(1, 3ms), worker(2, 5ms), worker(3, 1ms), worker(4, 2ms),
                               quell::move_on_after(4ms, worker(5, 10ms)));
        }(*st);
      },
      [&](const sweep_point&) {
        st->held.expect_balanced();
        if (st->sem.available() != 2) throw std::logic_error("permits lost: " + std::to_string(st->sem.available()));
        if (st->max_in_use > 2) throw std::logic_error("more holders than permits");
      });
  print("semaphore", report);
}

TEST(Sweep, TheReferenceScenariosWithHooksRunEachStartedHookExactlyOnce) {
  // Scenarios 3, 5, 6, 7 and 10 of the design, with every hook recorded in a ledger.
  std::unique_ptr<ledger> l;
  using scenario = std::function<task<>(ledger&)>;
  const std::vector<std::pair<const char*, scenario>> scenarios = {
      {"3: race with a cancelled pending branch",
       [](ledger& lg) -> task<> {
         auto hook = [&lg]() -> task<> {
           ledger::hold h(lg, "a hook");
           co_return;
         };
         (void)co_await quell::race(on_cancel(quell::pending<int>(), hook), quell::ready(42));
       }},
      {"5: nested hooks",
       [](ledger& lg) -> task<> {
         auto inner = [&lg]() -> task<> {
           ledger::hold h(lg, "inner");
           co_await sleep_for(1ms);
         };
         auto outer = [&lg]() -> task<> {
           ledger::hold h(lg, "outer");
           co_await sleep_for(1ms);
         };
         co_await quell::move_on_after(5ms, on_cancel(on_cancel(sleep_for(1h), inner), outer));
       }},
      {"6/7: exception during unwind and in a race branch",
       [](ledger& lg) -> task<> {
         auto hook = [&lg]() -> task<> {
           ledger::hold h(lg, "b hook");
           co_await sleep_for(1ms);
         };
         auto thrower = []() -> task<int> {
           co_await sleep_for(2ms);
           throw std::runtime_error("X");
         };
         try {
           (void)co_await quell::race(thrower(), on_cancel(quell::pending<int>(), hook));
         } catch (const std::runtime_error&) {
         }
       }},
      {"10: slow loser",
       [](ledger& lg) -> task<> {
         auto slow = [&lg]() -> task<> {
           ledger::hold h(lg, "loser hook");
           for (int i = 0; i < 3; ++i) co_await quell::yield();
         };
         (void)co_await quell::race(quell::ready(1), on_cancel(quell::pending<int>(), slow));
       }},
  };
  for (const auto& [name, make] : scenarios) {
    auto report = cancel_sweep(
        [&, m = make](quell::virtual_clock&) -> task<> {
          l = std::make_unique<ledger>();
          return m(*l);
        },
        [&](const sweep_point&) { l->expect_balanced(); });
    print(name, report);
  }
}

TEST(Sweep, AStreamReaderCancelledAnywhereLeavesEveryByteItDidNotConsumeInTheStream) {
  // The reader waits for each chunk beside a heartbeat in a join, and records what a read returned
  // as soon as it returned (a join that ends cancelled drops its branches' values, as a task's
  // locals are dropped with it). Cancelled anywhere, including in a read's completion window, every
  // byte sent was recorded or is still in the stream: in its buffer or in the kernel.
  struct state {
    quell::tcp_stream a, b;
    std::string sent, got;
  };
  std::unique_ptr<state> st;
  quell::testing::sweep_options opts;
  opts.io_grace = 10ms;  // real sockets on a virtual clock: let the kernel answer before time moves
  auto report = cancel_sweep(
      [&](quell::virtual_clock&) -> task<> {
        st = std::make_unique<state>();
        return [](state& s) -> task<> {
          auto l = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
          std::tie(s.a, s.b) = co_await quell::join(l.accept(), quell::tcp_stream::connect(l.local_address()));
          auto writer = [&s]() -> task<> {
            for (const char* c : {"one;", "two;", "three;"}) {
              co_await sleep_for(1ms);
              co_await s.b.write_all(c);
              s.sent += c;
            }
          };
          auto reader = [&s]() -> task<> {
            while (s.got.size() < std::string("one;two;three;").size()) {
              auto read = [&s]() -> task<> {
                char buf[16];
                const std::size_t n = co_await s.a.read_some(buf);
                s.got.append(buf, n);
              };
              co_await quell::join(read(), sleep_for(5ms));
            }
          };
          co_await quell::join(writer(), reader());
        }(*st);
      },
      [&](const sweep_point&) {
        if (!st->a.is_open()) return;  // cancelled before it connected
        int in_kernel = 0;
        ::ioctl(st->a.native_handle(), FIONREAD, &in_kernel);
        const std::size_t left = st->a.buffered() + static_cast<std::size_t>(in_kernel);
        if (st->got.size() + left != st->sent.size() || st->sent.compare(0, st->got.size(), st->got) != 0) {
          throw std::logic_error("sent \"" + st->sent + "\", read \"" + st->got + "\", " + std::to_string(left) +
                                 " bytes left in the stream");
        }
      },
      opts);
  EXPECT_GT(report.completions, 6u);
  print("stream reader", report);
}

TEST(Sweep, ConnectionsDatagramsAndSignalsAreEachDeliveredOnceOrLeftForTheNextCallWhereverItIsCancelled) {
  // A producer makes two connections, sends two datagrams and queues two signals, a step apart;
  // three consumers each wait for their two beside a heartbeat (a join that a cancel can end
  // while a wait's result is reaped and not yet seen). Afterwards what is left is drained through
  // a fresh executor: every item was taken exactly once or is still waiting for the next call.
  const int sig = SIGRTMIN + 4;
  struct state {
    quell::tcp_listener l = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
    quell::udp_socket rx = quell::udp_socket::bind(quell::address::parse("127.0.0.1", 0));
    quell::udp_socket tx = quell::udp_socket::bind(quell::address::parse("127.0.0.1", 0));
    quell::signal_set sigs;
    std::vector<int> clients;
    int made = 0, sent = 0, raised = 0, accepted = 0, received = 0, caught = 0;
    explicit state(int s) : sigs{s} {}
    ~state() {
      for (int c : clients) ::close(c);
    }
  };
  std::unique_ptr<state> st;
  quell::testing::sweep_options opts;
  opts.io_grace = 5ms;  // real sockets on a virtual clock: let the kernel answer before time moves
  auto report = cancel_sweep(
      [&](quell::virtual_clock&) -> task<> {
        st.reset();  // the previous run's signal mask is restored before this one blocks it again
        st = std::make_unique<state>(sig);
        return [](state& s, int signo) -> task<> {
          auto producer = [&s, signo]() -> task<> {
            const quell::address to = s.l.local_address();
            for (int i = 0; i < 2; ++i) {
              co_await sleep_for(1ms);
              const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
              if (::connect(c, to.data(), to.size()) == 0) ++s.made;
              s.clients.push_back(c);
              co_await s.tx.send_to("datagram", s.rx.local_address());
              ++s.sent;
              if (::sigqueue(::getpid(), signo, sigval{i}) == 0) ++s.raised;
            }
          };
          auto acceptor = [&s]() -> task<> {
            for (int i = 0; i < 2; ++i) {
              auto one = [&s]() -> task<> {
                quell::tcp_stream c = co_await s.l.accept();
                ++s.accepted;
                co_await c.close();
              };
              co_await quell::join(one(), sleep_for(5ms));
            }
          };
          auto receiver = [&s]() -> task<> {
            for (int i = 0; i < 2; ++i) {
              auto one = [&s]() -> task<> {
                char buf[16];
                (void)co_await s.rx.recv_from(buf);
                ++s.received;
              };
              co_await quell::join(one(), sleep_for(5ms));
            }
          };
          auto catcher = [&s]() -> task<> {
            for (int i = 0; i < 2; ++i) {
              auto one = [&s]() -> task<> {
                (void)co_await s.sigs.wait();
                ++s.caught;
              };
              co_await quell::join(one(), sleep_for(5ms));
            }
          };
          co_await quell::join(producer(), acceptor(), receiver(), catcher());
        }(*st, sig);
      },
      [&](const sweep_point&) {
        // Drain what is left, from the stash first, then the kernel.
        quell::virtual_clock clock;
        clock.set_io_grace(1ms);  // what is left is in the kernel already
        auto drain = [](state& s) -> task<> {
          while (auto c = co_await quell::move_on_after(1s, s.l.accept())) {
            ++s.accepted;
            co_await c->close();
          }
          char buf[16];
          while (co_await quell::move_on_after(1s, s.rx.recv_from(buf))) ++s.received;
          while (co_await quell::move_on_after(1s, s.sigs.wait())) ++s.caught;
        };
        quell::executor<void> ex{drain(*st), clock};
        ex.run();
        if (st->accepted != st->made || st->received != st->sent || st->caught != st->raised) {
          throw std::logic_error("connections " + std::to_string(st->accepted) + " of " + std::to_string(st->made) +
                                 ", datagrams " + std::to_string(st->received) + " of " + std::to_string(st->sent) +
                                 ", signals " + std::to_string(st->caught) + " of " + std::to_string(st->raised));
        }
      },
      opts);
  st.reset();
  EXPECT_GT(report.completions, 6u);
  print("connections, datagrams, signals", report);
}

TEST(Sweep, AnyOfAndJoinSettledDeliverEveryValueProducedWhereverTheyAreCancelled) {
  // Each branch records the value it produces in a ledger just before returning it; the caller
  // releases each value it receives. A value produced and then dropped (a late loser, a settled
  // outcome) stays held. Every branch's frame and hook are accounted for as well.
  std::unique_ptr<ledger> l;
  auto report = cancel_sweep(
      [&](quell::virtual_clock&) -> task<> {
        l = std::make_unique<ledger>();
        return [](ledger& lg) -> task<> {
          auto branch = [&lg](int id, quell::duration d, bool fail) -> task<int> {
            ledger::hold frame(lg, "frame " + std::to_string(id));
            auto hook = [&lg, id]() -> task<> {
              ledger::hold h(lg, "hook " + std::to_string(id));
              co_await sleep_for(1ms);
            };
            co_await on_cancel(sleep_for(d), hook);
            lg.acquire("outcome " + std::to_string(id));
            if (fail) throw std::runtime_error("branch " + std::to_string(id));
            co_return id;
          };
          auto [a, b, c] = co_await quell::any_of(branch(1, 2ms, false), branch(2, 2ms, false), branch(3, 5ms, false));
          for (const auto& v : {a, b, c}) {
            if (v) lg.release("outcome " + std::to_string(*v));
          }
          auto [x, y, z] = co_await quell::join_settled(branch(4, 1ms, false), branch(5, 2ms, true), branch(6, 3ms, false));
          if (x.has_value()) lg.release("outcome " + std::to_string(x.value()));
          if (y.has_error()) lg.release("outcome 5");
          if (z.has_value()) lg.release("outcome " + std::to_string(z.value()));
        }(*l);
      },
      [&](const sweep_point& p) {
        l->expect_balanced();
        if (p.outcome == ended::error) std::rethrow_exception(p.error);
      });
  print("any_of + join_settled", report);
}
