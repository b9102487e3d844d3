#include "pg_backend.hpp"

namespace gateway {

pg_backend::pg_backend(std::string conninfo, std::size_t pool_size, quell::duration cancel_timeout)
    : pool_(std::move(conninfo), pool_size, quell::pg::connection_options{cancel_timeout}) {}

quell::task<std::string> pg_backend::run(std::chrono::milliseconds work) {
  quell::pg::lease lease = co_await pool_.acquire();
  // The connection counts its own cancels; fold them in when this job's frame goes, which is
  // also what happens when the job ends cancelled (no code after the last co_await runs then).
  struct fold_counters {
    backend_counters& into;
    quell::pg::connection& c;
    std::size_t sent = c.cancels_sent(), confirmed = c.cancels_confirmed(), timed_out = c.cancels_timed_out();
    ~fold_counters() {
      into.cancels_sent += c.cancels_sent() - sent;
      into.cancels_acknowledged += c.cancels_confirmed() - confirmed;
      into.cancels_timed_out += c.cancels_timed_out() - timed_out;
    }
  } fold{stats_, *lease};
  const double seconds = static_cast<double>(work.count()) / 1000.0;
  quell::pg::result r = co_await lease->query("select pg_sleep($1), pg_backend_pid()", seconds);
  co_return "slept " + std::to_string(work.count()) + " ms in PostgreSQL (backend pid " + std::string(r.at(0, 1)) + ")";
}

}  // namespace gateway
