// The gateway example's job client, job_backend (job_backend.hpp), against the job service on real
// loopback sockets: pooling, cancel round trips, the cancel timeout, a cancel sweep. Time is virtual
// (job_fixture.hpp), so timings are asserted exactly.
#include <gtest/gtest.h>

#include "job_fixture.hpp"

using namespace gateway::test;

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
