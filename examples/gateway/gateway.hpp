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
// confirmed. A backend failure answers 502.
#pragma once

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
};

class app {
 public:
  // `trace` (optional) receives one line per step of each report: what the demo prints.
  app(backend& b, std::size_t permits, std::function<void(const std::string&)> trace = {});

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
  std::size_t permits_total_;
  quell::semaphore permits_;
  gateway_stats stats_;
  std::uint64_t next_id_ = 1;
  quell::event idle_{true};
  std::function<void(const std::string&)> trace_;
};

}  // namespace gateway
