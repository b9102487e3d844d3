// gateway::job_backend: the client of a job_service (job_service.hpp has the protocol), as a
// gateway::backend. A small pool of connections; one job at a time per connection.
//
//   gateway::job_backend jobs{{.service = svc.local_address(), .pool_size = 8}};
//   std::string text = co_await jobs.run(2s);        // "report after 2000 ms"
//
// RUN. run(work) waits for a free slot of the pool (a quell::semaphore of pool_size units:
// waiters are served first come, first served; a cancelled waiter takes nothing), takes an idle
// connection or connects a new one (lazily: the pool starts empty), writes "SUBMIT <id> <millis>"
// (ids count up per connection) and reads lines until the job's RESULT, whose text it returns.
// The connection then goes back to the pool, and only then the slot is freed (the next waiter
// finds the connection). An idle connection that turned readable while it waited in the pool
// (the service closed it, or sent something nobody asked for) is closed instead of being used.
//
// CANCELLATION (who resumes whom, and each race). What happens depends on where the request
// finds run():
//   - Waiting for a slot: it takes nothing and ends cancelled. Connecting: the connect is
//     cancelled (the half-open socket is closed) and run() ends cancelled. Nothing was sent.
//   - On the service (SUBMIT is being written, or written): the job is not abandoned. The request
//     is held back (quell::on_cancel) while a hook, shielded from graceful requests and bounded by
//     cancel_timeout (counted from the moment the request reached run()), after one turn's pause
//     (see forced requests below), does:
//       1. waits until the SUBMIT line is fully written (so the CANCEL can never precede it and
//          the two lines never interleave);
//       2. writes "CANCEL <id>", once (cancels_sent), unless the job's RESULT has already been
//          read (then nothing is sent);
//       3. waits until the reader, which has kept reading all the while, has seen the reply to
//          the CANCEL.
//     Then run() ends cancelled, and the connection is clean and goes back to the pool: the
//     service has answered the CANCEL, so no line about this job is left to come.
//   - The reply is CANCELLED: the service has stopped the job. Counted as acknowledged; run()
//     ends cancelled.
//   - The job finished first (completion wins): its RESULT arrives (before the DONE that answers
//     a CANCEL already sent, or before any CANCEL was sent), and run() returns the result; the
//     caller's next suspension point is cancelled. Not counted as acknowledged: the cancel did not
//     stop anything (cancels_too_late() counts a CANCEL sent and answered DONE).
//   - No reply within cancel_timeout (the service ignores cancels, or does not read): counted as
//     timed out; the reader is cancelled and the connection closed, never returned to the pool
//     with a job possibly still running on it (the service cancels the job when it sees the
//     connection close). run() still ends cancelled, so the caller's permit is released within
//     cancel_timeout. (If the SUBMIT itself could not be written within cancel_timeout, no CANCEL
//     is sent and nothing is counted; the connection is closed the same way.)
//   - A forced request does not wait for the service and sends nothing: the hook starts (as
//     on_cancel always does) but first yields one turn, where the forced request ends it; a forced
//     request that arrives while a graceful one's hook waits cuts that wait short. The reader is
//     cancelled, the connection closed, and the service cancels the job when it sees it close
//     (pg differs here: it still sends its cancel, because a closed libpq connection does not stop
//     a running statement, while this service always stops a vanished client's jobs). A CANCEL
//     already sent stays counted as sent only.
//   - A cancel request pending before run() got its connection means nothing is sent at all.
//
// ERRORS. The connection failing (refused, reset, end of file), an ERROR line from the service,
// or a line that is not the expected reply make run() throw gateway::backend_error saying what
// happened and where. The connection is then closed and dropped from the pool; a later run()
// opens a new one in its slot. An error while the hook waits ends run() with that error, not
// cancelled (an error is never dropped).
//
// The backend belongs to one executor's thread and must outlive every run() (destroying it while
// a run() holds a slot is reported with std::terminate). Destroying it closes its idle
// connections.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend.hpp"
#include "quell/clock.hpp"
#include "quell/net.hpp"
#include "quell/semaphore.hpp"
#include "quell/task.hpp"

namespace gateway {

// The job service could not be reached, failed, or said something unexpected.
class backend_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct job_backend_options {
  quell::address service;
  std::size_t pool_size = 8;  // at most this many connections, and this many jobs at once
  // How long a cancelled run() waits for the service to answer its CANCEL before closing the
  // connection instead, counted from when the cancel request reached run().
  quell::duration cancel_timeout = std::chrono::seconds(1);
  std::string label = "job service";  // describe(): "<label> at <address>"
};

class job_backend final : public backend {
 public:
  static constexpr std::size_t max_reply_line = 4096;

  // Throws std::invalid_argument for a pool_size of 0.
  explicit job_backend(job_backend_options options);
  job_backend(const job_backend&) = delete;
  job_backend& operator=(const job_backend&) = delete;
  ~job_backend() override;

  // See RUN, CANCELLATION and ERRORS above. `work` must not be negative (std::invalid_argument).
  quell::task<std::string> run(std::chrono::milliseconds work) override;
  backend_stats stats() const override;
  std::string describe() const override;

  const job_backend_options& options() const noexcept { return options_; }
  std::size_t idle_connections() const noexcept { return idle_.size(); }
  std::size_t open_connections() const noexcept { return open_; }  // idle + in use
  std::size_t connections_opened() const noexcept { return opened_; }
  std::size_t connections_closed() const noexcept { return closed_; }    // closed instead of reused
  std::size_t available() const noexcept { return slots_.available(); }  // free slots
  std::size_t waiting() const noexcept { return slots_.waiting(); }
  std::uint64_t cancels_too_late() const noexcept { return too_late_; }  // sent, answered DONE

 private:
  struct connection;
  struct lease;

  std::unique_ptr<connection> take_idle() noexcept;
  void give_back(std::unique_ptr<connection> c, bool clean) noexcept;
  quell::task<std::string> read_line(connection& c);

  job_backend_options options_;
  quell::semaphore slots_;
  std::vector<std::unique_ptr<connection>> idle_;
  std::size_t open_ = 0;
  std::size_t opened_ = 0;
  std::size_t closed_ = 0;
  backend_counters stats_;
  std::uint64_t too_late_ = 0;
};

}  // namespace gateway
