// gateway::backend: what the gateway's handlers use to run a slow job somewhere else.
//
// The gateway holds a concurrency permit while run() is in progress and releases it when run()
// ends, however it ends. So an implementation must not end run() before the backend has let go
// of the job: when run() is cancelled (the HTTP client went away), it tells the backend to stop,
// waits (bounded) for the backend to confirm, and only then ends cancelled. Each implementation
// states its exact contract: job_backend.hpp for the embedded job service, pg_backend.hpp for
// PostgreSQL. A backend belongs to the core (executor) it was first used on; the gateway reaches
// it from the other cores through quell::on (gateway.hpp).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "quell/task.hpp"

namespace gateway {

// Counters of the cancels run() sent to the backend. sent = acknowledged + timed_out + the cancels
// that ended otherwise (the job completed first, a forced cancel cut the wait short, the
// connection failed); each implementation says which.
struct backend_stats {
  std::uint64_t cancels_sent = 0, cancels_acknowledged = 0, cancels_timed_out = 0;
};

// The same counters as kept by a backend: counted on the core the backend runs on, read from
// any core (the gateway's /stats and its trace, on every core).
struct backend_counters {
  std::atomic<std::uint64_t> cancels_sent{0}, cancels_acknowledged{0}, cancels_timed_out{0};
  backend_stats snapshot() const noexcept {
    return {cancels_sent.load(std::memory_order_relaxed), cancels_acknowledged.load(std::memory_order_relaxed),
            cancels_timed_out.load(std::memory_order_relaxed)};
  }
};

class backend {
 public:
  virtual ~backend() = default;
  // Runs one job that takes `work` on the backend and yields its result text. Cancellable: see the
  // implementation's contract.
  virtual quell::task<std::string> run(std::chrono::milliseconds work) = 0;
  virtual backend_stats stats() const = 0;
  virtual std::string describe() const = 0;  // e.g. "embedded job service at 127.0.0.1:40123"
};

}  // namespace gateway
