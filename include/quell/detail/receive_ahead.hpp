// Receive-ahead: a stream socket keeps one multishot receive armed (into the reactor's ring of
// provided buffers), a listener one multishot accept, and reads and accepts wait for what they
// bring in user space. Cancelling a read or an accept is then synchronous and touches no kernel
// state: nothing the kernel produced was handed to the operation being cancelled, so nothing can
// be lost with it.
//
// The multishot's life, per descriptor (receive_ahead::mode):
//
//   idle --first read or accept that must wait--> armed
//   armed --each CQE: bytes (or a connection) go to the parked operations, the rest to the
//           descriptor's queue (io_object::stash / stash_fds)-->
//     final CQE, by reason:
//       the queue reached its bound            --> full     (re-armed when a read takes it below half)
//       the ring had no buffer (ENOBUFS)       --> starved  (re-armed at the next flush: the ring is
//                                                            refilled as each CQE is handled)
//       the kernel's length cap, or a full CQ  --> armed again at the next flush
//       end of stream, or an error             --> ended    (delivered after the bytes before it)
//       cancelled: close() or the executor stopping --> idle
//       the socket turned receive-ahead off    --> off      (parked reads go to the kernel one by one)
//
// Ring buffers are never held: each CQE's bytes are copied to the parked read's buffer (one copy,
// the same as a plain recv) or to the socket's queue, and the buffer goes back to the ring at once.
// So one slow reader cannot starve the other sockets of buffers, and the per-socket bound counts
// real bytes. The bound: with the kernel's total length cap (Linux 6.17) the multishot is armed
// for at most `bound - queued` bytes and stops by itself (overshoot below one buffer); without
// it, the socket cancels its multishot when the queue reaches the bound (overshoot: what the
// kernel received in that wake-up, up to 32 buffers). A listener's bound counts connections and
// is always enforced by cancelling.
//
// Invariant: while an operation is parked, the descriptor's queue is empty (whatever arrives is
// offered to the parked operations first; what one gives back is offered again).
#pragma once

#include <cstddef>
#include <cstdint>

#include "quell/detail/reactor.hpp"

namespace quell::detail {

// Ring defaults, measured in bench/compare (W5, W6b and W12 of bench/compare/WORKLOADS.md): see docs/decisions.md.
inline constexpr std::uint32_t default_receive_buffer_size = 16 * 1024;
inline constexpr std::uint32_t default_receive_buffers = 512;
inline constexpr std::size_t default_receive_bound = 64 * 1024;
inline constexpr std::size_t default_accept_bound = 64;

struct receive_ahead : io_op {
  enum class kind : std::uint8_t { stream, listener };
  enum class mode : std::uint8_t { idle, armed, full, starved, ended, off };

  receive_ahead(io_object* o, kind k) noexcept;

  kind what;
  mode m = mode::idle;
  int end = 0;                  // ended: 0 (end of stream) or the error, delivered once
  bool stop_for_bound = false;  // its cancel was sent because the queue reached the bound
  bool turning_off = false;     // its cancel was sent because the socket turned receive-ahead off
  bool capped = false;          // armed with the kernel's total length cap
  bool raised = false;          // ... raised for a waiting read (cancelled if that read goes)
  std::uint32_t cap = 0;
  reactor* r = nullptr;  // the reactor it was last armed on
};

// Whether a read (stream) or accept (listener) on `o` waits for receive-ahead rather than going
// to the kernel itself; creates the state on first use. Called from await_suspend. Throws
// std::logic_error if the multishot is armed on another executor's reactor.
bool ahead_wanted(io_object* o, receive_ahead::kind k);
// Parks `op` on its object (state parked) and arms the multishot if it is idle.
void ahead_park(io_op* op) noexcept;
// Takes a parked `op` off its object (its cancel): no system call.
void ahead_unpark(io_op* op) noexcept;
// Offers what `o` holds to its parked operations, in order; resumes each one that finishes.
void ahead_feed(io_object* o) noexcept;
// A read or accept took from the queue outside feed (from await_ready): re-arm a full socket
// that has come below half its bound.
void ahead_took(io_object* o) noexcept;
// The descriptor is closing (close(), or its owner dropped it): every parked operation ends with
// `res` (-ECANCELED), and an armed multishot becomes I/O the executor waits for, so the descriptor
// is released at its next step rather than whenever other I/O happens. Dropped without close()
// (nobody waits for the release), the socket is also shut down at once, so the peer sees the end
// (a listener refuses new connections) now, as it did when no multishot held the socket open.
void ahead_closing(io_object* o, int res, bool dropped) noexcept;
// What a read finds when the queue is empty: 1 if nothing is known yet, 0 for end of stream, or
// the error (delivered once; end of stream after it).
int ahead_take_end(io_object* o) noexcept;
// Turns receive-ahead off for `o` (before or after it was armed): an armed multishot is cancelled,
// and reads parked meanwhile go to the kernel once it has ended. What it received stays queued.
void ahead_turn_off(io_object* o) noexcept;
// The reactor is about to submit a multishot it set aside with rearm_later: false if it should not.
bool ahead_rearm_wanted(io_op* op) noexcept;
// Frees the state (io_object::release).
void ahead_destroy(receive_ahead* a) noexcept;

}  // namespace quell::detail
