// The gateway's PostgreSQL backend: a job of N seconds is `select pg_sleep(N)` on a pooled
// connection. Cancellation is quell::pg's (quell/pg.hpp): the server gets a cancel request once,
// the query ends (SQLSTATE 57014) and the connection is idle again before run() ends cancelled;
// if the server does not confirm within the cancel timeout, the connection is closed, never
// returned to the pool dirty.
#pragma once

#include <string>

#include "backend.hpp"
#include "quell/pg.hpp"

namespace gateway {

class pg_backend final : public backend {
 public:
  pg_backend(std::string conninfo, std::size_t pool_size, quell::duration cancel_timeout);

  quell::task<std::string> run(std::chrono::milliseconds work) override;
  backend_stats stats() const override { return stats_.snapshot(); }
  std::string describe() const override { return "PostgreSQL (" + std::to_string(pool_.size()) + " connections)"; }

  quell::pg::pool& pool() noexcept { return pool_; }

 private:
  quell::pg::pool pool_;
  backend_counters stats_;
};

}  // namespace gateway
