// quell's cancellation model and the leaf protocol.
//
// THE MODEL
//
// Every operation ends exactly once, in one of three ways: with a value, with an exception, or
// *cancelled*. Cancelled is not an exception; `catch (...)` never sees it. A coroutine whose
// awaited operation ends cancelled ends cancelled as well: no code after that `co_await` runs, and
// its locals are destroyed (in reverse order) when its owner destroys the frame.
//
// A cancel request is pushed down, never polled for. Cancelling a task forwards the request to
// the awaitable that task is suspended on; if that is another task, on to its awaitable, and so
// on down to a leaf (a timer, a socket read, `pending()`). The leaf decides how the cancellation
// ends, and the answer travels back up.
//
// Requests have a level. A *graceful* request is the normal one. A *forced* request is the
// second level: it also reaches work that ignores graceful requests (a cleanup hook that is
// running, a shielded operation), which is what a second Ctrl-C or an expired grace period uses.
// Requesting again at the same or a lower level is a no-op; the cancellation already under way
// continues. Each request carries a `cancel_reason`; the first reason a task receives is the one
// it keeps.
//
// Requests are sticky: once a task has been asked to cancel, every later suspension point in it
// is cancelled. If an operation *completed anyway* (the kernel delivered the bytes before the
// cancel landed), its result is delivered to the task, and the task is cancelled at its next
// `co_await`. "Cancelled" therefore always means "it did not happen".
//
// THE LEAF PROTOCOL (how to write a cancellable awaitable)
//
// An awaiter is an ordinary C++20 awaiter (`await_ready`, `await_suspend`, `await_resume`). It
// opts into cancellation with up to three more members, all noexcept:
//
//   bool await_early_cancel() noexcept;              // optional
//   bool await_cancel(std::coroutine_handle<> h) noexcept;
//   bool await_must_resume() const noexcept;
//
//   bool await_give_back() noexcept;                 // optional
//
// await_early_cancel and await_cancel may instead take a trailing `const quell::cancel_request&` to see the level and
// the reason; the two-argument `await_cancel` is also called a second time if a forced request follows a graceful one
// (that is how combinators forward the escalation; a leaf rarely needs it).
//
// The awaiter state machine, driven by quell on behalf of the awaiting coroutine
// (include/quell/detail/driver.hpp is the one implementation, for every leaf and combinator):
//
//   NotStarted --(no cancel pending)--> await_ready() --true--> Done (await_resume)
//                                                   --false-> await_suspend(h) --> Running
//   NotStarted --(cancel already pending)--> await_early_cancel()
//        true : Cancelled. Nothing else is called; the operation never started.
//        false: the operation insists on starting; it is started as above and await_cancel()
//               is called right after await_suspend().
//   Running --(leaf resumes h)--> await_must_resume()?
//        true : Done: await_resume() gives the result (a value or an exception).
//        false: Cancelled.
//   Running --(cancel request)--> await_cancel(h)
//        true : Cancelled, synchronously. The leaf must never resume h afterwards.
//        false: Cancelling. The leaf resumes h exactly once later (it may already have done so
//               during the call); then await_must_resume() decides as above: true means it
//               completed anyway and the result is delivered (completion wins).
//
// Done, but its waiter will not use the result: await_give_back()?
//        true : the awaiter put what it produced back where the next operation finds it (bytes
//               into the stream's buffer, a connection into the listener's queue, a value into
//               the channel); await_resume() is not called.
//        false (or member absent): await_resume() is called and its value dropped (an exception
//               it throws is kept). That is how a race discards a loser that completed anyway.
//    A combinator asks this only of an operation it drives itself; a result that already went
//    through a task or another combinator cannot be put back.
//
// await_must_resume() is asked every time h is resumed, not only after a request. A leaf that was
// never asked to cancel normally answers true; answering false without a request makes the
// cancellation start at the leaf and travel *up* (that is how a child task that ended cancelled
// ends its parent, and how an external token ends the operations it governs).
//
// Re-entrancy: quell never calls into an awaiter while another call into it is in progress. A
// request that arrives during await_suspend or await_cancel (e.g. a hook cancels its own
// executor) is delivered when that call has returned; if the operation completed meanwhile,
// completion wins. Requests to tasks are recorded at once, so they take effect at the task's
// next suspension point even if it is still running.
//
// Who resumes whom: the leaf resumes `h`, which is not the coroutine itself but quell's driver
// for this `co_await`; the driver then either resumes the coroutine body (value, exception,
// completed anyway) or reports the coroutine as cancelled to *its* waiter without running any of
// its code. A leaf may resume `h` from inside await_suspend (that counts as completing at once)
// and from any later point on the executor's thread. It must not resume it twice.
//
// Races, and how each one ends:
//   - cancel requested before the operation started: await_early_cancel decides; the default
//     (member absent) is "cancelled, never started", so nothing of the operation runs;
//   - the leaf completed and resumed h, then the cancel arrives: the request does not reach the
//     leaf (it is done) and stays pending for the task's next suspension point;
//   - the leaf completed and queued h's resumption, and the cancel arrives before h ran (the
//     completion window): await_cancel is called although the work is done. A leaf whose result
//     the next call can take (a read's bytes, an accepted connection, a datagram, a signal, a
//     channel value, a permit) keeps it there and answers await_must_resume() == false: it did
//     not happen, and nothing is lost if the waiter is a combinator that would discard it. A leaf
//     whose result cannot be kept (a write that went out, a connect) answers true: completion
//     wins. (Answering "completed anyway" for a result the next call could have taken would let
//     a combinator drop it: the bug this rule exists for.)
//   - the cancel arrives, then the leaf completes before it could stop: the leaf resumes h and
//     answers await_must_resume() == true; the result is delivered (completion wins), or, by the
//     rule of the completion window above, kept for the next call with the answer false;
//   - the cancel arrives and the leaf stops: await_cancel returns true, or the leaf resumes h and
//     answers false.
//
// Awaitables without `await_cancel` ("unaware" awaitables, e.g. from another library) are safe:
// before they start a pending cancel skips them; once started they are not cancellable, the
// request waits for them to finish, their result is delivered, and the request takes effect at
// the next suspension point. Nothing is ever "best effort".
//
// docs/writing-a-leaf.md walks through a complete example.
#pragma once

#include <concepts>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace quell {

enum class cancel_level : std::uint8_t {
  none = 0,
  graceful = 1,  // the normal request: cleanup hooks and shields are respected
  forced = 2,    // also cancels running cleanup hooks and shielded work
};

// Why a cancellation happened. Built-in kinds carry no allocation; `requested` may carry a message.
enum class cancel_kind : std::uint8_t {
  requested,          // someone called cancel(), with an optional message
  race_decided,       // a sibling in a race finished first
  sibling_failed,     // a sibling in a race, join or scope threw
  deadline,           // a deadline or timeout expired
  shutdown,           // the executor is shutting down or being destroyed
  peer_disconnected,  // the remote end went away
  signal,             // SIGINT / SIGTERM (run_main)
};

class cancel_reason {
 public:
  cancel_reason() noexcept = default;
  explicit cancel_reason(cancel_kind k) noexcept : kind_(k) {}
  cancel_reason(cancel_kind k, std::string message)
      : kind_(k), message_(std::make_shared<const std::string>(std::move(message))) {}

  cancel_kind kind() const noexcept { return kind_; }
  std::string_view message() const noexcept { return message_ ? std::string_view(*message_) : std::string_view(); }
  // "shutdown", or "requested: client went away" when there is a message.
  std::string describe() const;

 private:
  cancel_kind kind_ = cancel_kind::requested;
  std::shared_ptr<const std::string> message_;
};

std::string_view to_string(cancel_kind k) noexcept;

// What travels down the await chain.
struct cancel_request {
  cancel_level level = cancel_level::graceful;
  cancel_reason reason;

  bool forced() const noexcept { return level == cancel_level::forced; }
};

// Adds `r` to what `into` already holds: the first reason wins, the strongest level counts.
// Returns true if `into` got stronger (the request must be passed on).
inline bool merge_request(cancel_request& into, const cancel_request& r) noexcept {
  if (r.level <= into.level) return false;
  if (into.level == cancel_level::none) into.reason = r.reason;
  into.level = r.level;
  return true;
}

// An awaiter that takes part in cancellation (see the protocol above).
template <class A>
concept cancellable_awaiter = (
                                  requires(A & a, std::coroutine_handle<> h) {
                                    { a.await_cancel(h) }
                                    noexcept->std::same_as<bool>;
                                  } ||
                                  requires(A & a, std::coroutine_handle<> h, const cancel_request& r) {
                                    { a.await_cancel(h, r) }
                                    noexcept->std::same_as<bool>;
                                  }) &&
                              requires(const A& a) {
  { a.await_must_resume() }
  noexcept->std::same_as<bool>;
};

namespace detail {

// The protocol's defaults, in one place.

template <class A>
bool protocol_early_cancel(A& a, const cancel_request& r) noexcept {
  if constexpr (requires {
                  { a.await_early_cancel(r) } -> std::same_as<bool>;
                }) {
    return a.await_early_cancel(r);
  } else if constexpr (requires {
                         { a.await_early_cancel() } -> std::same_as<bool>;
                       }) {
    return a.await_early_cancel();
  } else {
    return true;  // never started: nothing of it runs
  }
}

// `repeat` is true when this is an escalation after an earlier request returned false.
template <class A>
bool protocol_cancel(A& a, std::coroutine_handle<> h, const cancel_request& r, bool repeat) noexcept {
  if constexpr (requires {
                  { a.await_cancel(h, r) } -> std::same_as<bool>;
                }) {
    return a.await_cancel(h, r);
  } else if constexpr (requires {
                         { a.await_cancel(h) } -> std::same_as<bool>;
                       }) {
    return repeat ? false : a.await_cancel(h);
  } else {
    return false;  // unaware: it will finish by itself and its result is delivered
  }
}

// Whether a finished operation put its unused result back (see await_give_back above).
template <class A>
bool protocol_give_back(A& a) noexcept {
  if constexpr (requires {
                  { a.await_give_back() } -> std::same_as<bool>;
                }) {
    return a.await_give_back();
  } else {
    return false;
  }
}

template <class A>
bool protocol_must_resume(const A& a) noexcept {
  if constexpr (requires {
                  { a.await_must_resume() } -> std::same_as<bool>;
                }) {
    return a.await_must_resume();
  } else {
    return true;
  }
}

}  // namespace detail
}  // namespace quell
