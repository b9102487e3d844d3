// gateway::job_service: an in-process job service on a local TCP port. It is the backend the
// gateway's demo and tests talk to: slow jobs that can be cancelled while they run, over a real
// socket, so that a client has to cancel them asynchronously (send a request, wait for the answer).
//
//   auto svc = gateway::job_service::bind();          // 127.0.0.1, a free port
//   co_await quell::with_scope([&](quell::scope& s) -> quell::task<> {
//     auto server = s.spawn([&] { return svc.serve(); });
//     ... talk to svc.local_address() ...
//     server.cancel();                                 // closes everything, waits for the jobs
//   });
//
// PROTOCOL. ASCII lines ending in "\n" (a "\r" before it is ignored), fields separated by one space.
// Ids are unsigned decimal numbers (64-bit) chosen by the client, unique among its running jobs.
//   client -> service
//     SUBMIT <id> <millis>    start a job that works for <millis> ms (at most max_millis)
//     CANCEL <id>             stop that job
//   service -> client
//     RESULT <id> <text>      the job finished; <text> is "report after <millis> ms"
//     CANCELLED <id>          a CANCEL stopped the job; sent only once the job has stopped; no
//                             RESULT for it follows
//     DONE <id>               a CANCEL named a job that had already finished (its RESULT is
//                             written before the DONE) or that is unknown
//     ERROR <text>            the line before was malformed; the service then closes the connection
// Every CANCEL gets exactly one reply (CANCELLED or DONE), unless cancels are ignored, so a client
// that counts its cancels can read the connection back to a clean state. A second CANCEL for a
// job already being cancelled gets DONE (after the CANCELLED). A job's reply lines are written
// whole, one writer at a time: lines of concurrent jobs never interleave.
//
// Malformed input: an unknown verb, a missing, extra or non-numeric field, an id or duration out of
// range, a SUBMIT for an id that is still running, a line longer than max_line bytes. The service
// answers ERROR <text> and closes the connection (cancelling its jobs); other connections are not
// affected.
//
// JOBS. A job is a task of the connection's scope that sleeps <millis> on the executor's clock
// (so a virtual clock drives it in tests) and then replies. A connection runs any number of jobs
// at once. When its client goes away (end of file, a read or write error), or after an ERROR,
// the connection's running jobs are cancelled: that is how the service frees what a vanished
// client held. That holds in every mode, ignore_cancels included.
//
// Races between a job finishing and a CANCEL for it (single-threaded, so "at once" means "in the
// same turn"): whichever the job sees first wins. Work done first: RESULT, then DONE for the
// CANCEL. Cancel first: the job's work is stopped (its timer removed), then CANCELLED.
//
// IGNORING CANCELS. set_ignore_cancels(true) (at any time) makes the service read and count
// CANCEL lines but do nothing else: no reply, the job runs on. It is how tests and the demo show
// a backend that does not confirm cancels.
//
// LIFETIME. bind() listens at once (synchronously). serve() accepts connections until it is
// cancelled; then it cancels every connection and its jobs, waits for all of them (structured:
// nothing it started outlives it), closes the connections and the listener, and ends cancelled.
// serve() runs at most once (std::logic_error otherwise); the object may be moved, even while
// serve() runs (its state is on the heap), but must not be destroyed before serve() has ended
// (std::terminate with a message). Everything belongs to one executor's thread. The counters may
// be read at any time on that thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "quell/net.hpp"
#include "quell/task.hpp"

namespace gateway {

namespace detail {
struct service_state;
}

class job_service {
 public:
  static constexpr std::size_t max_line = 1024;                  // bytes, "\n" excluded
  static constexpr std::uint64_t max_millis = 24 * 3600 * 1000;  // one day

  // Listens on `local` (port 0: a free port). Throws std::system_error ("bind ...: Address already
  // in use").
  static job_service bind(const quell::address& local = quell::address::parse("127.0.0.1", 0));

  job_service(job_service&&) noexcept;
  job_service& operator=(job_service&&) = delete;
  ~job_service();

  quell::address local_address() const;
  // Accepts and serves clients until cancelled (see LIFETIME). Throws if accepting fails for a
  // reason other than a transient shortage (too many open files, a connection aborted early).
  quell::task<void> serve();

  void set_ignore_cancels(bool ignore) noexcept;
  bool ignore_cancels() const noexcept;

  std::uint64_t jobs_running() const noexcept;      // started, not yet stopped or finished
  std::uint64_t jobs_started() const noexcept;      // SUBMITs accepted
  std::uint64_t jobs_completed() const noexcept;    // worked their full time (RESULT written or being written)
  std::uint64_t jobs_cancelled() const noexcept;    // stopped early: CANCEL, client gone, ERROR or shutdown
  std::uint64_t cancels_received() const noexcept;  // well-formed CANCEL lines, ignored ones included
  std::uint64_t cancels_ignored() const noexcept;   // CANCEL lines read while ignoring cancels
  std::uint64_t connections() const noexcept;       // client connections open now
  std::uint64_t connections_accepted() const noexcept;
  std::uint64_t protocol_errors() const noexcept;  // ERROR replies (connections closed for bad input)

 private:
  explicit job_service(std::unique_ptr<detail::service_state> s) noexcept;
  std::unique_ptr<detail::service_state> s_;
};

}  // namespace gateway
