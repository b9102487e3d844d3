// The gateway: an HTTP front end that runs a slow backend job per request under a global
// concurrency limit, and whose whole point is what happens when a client goes away.
//
//   GET /report?seconds=N[&timeout=T]  runs a job of N seconds on the backend (0 <= N <= 3600),
//                                      under one of K permits; optional deadline T seconds: 504
//   GET /stats                         JSON: requests in flight, permits available, cancels sent,
//                                      acknowledged and timed out
//   GET /hello                         "hello\n" (a trivial endpoint, for benchmarks)
//
// The permit is taken before the job starts and is a local of the handler, so it is released
// only when the handler's task has finished. When the client disconnects, quell::http cancels
// the handler (reason peer_disconnected); the cancel travels into backend::run, whose on_cancel
// hook tells the backend to stop and waits for its acknowledgement (bounded by the backend's
// cancel timeout), and only then does the handler end and the permit return. No detached
// cleanup, no blocking destructor: the accounting is exact at every moment.
//
// A deadline (timeout=) cuts the job the same way and answers 504 once the backend has
// confirmed. A backend failure answers 502 with a generic message and the request's id (the
// X-Request-Id header, "#N" in the log); the backend's own message, which may name its host and
// port, goes to the log only.
//
// ADMISSION (app_options). A request waits for a permit only if fewer than max_waiting already
// do, and for at most max_wait; otherwise it is answered 503 with Retry-After at once (a queue
// that grows without bound holds every waiter's request and connection). seconds= above
// max_seconds is a 400. Once stop_admitting() is called (the server's shutdown began), waiters
// and new reports are answered 503 at once: they would not start within the grace period anyway,
// and a 503 tells their clients to go elsewhere rather than closing on them.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "backend.hpp"
#include "quell/event.hpp"
#include "quell/http.hpp"
#include "quell/semaphore.hpp"

namespace gateway {

struct gateway_stats {
  std::uint64_t in_flight = 0;          // /report requests being handled (waiting for a permit or running)
  std::uint64_t reports_done = 0;       // answered 200
  std::uint64_t reports_cancelled = 0;  // ended cancelled (client gone, shutdown)
  std::uint64_t reports_timed_out = 0;  // answered 504
  std::uint64_t reports_failed = 0;     // answered 502
  std::uint64_t reports_refused = 0;    // answered 503: queue full, waited too long, shutting down
  std::uint64_t waiting = 0;            // waiting for a permit now
};

struct app_options {
  std::size_t permits = 4;
  std::size_t max_waiting = 64;                          // requests queued for a permit, at most
  quell::duration max_wait = std::chrono::seconds(30);  // the longest wait for a permit
  double max_seconds = 60;                               // the longest job a request may ask for
  // One line per step of each report (what the demo prints); optional.
  std::function<void(const std::string&)> trace;
  // Errors with their detail (a backend's message); default: stderr.
  std::function<void(const std::string&)> log;
};

class app {
 public:
  app(backend& b, app_options options);
  // `trace` (optional) receives one line per step of each report: what the demo prints.
  app(backend& b, std::size_t permits, std::function<void(const std::string&)> trace = {});

  // From now on, requests waiting for a permit and new reports are answered 503.
  void stop_admitting() { closing_.set(); }

  quell::http::server::handler handler();
  std::string stats_json() const;

  std::size_t permits() const noexcept { return permits_total_; }
  std::size_t permits_available() const noexcept { return permits_.available(); }
  const gateway_stats& stats() const noexcept { return stats_; }
  // Set while no /report request is being handled (tests and the demo wait on it).
  quell::event& idle() noexcept { return idle_; }
  backend& backend_used() noexcept { return backend_; }

 private:
  quell::task<quell::http::response> route(quell::http::request& req);
  quell::task<quell::http::response> report(quell::http::request& req);
  void trace(const std::string& line) const {
    if (trace_) trace_(line);
  }

  backend& backend_;
  app_options options_;
  std::size_t permits_total_;
  quell::semaphore permits_;
  gateway_stats stats_;
  std::uint64_t next_id_ = 1;
  quell::event idle_{true};
  quell::event closing_;
  std::function<void(const std::string&)>& trace_ = options_.trace;
};

}  // namespace gateway
