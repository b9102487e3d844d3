// run_blocking(fn): code that blocks (a hashing library, a legacy client, a system call with no
// io_uring form) on a pool of threads, as a cancellable operation of the calling task.
//
//   std::string digest = co_await quell::run_blocking([&] { return sha256_file(path); });
//
//   // A function that can stop early takes a std::stop_token: cancelling the caller requests
//   // stop, and the caller waits until the function has returned.
//   auto rows = co_await quell::run_blocking([&](std::stop_token st) {
//     std::vector<row> out;
//     while (!st.stop_requested() && legacy.next(out)) {}
//     return out;
//   });
//
// THE POOL. One per runtime, shared by its cores (a lone executor has its own). Its threads start
// when a job needs one and none is idle, up to a bound (runtime_options::blocking_threads,
// executor::set_blocking_threads; default 64), and end with the runtime or executor. A job that
// finds every thread busy waits in the pool's queue, in order, for one to be free.
//
// THE OPERATION. `co_await run_blocking(fn)` is a leaf of the calling task. It ends with what fn
// returned, or with the exception fn threw. fn runs on a pool thread: it must not touch quell
// objects of the caller's executor (tasks, streams, channels); what it captures by reference
// stays valid, because the caller does not resume until fn has returned.
//
// Who resumes whom: the pool thread that ran fn stores how it ended and sends the job home
// through the caller's core's mailbox (the one cross-thread message path); the caller's core
// resumes the caller. Nothing runs unowned: while fn runs, its caller waits for it, and the
// executor or runtime waits for the caller.
//
// Cancellation, and each race:
//   - Requested before the job started (the caller was already cancelled, or the job is still
//     queued): the job is taken out of the queue and the operation ends cancelled at once. fn
//     never runs.
//   - Requested while fn runs: stop is requested on fn's std::stop_token (if it takes one), and
//     the caller waits until fn returns. A value fn returned anyway, or an exception it threw, is
//     delivered (completion wins): the caller's cancellation stays requested and takes effect at
//     its next suspension point. A function that wants "stopped" to mean "did not happen" says so
//     in what it returns (an optional, a status) or by throwing.
//   - A forced request is the same: a thread cannot be abandoned or killed safely (fn may hold
//     references into the caller's frame, locks, half-written state), so a forced request also
//     waits for fn. Bound such waits with what fn honours (its stop token, a timeout of its own).
//   - fn returned and the job is on its way home when the request arrives (the completion
//     window): the result is delivered (completion wins).
// A thread that cannot be started when none exists is a std::system_error from the co_await.
// run_blocking outside an executor, or in a runtime_options::one_thread runtime (which starts no
// threads), is a std::logic_error.
#pragma once

#include <stop_token>
#include <type_traits>
#include <utility>

#include "quell/detail/blocking_pool.hpp"

namespace quell {

// fn: invocable with a std::stop_token, or with nothing. The operation yields what fn returns.
// clang-format off
template <class F>
  requires(std::is_invocable_v<std::decay_t<F>&, std::stop_token> || std::is_invocable_v<std::decay_t<F>&>)
detail::blocking_awaiter<std::decay_t<F>> run_blocking(F&& fn) {
  // clang-format on
  return detail::blocking_awaiter<std::decay_t<F>>(std::forward<F>(fn));
}

}  // namespace quell
