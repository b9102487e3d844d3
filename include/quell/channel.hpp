// channel<T>: a bounded multi-producer, multi-consumer queue between tasks.
//
//   quell::channel<std::string> ch{16};          // capacity >= 1
//   co_await ch.send(std::move(s));              // waits while the channel is full
//   std::optional<std::string> v = co_await ch.receive();  // nullopt: closed and drained
//   ch.close();
//
// Order: values are received in the order they were sent; waiting senders and receivers are
// served first come, first served.
//
// close(): no more sends. Receivers first drain what was sent, then get std::nullopt (end of
// stream). Senders waiting when the channel closes, and any later send, fail with
// quell::channel_closed; their values are left untouched.
//
// Cancellation:
//   - send(v) takes v by reference and moves from it only when the value is enqueued (or handed
//     to a waiting receiver). A send cancelled while waiting leaves v untouched, so the caller
//     still owns it. A send whose value was taken in the same turn its cancellation arrived
//     completes normally (completion wins): the value is in the channel, not lost, not sent twice.
//   - A receive cancelled while waiting consumes nothing. A receive that had been handed a value
//     but not yet resumed when its cancellation arrived gives the value back (first in line for
//     the next receive) and ends cancelled: a value is never left in a receive whose result a
//     combinator would discard (a race loser), so nothing a sender sent is dropped. A receive
//     that took a value at once and whose result a race discards gives it back the same way.
//     (For a T whose move constructor may throw, the receive instead completes with the value.)
//   - If moving a value into the channel throws, that send throws the exception and the channel
//     stays usable; a receive that made room for it keeps the value it took.
//
// A capacity of 0 is treated as 1.
//
// Single-executor: a channel and its waiters belong to one executor's thread; no locks. The
// channel must outlive its waiters.
#pragma once

#include <cstddef>
#include <deque>
#include <exception>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "quell/detail/scheduler.hpp"
#include "quell/detail/wait_queue.hpp"

namespace quell {

class channel_closed : public std::logic_error {
 public:
  channel_closed() : std::logic_error("quell: send on a closed channel") {}
};

template <class T>
class channel {
 public:
  explicit channel(std::size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}
  channel(const channel&) = delete;
  channel& operator=(const channel&) = delete;
  ~channel() {
    if (!senders_.empty() || !receivers_.empty()) {
      detail::fatal("quell: a channel was destroyed while tasks were waiting on it");
    }
  }

  std::size_t size() const noexcept { return buffer_.size(); }
  std::size_t capacity() const noexcept { return capacity_; }
  bool closed() const noexcept { return closed_; }

  class send_awaiter : public detail::queued_waiter {
   public:
    send_awaiter(channel& c, T& v) noexcept : c_(c), v_(v) {}
    bool await_ready() {
      if (c_.closed_) {
        closed_ = true;
        mark_granted_without_waiting();
        return true;
      }
      if (c_.senders_.empty() && c_.buffer_.size() < c_.capacity_) {
        c_.push(std::move(v_));
        mark_granted_without_waiting();
        return true;
      }
      return false;
    }
    void await_suspend(std::coroutine_handle<> h) noexcept { wait_in(c_.senders_, h); }
    void describe_wait(detail::wait_note& out) const { out.what = "channel send"; }
    bool await_cancel(std::coroutine_handle<>) noexcept { return withdraw(); }
    void await_resume() const {
      if (error_) std::rethrow_exception(error_);
      if (closed_) throw channel_closed();
    }

   private:
    friend class channel;
    channel& c_;
    T& v_;
    std::exception_ptr error_;  // moving the value into the channel threw
    bool closed_ = false;
  };

  class receive_awaiter : public detail::queued_waiter {
   public:
    explicit receive_awaiter(channel& c) noexcept : c_(c) {}
    bool await_ready() {
      if (!c_.buffer_.empty()) {
        value_.emplace(std::move(c_.buffer_.front()));
        c_.buffer_.pop_front();
        c_.admit_senders();
        mark_granted_without_waiting();
        return true;
      }
      if (c_.closed_) {
        mark_granted_without_waiting();  // end of stream: value_ stays empty
        return true;
      }
      return false;
    }
    void await_suspend(std::coroutine_handle<> h) noexcept { wait_in(c_.receivers_, h); }
    void describe_wait(detail::wait_note& out) const { out.what = "channel receive"; }
    bool await_cancel(std::coroutine_handle<>) noexcept {
      if (withdraw()) return true;  // still queued: it takes nothing
      if (!value_) {
        gave_back();  // the end of the stream: the next receive sees it as well
      } else if constexpr (std::is_nothrow_move_constructible_v<T>) {
        give_back_value();  // handed a value it has not seen yet: the value goes back, unconsumed
      }
      return false;  // its resumption is already queued; await_must_resume decides
    }
    // A value it received and whose waiter discards it (a race's loser that got it at once).
    bool await_give_back() noexcept {
      if constexpr (std::is_nothrow_move_constructible_v<T>) {
        if (value_) {
          give_back_value();
          return true;
        }
      }
      return false;
    }
    std::optional<T> await_resume() { return std::move(value_); }

   private:
    friend class channel;
    void give_back_value() noexcept {
      c_.give_back(std::move(*value_));
      value_.reset();
      gave_back();
    }
    channel& c_;
    std::optional<T> value_;
  };

  // `v` is moved from only when the value enters the channel (see the contract above).
  send_awaiter send(T& v) noexcept { return send_awaiter(*this, v); }
  send_awaiter send(T&& v) noexcept { return send_awaiter(*this, v); }
  receive_awaiter receive() noexcept { return receive_awaiter(*this); }

  void close() noexcept {
    if (closed_) return;
    closed_ = true;
    while (auto* s = static_cast<send_awaiter*>(senders_.front())) {
      s->closed_ = true;
      s->grant();
    }
    if (buffer_.empty()) {
      while (auto* r = static_cast<receive_awaiter*>(receivers_.front())) r->grant();
    }
  }

 private:
  // A value enters: straight to the first waiting receiver, else into the buffer.
  void push(T&& v) {
    if (auto* r = static_cast<receive_awaiter*>(receivers_.front())) {
      r->value_.emplace(std::move(v));
      r->grant();
    } else {
      buffer_.push_back(std::move(v));
    }
  }
  // A value a cancelled receive had been handed: first in line again.
  void give_back(T&& v) noexcept {
    if (auto* r = static_cast<receive_awaiter*>(receivers_.front())) {
      r->value_.emplace(std::move(v));
      r->grant();
    } else {
      buffer_.push_front(std::move(v));  // may hold capacity + 1 values until the next receive
    }
  }
  // Room was made in the buffer: let waiting senders in, in order. A sender whose value fails to
  // move is told so (its send throws that exception) and the next one is tried.
  void admit_senders() {
    while (buffer_.size() < capacity_) {
      auto* s = static_cast<send_awaiter*>(senders_.front());
      if (!s) break;
      try {
        push(std::move(s->v_));
      } catch (...) {
        s->error_ = std::current_exception();
      }
      s->grant();
    }
    if (closed_ && buffer_.empty()) {
      while (auto* r = static_cast<receive_awaiter*>(receivers_.front())) r->grant();
    }
  }

  std::size_t capacity_;
  std::deque<T> buffer_;
  detail::node_list senders_;
  detail::node_list receivers_;
  bool closed_ = false;
};

}  // namespace quell
