// What the job service's and job_backend's tests share (test_job_service.cpp, test_job_backend.cpp):
// a service beside the test on a virtual clock, a raw client speaking the protocol by hand, and a
// service on a thread of its own.
#pragma once

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

// Internal linkage: clang 14 with -fsanitize=function (UBSan) cannot emit the prologue of an
// inline (comdat) coroutine ("Cannot represent a difference across sections"), and these are
// coroutines defined in a header.
namespace gateway::test {
namespace {

using namespace std::chrono_literals;
using gateway::backend_error;
using gateway::job_backend;
using gateway::job_service;
using quell::task;
using quell::tcp_stream;
using quell::virtual_clock;

// Real time the virtual clock gives a loopback peer to answer before jumping to the next deadline.
constexpr auto io_grace = 100ms;

inline long long ms_since(const virtual_clock& c, quell::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(c.now() - t0).count();
}

// Runs body(svc, clock) on a virtual clock while svc.serve() runs beside it; stops the service
// once the body has returned.
inline void with_service(const std::function<task<>(job_service&, virtual_clock&)>& body) {
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
inline task<bool> eventually(std::function<bool()> cond) {
  for (int i = 0; i < 200000; ++i) {
    if (cond()) co_return true;
    co_await quell::yield();
  }
  co_return cond();
}

inline job_backend make_backend(const job_service& svc, std::size_t pool = 8, quell::duration cancel_timeout = 1s) {
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

inline task<raw> connect_raw(const job_service& svc) {
  raw r;
  r.s = co_await tcp_stream::connect(svc.local_address());
  co_return r;
}

}  // namespace
}  // namespace gateway::test
