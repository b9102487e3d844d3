// The gateway example's backend side (examples/gateway): the embedded job service and its client
// job_backend, on real loopback sockets. Time is virtual: jobs, deadlines and the cancel timeout
// run on a quell::virtual_clock, which jumps ahead only when no I/O has completed for io_grace of
// real time, so timings are asserted exactly and nothing depends on the machine's speed.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "job_backend.hpp"
#include "job_service.hpp"
#include "quell/quell.hpp"
#include "quell/testing.hpp"

using namespace std::chrono_literals;
using gateway::backend_error;
using gateway::job_backend;
using gateway::job_service;
using quell::task;
using quell::tcp_stream;
using quell::virtual_clock;

namespace {

// Real time the virtual clock gives a loopback peer to answer before jumping to the next deadline.
constexpr auto io_grace = 100ms;

long long ms_since(const virtual_clock& c, quell::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(c.now() - t0).count();
}

// Runs body(svc, clock) on a virtual clock while svc.serve() runs beside it; stops the service
// once the body has returned.
void with_service(const std::function<task<>(job_service&, virtual_clock&)>& body) {
  virtual_clock clock;
  clock.set_io_grace(io_grace);
  auto svc = job_service::bind();
  auto in_scope = [&](quell::scope& s) -> task<> {
    auto server = s.spawn([&] { return svc.serve(); });
    co_await body(svc, clock);
    server.cancel();
  };
  auto root = [&]() -> task<> { co_await quell::with_scope(in_scope); };
  quell::executor ex{root(), clock};
  ex.run();
  EXPECT_EQ(svc.connections(), 0u);
  EXPECT_EQ(svc.jobs_running(), 0u);
}

// Yields until cond() holds (I/O completes meanwhile; virtual time does not move).
task<bool> eventually(std::function<bool()> cond) {
  for (int i = 0; i < 200000; ++i) {
    if (cond()) co_return true;
    co_await quell::yield();
  }
  co_return cond();
}

job_backend make_backend(const job_service& svc, std::size_t pool = 8, quell::duration cancel_timeout = 1s) {
  return job_backend({.service = svc.local_address(), .pool_size = pool, .cancel_timeout = cancel_timeout});
}

// A raw client speaking the protocol by hand.
struct raw {
  tcp_stream s;
  std::string in;

  // The next line, "<eof>" at end of stream, "<reset>" if the connection was reset.
  task<std::string> line() {
    for (;;) {
      const auto nl = in.find('\n');
      if (nl != std::string::npos) {
        std::string l = in.substr(0, nl);
        in.erase(0, nl + 1);
        co_return l;
      }
      char buf[512];
      std::size_t n = 0;
      bool reset = false;
      try {
        n = co_await s.read_some(buf);
      } catch (const std::system_error&) {
        reset = true;
      }
      if (reset) co_return "<reset>";
      if (n == 0) co_return in.empty() ? "<eof>" : std::exchange(in, {});
      in.append(buf, n);
    }
  }
  // Every remaining line until the end of the stream, bounded in (virtual) time so that a service
  // that never closes fails the test instead of hanging it.
  task<std::vector<std::string>> lines_to_end() {
    std::vector<std::string> out;
    auto read_all = [&]() -> task<> {
      for (;;) {
        std::string l = co_await line();
        out.push_back(l);
        if (l == "<eof>" || l == "<reset>") co_return;
      }
    };
    auto r = co_await quell::move_on_after(60s, read_all());
    if (!r) out.push_back("<still open after 60 s>");
    co_return out;
  }
};

// A job service on its own thread and executor (steady clock), for tests whose cancel must reach
// the client's executor only. Its counters are read on its thread, through remote_handle::post.
class service_thread {
 public:
  service_thread() : svc_(job_service::bind()) {
    std::promise<quell::remote_handle> handle;
    auto ready = handle.get_future();
    t_ = std::thread([this, &handle] {
      // Built on this thread: the executor's io_uring (single issuer) belongs to the thread that
      // creates it, and remote() creates it.
      quell::executor ex{svc_.serve()};
      handle.set_value(ex.remote());
      try {
        ex.run();
      } catch (const quell::cancelled_error&) {
        // stopped by the destructor
      }
    });
    remote_ = ready.get();
  }
  ~service_thread() {
    remote_.cancel();
    t_.join();
  }

  quell::address address() const { return svc_.local_address(); }

  template <class F>
  auto read(F f) {
    std::promise<decltype(f(svc_))> p;
    auto got = p.get_future();
    remote_.post([&] { p.set_value(f(svc_)); });
    return got.get();
  }

  // Waits (real time, at most 5 s) until the service has no connection and no job left.
  bool drained() {
    for (int i = 0; i < 5000; ++i) {
      if (read([](const job_service& s) { return s.connections() == 0 && s.jobs_running() == 0; })) return true;
      std::this_thread::sleep_for(1ms);
    }
    return false;
  }

 private:
  job_service svc_;
  quell::remote_handle remote_;
  std::thread t_;
};

task<raw> connect_raw(const job_service& svc) {
  raw r;
  r.s = co_await tcp_stream::connect(svc.local_address());
  co_return r;
}

}  // namespace

// ---- the service's protocol, spoken by hand ----

TEST(JobService, AJobRepliesWithItsResultAfterItsDurationOnTheExecutorsClock) {
  with_service([](job_service& svc, virtual_clock& clock) -> task<> {
    raw c = co_await connect_raw(svc);
    const auto t0 = clock.now();
    co_await c.s.write_all("SUBMIT 7 1500\n");
    EXPECT_EQ(co_await c.line(), "RESULT 7 report after 1500 ms");
    EXPECT_EQ(ms_since(clock, t0), 1500);
    EXPECT_EQ(svc.jobs_started(), 1u);
    EXPECT_EQ(svc.jobs_completed(), 1u);
    EXPECT_EQ(svc.jobs_running(), 0u);
    EXPECT_EQ(svc.connections(), 1u);
    co_await c.s.close();
    EXPECT_TRUE(co_await eventually([&] { return svc.connections() == 0; }));
  });
}

TEST(JobService, EveryCancelGetsExactlyOneReplyAndCancelledComesOnlyOnceTheJobStopped) {
  with_service([](job_service& svc, virtual_clock& clock) -> task<> {
    raw c = co_await connect_raw(svc);
    const auto t0 = clock.now();
    co_await c.s.write_all("SUBMIT 1 10000\nSUBMIT 2 10000\n");
    EXPECT_TRUE(co_await eventually([&] { return svc.jobs_running() == 2; }));
    co_await c.s.write_all("CANCEL 1\n");
    EXPECT_EQ(co_await c.line(), "CANCELLED 1");
    EXPECT_EQ(svc.jobs_running(), 1u);                // job 1 had stopped before its CANCELLED was written
    co_await c.s.write_all("CANCEL 1\nCANCEL 99\n");  // finished, unknown
    EXPECT_EQ(co_await c.line(), "DONE 1");
    EXPECT_EQ(co_await c.line(), "DONE 99");
    co_await c.s.write_all("CANCEL 2\nCANCEL 2\n");  // a second CANCEL for a job being cancelled
    EXPECT_EQ(co_await c.line(), "CANCELLED 2");
    EXPECT_EQ(co_await c.line(), "DONE 2");
    co_await c.s.write_all("SUBMIT 3 0\n");
    EXPECT_EQ(co_await c.line(), "RESULT 3 report after 0 ms");
    co_await c.s.write_all("CANCEL 3\nSUBMIT 1 5\r\n");  // ids may be reused once finished; CRLF is fine
    EXPECT_EQ(co_await c.line(), "DONE 3");
    EXPECT_EQ(co_await c.line(), "RESULT 1 report after 5 ms");
    EXPECT_EQ(ms_since(clock, t0), 5);  // no cancelled job made anyone wait
    EXPECT_EQ(svc.jobs_started(), 4u);
    EXPECT_EQ(svc.jobs_cancelled(), 2u);
    EXPECT_EQ(svc.jobs_completed(), 2u);
    EXPECT_EQ(svc.cancels_received(), 6u);
    co_await c.s.close();
  });
}

TEST(JobService, ACancelInTheTurnTheJobFinishesIsAnsweredDoneAfterTheResult) {
  with_service([](job_service& svc, virtual_clock& clock) -> task<> {
    raw c = co_await connect_raw(svc);
    co_await c.s.write_all("SUBMIT 4 1000\n");
    EXPECT_TRUE(co_await eventually([&] { return svc.jobs_running() == 1; }));
    // Wakes at the job's deadline, right after the job's timer (armed earlier) in the same turn:
    // the CANCEL reaches the service after the work has finished.
    co_await quell::sleep_until(clock.now() + 1000ms);
    co_await c.s.write_all("CANCEL 4\n");
    EXPECT_EQ(co_await c.line(), "RESULT 4 report after 1000 ms");
    EXPECT_EQ(co_await c.line(), "DONE 4");
    EXPECT_EQ(svc.jobs_completed(), 1u);
    EXPECT_EQ(svc.jobs_cancelled(), 0u);
    co_await c.s.close();
  });
}

TEST(JobService, AClientThatGoesAwayHasItsJobsCancelled) {
  with_service([](job_service& svc, virtual_clock& clock) -> task<> {
    const auto t0 = clock.now();
    for (bool ignoring : {false, true}) {
      svc.set_ignore_cancels(ignoring);
      raw c = co_await connect_raw(svc);
      co_await c.s.write_all("SUBMIT 1 10000\nSUBMIT 2 10000\nCANCEL 2\n");
      if (!ignoring) {
        EXPECT_EQ(co_await c.line(), "CANCELLED 2");
      }
      EXPECT_TRUE(co_await eventually([&] { return svc.jobs_running() == (ignoring ? 2u : 1u); }));
      co_await c.s.close();
      EXPECT_TRUE(co_await eventually([&] { return svc.connections() == 0 && svc.jobs_running() == 0; }));
    }
    EXPECT_EQ(svc.jobs_cancelled(), 4u);
    EXPECT_EQ(svc.jobs_completed(), 0u);
    EXPECT_EQ(svc.cancels_ignored(), 1u);
    EXPECT_LT(ms_since(clock, t0), 10000);
  });
}

TEST(JobService, AMalformedLineGetsErrorAndTheConnectionIsClosedWithItsJobs) {
  const std::vector<std::string> bad = {
      "HELLO\n",
      "submit 1 1\n",
      "SUBMIT\n",
      "SUBMIT 1\n",
      "SUBMIT x 10\n",
      "SUBMIT 1 -5\n",
      "SUBMIT 1 +5\n",
      "SUBMIT 1 10 x\n",
      "SUBMIT  1 10\n",
      "SUBMIT 1 1e3\n",
      "SUBMIT 99999999999999999999999 1\n",
      "SUBMIT 1 86400001\n",
      "CANCEL\n",
      "CANCEL 1 2\n",
      "CANCEL -1\n",
      "\n",
      std::string("SUB\0MIT 1 1\n", 13),
      "SUBMIT 1 10 \n",
  };
  with_service([&](job_service& svc, virtual_clock&) -> task<> {
    for (const std::string& line : bad) {
      raw c = co_await connect_raw(svc);
      co_await c.s.write_all("SUBMIT 100 10000\n");  // a job the ERROR must take down with it
      EXPECT_TRUE(co_await eventually([&] { return svc.jobs_running() == 1; }));
      co_await c.s.write_all(line);
      const auto got = co_await c.lines_to_end();
      EXPECT_EQ(got.size(), 2u) << line;
      if (got.size() != 2) continue;
      EXPECT_EQ(got[0].rfind("ERROR ", 0), 0u) << "for " << line << ": " << got[0];
      EXPECT_EQ(got[1], "<eof>") << line;
      EXPECT_TRUE(co_await eventually([&] { return svc.connections() == 0 && svc.jobs_running() == 0; }));
      co_await c.s.close();
    }
    EXPECT_EQ(svc.protocol_errors(), bad.size());
    EXPECT_EQ(svc.jobs_cancelled(), bad.size());
    EXPECT_EQ(svc.jobs_started(), bad.size());
  });
}

TEST(JobService, ASubmitForAnIdStillRunningIsAnError) {
  with_service([](job_service& svc, virtual_clock&) -> task<> {
    raw c = co_await connect_raw(svc);
    co_await c.s.write_all("SUBMIT 5 1000\nSUBMIT 5 1000\n");
    const auto got = co_await c.lines_to_end();
    EXPECT_EQ(got, (std::vector<std::string>{"ERROR duplicate id 5", "<eof>"}));
    EXPECT_TRUE(co_await eventually([&] { return svc.jobs_running() == 0; }));
    EXPECT_EQ(svc.jobs_started(), 1u);
    EXPECT_EQ(svc.jobs_cancelled(), 1u);
    co_await c.s.close();
  });
}

TEST(JobService, AnOverlongLineIsRefusedWithOrWithoutItsNewline) {
  with_service([](job_service& svc, virtual_clock&) -> task<> {
    for (const std::string& line :
         {std::string(job_service::max_line + 1, 'A'), std::string(job_service::max_line + 1, '7') + "\n",
          "SUBMIT 1 " + std::string(job_service::max_line, '0') + "1\n"}) {
      raw c = co_await connect_raw(svc);
      co_await c.s.write_all(line);
      const auto got = co_await c.lines_to_end();
      EXPECT_EQ(got, (std::vector<std::string>{"ERROR line too long", "<eof>"}));
      co_await c.s.close();
    }
    // A line of exactly max_line bytes is fine (zeros in front of a number are digits).
    raw c = co_await connect_raw(svc);
    std::string ok = "SUBMIT 1 ";
    ok += std::string(job_service::max_line - ok.size() - 1, '0') + "3\n";
    co_await c.s.write_all(ok);
    EXPECT_EQ(co_await c.line(), "RESULT 1 report after 3 ms");
    co_await c.s.close();
    EXPECT_EQ(svc.protocol_errors(), 3u);
  });
}

TEST(JobService, RandomBytesAndAbruptClosesNeverTakeTheServiceDown) {
  with_service([](job_service& svc, virtual_clock&) -> task<> {
    // A well-behaved client keeps a job running on the service all along.
    job_backend jobs = make_backend(svc);
    auto good = [&]() -> task<std::string> { co_return co_await jobs.run(3000ms); };
    auto abuse = [&]() -> task<> {
      std::mt19937 rng(20240601);
      for (int round = 0; round < 20; ++round) {
        raw c = co_await connect_raw(svc);
        std::string junk(1 + rng() % 3000, '\0');
        for (char& ch : junk) ch = static_cast<char>(rng() % 256);
        if (junk.rfind("SUBMIT ", 0) == 0 || junk.rfind("CANCEL ", 0) == 0) junk[0] = '?';
        if (round % 2 == 0) junk += '\n';  // a complete first line, so the service must answer
        co_await c.s.write_all(junk);
        if (round % 2 == 0) {
          // Whatever the junk was (complete bad line, partial line, overlong), the service must
          // end the connection: ERROR then end of stream, or a reset if it closed with our junk
          // still unread (TCP sends RST then).
          const auto got = co_await c.lines_to_end();
          EXPECT_TRUE(got.back() == "<eof>" || got.back() == "<reset>") << got.back();
          if (got.size() > 1) {
            EXPECT_EQ(got[0].rfind("ERROR ", 0), 0u) << got[0];
          }
        }
        co_await c.s.close();  // abrupt: mid-line, or with replies unread
      }
      // A partial line, then the client vanishes.
      raw c = co_await connect_raw(svc);
      co_await c.s.write_all("SUBMIT 1 10");
      co_await c.s.close();
    };
    auto [text, ignored] = co_await quell::join(good(), abuse());
    (void)ignored;
    EXPECT_EQ(text, "report after 3000 ms");
    EXPECT_TRUE(co_await eventually([&] { return svc.connections() == jobs.open_connections(); }));
    EXPECT_EQ(svc.jobs_running(), 0u);
    EXPECT_EQ(svc.jobs_completed(), 1u);
    EXPECT_EQ(svc.connections_accepted(), 22u);  // 20 + the partial line + the backend's
  });
}

TEST(JobService, CancellingServeCancelsEveryJobClosesEveryConnectionAndReturns) {
  virtual_clock clock;
  clock.set_io_grace(io_grace);
  auto svc = job_service::bind();
  const quell::address where = svc.local_address();
  int lost = 0;
  job_backend jobs = make_backend(svc, 3);
  auto body = [&](quell::scope& s) -> task<> {
    auto server = s.spawn([&] { return svc.serve(); });
    auto one = [&]() -> task<> {
      try {
        co_await jobs.run(10s);
        ADD_FAILURE() << "a job outlived the service";
      } catch (const backend_error& e) {
        EXPECT_NE(std::string(e.what()).find("closed the connection"), std::string::npos) << e.what();
        ++lost;
      }
    };
    auto runs = [&]() -> task<> { co_await quell::join(one(), one(), one()); };
    auto clients = s.spawn(runs);
    EXPECT_TRUE(co_await eventually([&] { return svc.jobs_running() == 3; }));
    EXPECT_EQ(svc.connections(), 3u);
    server.cancel();
    co_await clients;  // the body (and the lambdas `runs` uses) outlive the runs
  };
  auto root = [&]() -> task<> { co_await quell::with_scope(body); };
  quell::executor ex{root(), clock};
  ex.run();  // serve() ended (cancelled) with everything it started
  EXPECT_EQ(lost, 3);
  EXPECT_EQ(jobs.open_connections(), 0u);
  EXPECT_EQ(jobs.available(), 3u);
  EXPECT_EQ(svc.jobs_cancelled(), 3u);
  EXPECT_EQ(svc.jobs_running(), 0u);
  EXPECT_EQ(svc.connections(), 0u);
  EXPECT_LT(clock.now() - quell::time_point{}, 10s);
  // The listener is closed too.
  auto probe = [&]() -> task<int> {
    try {
      co_await tcp_stream::connect(where);
    } catch (const std::system_error& e) {
      co_return e.code().value();
    }
    co_return 0;
  };
  EXPECT_EQ(quell::block_on(probe()), ECONNREFUSED);
}

// ---- job_backend ----

TEST(JobBackend, AJobCompletesAndDeliversItsResult) {
  with_service([](job_service& svc, virtual_clock& clock) -> task<> {
    job_backend jobs = make_backend(svc);
    EXPECT_EQ(jobs.open_connections(), 0u);  // lazily connected
    const auto t0 = clock.now();
    EXPECT_EQ(co_await jobs.run(1500ms), "report after 1500 ms");
    EXPECT_EQ(ms_since(clock, t0), 1500);
    EXPECT_EQ(jobs.open_connections(), 1u);
    EXPECT_EQ(jobs.idle_connections(), 1u);
    EXPECT_EQ(jobs.available(), 8u);
    EXPECT_EQ(jobs.stats().cancels_sent, 0u);
    EXPECT_EQ(svc.jobs_completed(), 1u);
    EXPECT_EQ(jobs.describe(), "job service at " + svc.local_address().to_string());
  });
}

TEST(JobBackend, FiveConcurrentJobsOnAPoolOfTwoRunTwoAtATimeInArrivalOrder) {
  with_service([](job_service& svc, virtual_clock& clock) -> task<> {
    job_backend jobs = make_backend(svc, 2);
    std::vector<int> order;
    auto one = [&](int i) -> task<std::string> {
      std::string r = co_await jobs.run(std::chrono::milliseconds(1000 + i));
      order.push_back(i);
      co_return r;
    };
    const auto t0 = clock.now();
    std::vector<task<std::string>> all;
    for (int i = 0; i < 5; ++i) all.push_back(one(i));
    std::vector<std::string> got = co_await quell::join(std::move(all));
    for (int i = 0; i < 5; ++i) EXPECT_EQ(got[i], "report after " + std::to_string(1000 + i) + " ms");
    EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
    // Slots go first come, first served: 0 and 1 start at once; 2 takes 0's slot at 1000 ms, 3
    // takes 1's at 1001 ms, 4 takes 2's at 2002 ms and ends at 3006 ms.
    EXPECT_EQ(ms_since(clock, t0), 2002 + 1004);
    EXPECT_EQ(jobs.connections_opened(), 2u);
    EXPECT_EQ(svc.connections_accepted(), 2u);
    EXPECT_EQ(jobs.idle_connections(), 2u);
  });
}

TEST(JobBackend, ACancelledJobIsCancelledOnTheServiceOnceAndTheConnectionIsReused) {
  with_service([](job_service& svc, virtual_clock& clock) -> task<> {
    job_backend jobs = make_backend(svc, 1);
    const auto t0 = clock.now();
    auto r = co_await quell::move_on_after(300ms, jobs.run(5000ms));
    EXPECT_FALSE(r.has_value());
    EXPECT_EQ(ms_since(clock, t0), 300);  // acknowledged at once, no timeout waited for
    EXPECT_EQ(jobs.stats().cancels_sent, 1u);
    EXPECT_EQ(jobs.stats().cancels_acknowledged, 1u);
    EXPECT_EQ(jobs.stats().cancels_timed_out, 0u);
    EXPECT_EQ(svc.cancels_received(), 1u);
    EXPECT_EQ(svc.jobs_cancelled(), 1u);
    EXPECT_EQ(svc.jobs_running(), 0u);  // stopped before run() ended, not "eventually"
    EXPECT_EQ(jobs.open_connections(), 1u);
    EXPECT_EQ(jobs.idle_connections(), 1u);
    EXPECT_EQ(jobs.available(), 1u);

    EXPECT_EQ(co_await jobs.run(100ms), "report after 100 ms");
    EXPECT_EQ(jobs.connections_opened(), 1u);  // the same connection, clean
    EXPECT_EQ(svc.connections_accepted(), 1u);
    EXPECT_EQ(jobs.stats().cancels_sent, 1u);
  });
}

TEST(JobBackend, AJobFinishingInTheTurnItsCancelArrivesDeliversItsResultAndCountsNoAcknowledgement) {
  with_service([](job_service& svc, virtual_clock& clock) -> task<> {
    job_backend jobs = make_backend(svc, 1);
    // The deadline and the job's end fall on the same instant (the deadline's timer was armed
    // first): the cancel reaches run() in the turn the service finishes the job. Either the RESULT
    // is read before the hook writes anything, or the CANCEL goes out and is answered DONE after
    // the RESULT; the result is delivered either way.
    const auto t0 = clock.now();
    auto r = co_await quell::move_on_after(1000ms, jobs.run(1000ms));
    EXPECT_TRUE(r.has_value());
    if (!r) co_return;
    EXPECT_EQ(*r, "report after 1000 ms");
    EXPECT_EQ(ms_since(clock, t0), 1000);
    EXPECT_EQ(jobs.stats().cancels_acknowledged, 0u);
    EXPECT_EQ(jobs.stats().cancels_timed_out, 0u);
    EXPECT_EQ(jobs.stats().cancels_sent, jobs.cancels_too_late());  // a CANCEL sent was answered DONE
    EXPECT_EQ(svc.cancels_received(), jobs.stats().cancels_sent);
    EXPECT_EQ(svc.jobs_completed(), 1u);
    EXPECT_EQ(svc.jobs_cancelled(), 0u);
    EXPECT_EQ(jobs.idle_connections(), 1u);
    EXPECT_EQ(co_await jobs.run(10ms), "report after 10 ms");  // nothing stale on the connection
    EXPECT_EQ(jobs.connections_opened(), 1u);
  });
}

TEST(JobBackend, ACancelArrivingAfterTheResultWasWrittenDeliversTheResultAndLeavesTheConnectionClean) {
  with_service([](job_service& svc, virtual_clock&) -> task<> {
    job_backend jobs = make_backend(svc, 1);
    quell::cancel_source src;
    std::optional<std::string> got;
    auto job = [&]() -> task<> { got = co_await quell::with_cancellation(src.token(), jobs.run(0ms)); };
    // The service finishes a 0 ms job at once; the cancel is requested as soon as it has, while
    // its RESULT is on its way or already read: either nothing is sent, or the CANCEL is answered
    // DONE. In both cases the result is delivered.
    auto cancel_late = [&]() -> task<> {
      co_await eventually([&] { return svc.jobs_completed() == 1; });
      src.cancel();
    };
    auto both = [&]() -> task<> { co_await quell::join(job(), cancel_late()); };
    auto r = co_await quell::move_on_after(10s, both());
    EXPECT_TRUE(r.has_value());
    EXPECT_EQ(got, "report after 0 ms");
    EXPECT_EQ(jobs.stats().cancels_acknowledged, 0u);
    EXPECT_EQ(jobs.stats().cancels_timed_out, 0u);
    EXPECT_EQ(jobs.stats().cancels_sent, jobs.cancels_too_late());
    EXPECT_EQ(jobs.idle_connections(), 1u);
    EXPECT_EQ(co_await jobs.run(1ms), "report after 1 ms");
    EXPECT_EQ(jobs.connections_opened(), 1u);
  });
}

TEST(JobBackend, ACancelTheServiceIgnoresTimesOutClosesTheConnectionAndThePoolOpensANewOne) {
  with_service([](job_service& svc, virtual_clock& clock) -> task<> {
    job_backend jobs = make_backend(svc, 1, 1s);
    svc.set_ignore_cancels(true);
    const auto t0 = clock.now();
    auto r = co_await quell::move_on_after(200ms, jobs.run(10s));
    EXPECT_FALSE(r.has_value());
    EXPECT_EQ(ms_since(clock, t0), 200 + 1000);  // waited cancel_timeout for a reply, no longer
    EXPECT_EQ(jobs.stats().cancels_sent, 1u);
    EXPECT_EQ(jobs.stats().cancels_timed_out, 1u);
    EXPECT_EQ(jobs.stats().cancels_acknowledged, 0u);
    EXPECT_EQ(jobs.open_connections(), 0u);
    EXPECT_EQ(jobs.connections_closed(), 1u);
    EXPECT_EQ(jobs.available(), 1u);  // the caller's slot is free again
    EXPECT_EQ(svc.cancels_ignored(), 1u);
    // The service sees the connection close and cancels the job itself.
    EXPECT_TRUE(co_await eventually([&] { return svc.connections() == 0 && svc.jobs_running() == 0; }));
    EXPECT_EQ(svc.jobs_cancelled(), 1u);
    EXPECT_EQ(svc.jobs_completed(), 0u);

    svc.set_ignore_cancels(false);
    EXPECT_EQ(co_await jobs.run(50ms), "report after 50 ms");
    EXPECT_EQ(jobs.connections_opened(), 2u);
    EXPECT_EQ(svc.connections_accepted(), 2u);
  });
}

TEST(JobBackend, AForcedCancelClosesTheConnectionWithoutWaitingOrSendingACancel) {
  service_thread service;  // the forced request reaches only the client's executor
  virtual_clock clock;
  clock.set_io_grace(io_grace);
  job_backend jobs({.service = service.address(), .pool_size = 1, .cancel_timeout = 5s});
  bool returned = false;
  auto client = [&]() -> task<> {
    co_await jobs.run(10s);
    returned = true;
  };
  {
    quell::executor ex{client(), clock};
    // Until the job runs on the service: the client then waits for its RESULT.
    for (int i = 0; i < 5000; ++i) {
      ex.poll_once();
      if (service.read([](const job_service& s) { return s.jobs_running(); }) == 1) break;
      std::this_thread::sleep_for(1ms);
    }
    ASSERT_EQ(service.read([](const job_service& s) { return s.jobs_running(); }), 1u);
    ex.force_cancel();
    EXPECT_THROW(ex.run(), quell::cancelled_error);
  }
  EXPECT_FALSE(returned);
  EXPECT_EQ(clock.now(), quell::time_point{});  // no wait at all, not even in virtual time
  EXPECT_EQ(jobs.stats().cancels_sent, 0u);
  EXPECT_EQ(jobs.open_connections(), 0u);
  EXPECT_EQ(jobs.connections_closed(), 1u);
  EXPECT_EQ(jobs.available(), 1u);
  // The service sees the connection close and stops the job.
  EXPECT_TRUE(service.drained());
  EXPECT_EQ(service.read([](const job_service& s) { return s.jobs_cancelled(); }), 1u);
  EXPECT_EQ(service.read([](const job_service& s) { return s.cancels_received(); }), 0u);
}

TEST(JobBackend, ACallerCancelledWhileWaitingForAPoolSlotTakesNothingAndSendsNothing) {
  with_service([](job_service& svc, virtual_clock& clock) -> task<> {
    job_backend jobs = make_backend(svc, 1);
    const auto t0 = clock.now();
    auto holder = [&]() -> task<std::string> { co_return co_await jobs.run(1000ms); };
    auto impatient = [&]() -> task<bool> {
      co_await quell::yield();  // after the holder took the slot
      EXPECT_EQ(jobs.available(), 0u);
      auto r = co_await quell::move_on_after(100ms, jobs.run(1ms));
      EXPECT_EQ(ms_since(clock, t0), 100);
      EXPECT_EQ(jobs.waiting(), 0u);
      EXPECT_EQ(jobs.available(), 0u);  // still the holder's
      co_return r.has_value();
    };
    auto [text, served] = co_await quell::join(holder(), impatient());
    EXPECT_EQ(text, "report after 1000 ms");
    EXPECT_FALSE(served);
    EXPECT_EQ(svc.jobs_started(), 1u);  // the impatient caller sent nothing
    EXPECT_EQ(jobs.available(), 1u);
    EXPECT_EQ(co_await jobs.run(2ms), "report after 2 ms");
    EXPECT_EQ(jobs.connections_opened(), 1u);
  });
}

TEST(JobBackend, AnUnreachableServiceIsABackendErrorAndFreesTheSlot) {
  virtual_clock clock;
  quell::address gone;
  {
    auto svc = job_service::bind();  // bound, then closed without ever serving
    gone = svc.local_address();
  }
  job_backend jobs({.service = gone, .pool_size = 1});
  auto body = [&]() -> task<> {
    for (int i = 0; i < 2; ++i) {
      try {
        co_await jobs.run(1ms);
        ADD_FAILURE() << "ran a job without a service";
      } catch (const backend_error& e) {
        EXPECT_NE(std::string(e.what()).find("cannot connect to job service at " + gone.to_string()), std::string::npos)
            << e.what();
      }
      EXPECT_EQ(jobs.available(), 1u);
      EXPECT_EQ(jobs.open_connections(), 0u);
    }
  };
  quell::executor ex{body(), clock};
  ex.run();
}

TEST(JobBackend, AServiceThatRefusesTheJobIsABackendErrorAndTheConnectionIsDropped) {
  with_service([](job_service& svc, virtual_clock&) -> task<> {
    job_backend jobs = make_backend(svc, 1);
    try {
      co_await jobs.run(std::chrono::milliseconds(job_service::max_millis + 1));
      ADD_FAILURE() << "the service accepted a job over its limit";
    } catch (const backend_error& e) {
      EXPECT_NE(std::string(e.what()).find("reported an error: bad duration"), std::string::npos) << e.what();
    }
    EXPECT_EQ(jobs.open_connections(), 0u);
    EXPECT_EQ(jobs.available(), 1u);
    EXPECT_EQ(co_await jobs.run(5ms), "report after 5 ms");  // the slot is refilled
    EXPECT_EQ(jobs.connections_opened(), 2u);
    EXPECT_EQ(svc.protocol_errors(), 1u);
  });
}

TEST(JobBackend, AnIdleConnectionTheServiceClosedIsNotReused) {
  virtual_clock clock;
  clock.set_io_grace(io_grace);
  auto first = job_service::bind();
  job_backend jobs = make_backend(first, 1);
  auto body = [&]() -> task<> {
    auto once = [&](quell::scope& s) -> task<> {
      auto server = s.spawn([&] { return first.serve(); });
      EXPECT_EQ(co_await jobs.run(1ms), "report after 1 ms");
      server.cancel();  // the service closes the pooled connection
      co_return;
    };
    co_await quell::with_scope(once);
    EXPECT_EQ(jobs.idle_connections(), 1u);
    std::this_thread::sleep_for(20ms);  // the service's FIN reaches the pooled socket (real time)
    // No service any more: a run must not use the dead connection (and fail with a lost
    // connection); it connects anew, which is refused.
    try {
      co_await jobs.run(1ms);
      ADD_FAILURE() << "ran a job without a service";
    } catch (const backend_error& e) {
      EXPECT_NE(std::string(e.what()).find("cannot connect"), std::string::npos) << e.what();
    }
    EXPECT_EQ(jobs.idle_connections(), 0u);
    EXPECT_EQ(jobs.open_connections(), 0u);
  };
  quell::executor ex{body(), clock};
  ex.run();
}

// Cancelled at every suspension point, gracefully and forcibly: two jobs in a row on a pool of one
// (the second reuses the connection). Whatever the point, run() ends with its result or cancelled
// (never an error), the slot is free, the service ends up with no job and no connection once the
// backend is gone, and every CANCEL sent is accounted for. The service runs on its own thread, so
// that the sweep's cancel reaches only the client.
TEST(JobBackend, CancelledAtEverySuspensionPointNothingIsLeftAndEveryCancelIsAccountedFor) {
  service_thread service;
  std::unique_ptr<job_backend> jobs;
  int results = 0;
  std::uint64_t received_before = 0;
  auto report = quell::testing::cancel_sweep(
      [&](virtual_clock&) -> task<> {
        jobs = std::make_unique<job_backend>(
            gateway::job_backend_options{.service = service.address(), .pool_size = 1, .cancel_timeout = 60s});
        results = 0;
        received_before = service.read([](const job_service& s) { return s.cancels_received(); });
        return [](job_backend& j, int& n) -> task<> {
          if (co_await j.run(20ms) == "report after 20 ms") ++n;
          if (co_await j.run(30ms) == "report after 30 ms") ++n;
        }(*jobs, results);
      },
      [&](const quell::testing::sweep_point& p) {
        if (p.outcome == quell::testing::sweep_point::ended::error) std::rethrow_exception(p.error);
        if (p.at == 0 && results != 2) throw std::logic_error("the reference run did not deliver both results");
        if (jobs->available() != 1 || jobs->waiting() != 0) throw std::logic_error("a pool slot was lost");
        const auto st = jobs->stats();
        if (st.cancels_sent > 1) throw std::logic_error("more than one CANCEL sent");
        const std::uint64_t answered = st.cancels_acknowledged + st.cancels_timed_out + jobs->cancels_too_late();
        if (p.level == quell::cancel_level::graceful) {
          // The service answers: nothing times out, and each CANCEL sent got its reply.
          if (st.cancels_timed_out != 0) throw std::logic_error("a cancel timed out although the service answers");
          if (answered != st.cancels_sent) throw std::logic_error("a CANCEL sent was not answered");
          if (jobs->connections_closed() != 0 || jobs->open_connections() != jobs->idle_connections()) {
            throw std::logic_error("a gracefully cancelled job did not leave its connection clean in the pool");
          }
        } else {
          if (st.cancels_sent != 0) throw std::logic_error("a forced cancel sent a CANCEL");
          if (jobs->open_connections() != jobs->idle_connections()) throw std::logic_error("a connection is in use");
        }
        const std::uint64_t received =
            service.read([](const job_service& s) { return s.cancels_received(); }) - received_before;
        if (received != st.cancels_sent) throw std::logic_error("the service did not receive the CANCEL sent");
        jobs.reset();  // closes its idle connection (nothing is in flight on it any more)
        if (!service.drained()) throw std::logic_error("the service still runs a job or holds a connection");
      },
      {.io_grace = 2s});  // virtual time never has to move here: this only bounds each wait for I/O
  std::printf("[ sweep    ] job_backend::run twice: %llu suspension points, %llu completion windows, %llu runs\n",
              static_cast<unsigned long long>(report.points), static_cast<unsigned long long>(report.completions),
              static_cast<unsigned long long>(report.runs));
  EXPECT_GT(report.points, 4u);
}
