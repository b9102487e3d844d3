// The gateway: an HTTP front end that runs a slow backend job per request under a global
// concurrency limit, and whose whole point is what happens when a client goes away.
//
//   GET /report?seconds=N[&timeout=T]  runs a job of N seconds on the backend (0 <= N <= 3600),
//                                      under one of K permits; optional deadline T seconds: 504
//   GET /stats                         JSON: requests in flight, permits available, cancels sent,
//                                      acknowledged and timed out
//   GET /hello                         "hello\n" (a trivial endpoint, for benchmarks)
// Every answer says which core served it (X-Core).
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
//
// EVERY CORE. One app serves the handlers of every core of a quell::runtime (the HTTP server
// with every_core): the permits are one pool for all cores (a shared_semaphore: a request on one
// core may wait for a permit a request on another core releases, and gets it only after that
// request's backend cancel was acknowledged), the counters are exact across cores at every
// moment, and stop_admitting() reaches waiters on every core. Backends: either one per core
// (app(std::vector<backend*>): core i's requests use backends[i], on core i), or one shared
// backend on one core (app(backend&): requests on other cores run their job there through
// quell::on, and a cancel follows them across; app_options::backend_core names that core).
// trace and log are called on the core of the request, concurrently when there are several.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>
#include <string>

#include "backend.hpp"
#include "quell/http.hpp"
#include "quell/shared_event.hpp"
#include "quell/shared_semaphore.hpp"

namespace gateway {

// A snapshot of the counters (each exact; together, taken one after another).
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
  // With one shared backend: the core it belongs to (where its jobs run).
  unsigned backend_core = 0;
};

class app {
 public:
  // One backend for every core (see EVERY CORE).
  app(backend& b, app_options options);
  // `trace` (optional) receives one line per step of each report: what the demo prints.
  app(backend& b, std::size_t permits, std::function<void(const std::string&)> trace = {});
  // One backend per core: core i's requests use per_core[i] (std::invalid_argument if empty).
  app(std::vector<backend*> per_core, app_options options);

  // From now on, requests waiting for a permit and new reports are answered 503. Any thread.
  void stop_admitting() noexcept { closing_.set(); }

  quell::http::server::handler handler();
  std::string stats_json() const;

  std::size_t permits() const noexcept { return permits_total_; }
  std::size_t permits_available() const { return permits_.available(); }
  gateway_stats stats() const noexcept;
  // Completes once no /report request is being handled, on any core (tests and the demo).
  quell::task<void> idle();
  // The backend core `core`'s requests use.
  backend& backend_for(unsigned core) const;

 private:
  quell::task<quell::http::response> route(quell::http::request& req);
  quell::task<quell::http::response> answer(quell::http::request& req);
  quell::task<quell::http::response> report(quell::http::request& req);
  quell::task<std::string> run_job(std::chrono::milliseconds work);
  void enter();
  void leave() noexcept;
  void trace(const std::string& line) const;

  struct counters {
    std::atomic<std::uint64_t> in_flight{0}, reports_done{0}, reports_cancelled{0}, reports_timed_out{0},
        reports_failed{0}, reports_refused{0}, waiting{0};
  };

  std::vector<backend*> backends_;  // one per core, or one shared
  app_options options_;
  std::size_t permits_total_;
  quell::shared_semaphore permits_;
  counters stats_;
  std::atomic<std::uint64_t> next_id_{1};
  // The current busy period's "all done" event: replaced when in_flight leaves 0, set when it
  // returns to 0 (a set-once event per period, so a waiter can never miss its end).
  mutable std::mutex idle_m_;
  std::shared_ptr<quell::shared_event> idle_;
  quell::shared_event closing_;
  std::function<void(const std::string&)>& trace_ = options_.trace;
};

// A client's keep-alive connection that the gateway at `at` serves on `core` (its X-Core header
// says): new connections are spread over the cores by a hash of their ports, so a few tries find
// one. For the demo and tests that must put a request on a given core; std::runtime_error if 256
// tries never reach it.
quell::task<quell::http::client> connection_on(quell::address at, unsigned core);

}  // namespace gateway
