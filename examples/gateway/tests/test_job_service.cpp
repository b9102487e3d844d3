// The gateway example's job service (job_service.hpp), its protocol spoken by hand on real loopback
// sockets. Time is virtual (job_fixture.hpp): jobs and deadlines run on a quell::virtual_clock, so
// timings are asserted exactly and nothing depends on the machine's speed.
#include <gtest/gtest.h>

#include "job_fixture.hpp"

using namespace gateway::test;

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
