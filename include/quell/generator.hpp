// generator<T>: an asynchronous generator. The producer is a coroutine that may co_await anything a
// task may, and hands out values with co_yield; the consumer takes them with co_await g.next().
//
//   quell::generator<std::string> lines(quell::tcp_stream& s) {
//     std::string buf;
//     char chunk[4096];
//     for (;;) {
//       std::size_t n = co_await s.read_some(chunk);
//       if (n == 0) co_return;
//       ... co_yield line; ...
//     }
//   }
//   auto g = lines(conn);
//   while (auto line = co_await g.next()) handle(*line);   // nullopt: the producer returned
//
// Lazy: the producer runs only inside next(): from where it last stopped up to its next co_yield
// (next() yields that value), its end (std::nullopt), or an exception (next() throws it, and the
// generator is finished). One next() at a time. The producer is a task in every other respect:
// its co_awaits are cancellation points, it may register async cleanups (quell::defer, on_cancel),
// and this_task::* inside it sees the deadlines and the cancellation of the next() that drives it.
//
// Who resumes whom: next() resumes the producer; the producer's co_yield (or its end) resumes the
// task waiting in next(). Between two next() calls the producer is suspended at its co_yield.
//
// Cancellation:
//   - A cancel reaching a task waiting in next() goes to the producer, at the operation it waits
//     on. If that ends cancelled, the producer ends cancelled: its async cleanups run (shielded,
//     with its locals alive), and then next() ends cancelled. The generator is then finished.
//   - If the operation completed anyway and the producer reached its next co_yield, that value is
//     delivered by next() (completion wins); the producer stays at that co_yield with the request
//     still pending, and the co_yield is a cancellation point: the next next() (if the consumer,
//     itself still being cancelled, gets to make one) or close() ends the producer there.
//   - `co_await g.close()` ends a producer suspended at co_yield: it ends cancelled there (no code
//     after the co_yield runs) and its async cleanups run before close() returns. A cleanup's
//     exception is thrown by close(). close() on a generator that has not started or has finished
//     does nothing. A forced request to the task waiting in close() reaches those cleanups.
//   - Destroying a generator whose producer is suspended at co_yield destroys its frame (RAII: its
//     locals are destroyed), without running async cleanups; if it registered one that has not run,
//     that is a bug, reported with std::terminate naming the producer (close it first). Destroying
//     one while a next() or close() is in progress is the same bug.
#pragma once

#include <coroutine>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/task.hpp"

namespace quell {

template <class T>
class [[nodiscard]] generator {
  static_assert(!std::is_void_v<T> && !std::is_reference_v<T>, "quell::generator<T> yields values");

 public:
  struct promise_type;
  using handle = std::coroutine_handle<promise_type>;

  struct promise_type final : detail::promise_base {
    explicit promise_type(detail::site s = detail::site::here()) noexcept : promise_base(s) {}

    generator get_return_object() noexcept { return generator(handle::from_promise(*this)); }
    void unhandled_exception() noexcept { error = std::current_exception(); }
    void return_void() noexcept {}

    // co_yield: the value goes to the waiting next(), which is resumed; the producer stays here.
    struct yield_awaiter {
      promise_type* p;
      bool await_ready() const noexcept { return false; }
      void await_suspend(std::coroutine_handle<>) const noexcept {
        p->at_yield = true;
        // Suspended at co_yield it runs under nobody: the consumer's context that was its
        // parent may end before the next next() (the task tree must not follow it).
        const detail::context_node* consumer = std::exchange(p->parent, nullptr);
        if (detail::tls.hooks) [[unlikely]]
          detail::hook_yield(*p, consumer);
        detail::resume(std::exchange(p->continuation, {}));  // may destroy the frame: nothing after
      }
      void await_resume() const noexcept {
        detail::tls.context = p;  // the body runs again
        if (detail::tls.hooks) [[unlikely]]
          detail::hook_task(detail::hook_event::resumed, *p);
      }
    };
    template <class U = T>
    requires std::is_convertible_v<U&&, T> yield_awaiter yield_value(U&& v) {
      value.emplace(std::forward<U>(v));
      return {this};
    }

    std::optional<T> value;  // yielded, not yet taken by next()
    std::exception_ptr error;
  };

  generator() noexcept = default;
  generator(generator&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  generator& operator=(generator&& o) noexcept {
    if (this != &o) {
      destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  ~generator() { destroy(); }

  // The producer returned, threw, or ended cancelled (or there is none).
  bool finished() const noexcept { return !h_ || h_.promise().state == detail::promise_base::phase::done; }

  class next_awaiter {
   public:
    explicit next_awaiter(handle h) noexcept : h_(h) {}
    bool await_ready() const {
      if (!h_) throw std::logic_error("quell: next() on an empty generator (moved-from)");
      return h_.promise().state == detail::promise_base::phase::done;
    }
    bool await_suspend(std::coroutine_handle<> waiter) {
      promise_type& p = h_.promise();
      if (p.continuation) throw std::logic_error("quell: a generator's next() awaited by two tasks at once");
      p.continuation = waiter;
      p.parent = detail::tls.context;  // the producer runs under the consumer of the moment
      if (p.state == detail::promise_base::phase::not_started) {
        p.state = detail::promise_base::phase::running;
        if (detail::tls.hooks) [[unlikely]]
          detail::hooks_started(p);
      } else if (std::exchange(p.at_yield, false) && p.request.level != cancel_level::none) {
        p.end_cancelled();  // a co_yield is a cancellation point: the producer ends there
        return true;
      }
      detail::resume(h_);  // up to its next co_yield, its end, or an operation it waits for
      return true;
    }
    bool await_cancel(std::coroutine_handle<>, const cancel_request& r) noexcept {
      h_.promise().request_cancel(r);  // to the operation the producer waits on
      return false;                    // the producer's co_yield or end resumes the waiter
    }
    bool await_must_resume() const noexcept {
      const promise_type& p = h_.promise();
      return p.value.has_value() || !p.ended_cancelled || p.cleanup_failed;
    }
    std::optional<T> await_resume() {
      promise_type& p = h_.promise();
      if (p.value) {
        std::optional<T> v(std::move(p.value));
        p.value.reset();
        return v;
      }
      if (p.error) std::rethrow_exception(std::exchange(p.error, nullptr));
      if (p.cleanup_failed) {
        p.cleanup_failed = false;
        std::rethrow_exception(p.cleanup->error);
      }
      return std::nullopt;
    }

   private:
    handle h_;
  };

  // The next value (see above). An empty (moved-from) generator throws std::logic_error.
  next_awaiter next() noexcept { return next_awaiter(h_); }

  class close_awaiter {
   public:
    explicit close_awaiter(handle h) noexcept : h_(h) {}
    bool await_ready() const noexcept { return !h_ || !h_.promise().at_yield; }
    bool await_suspend(std::coroutine_handle<> waiter) noexcept {
      promise_type& p = h_.promise();
      p.continuation = waiter;
      p.at_yield = false;
      merge_request(p.request,
                    cancel_request{cancel_level::graceful, cancel_reason(cancel_kind::requested, "generator closed")});
      p.end_cancelled();  // its cleanups run, then the waiter is resumed
      return true;
    }
    bool await_cancel(std::coroutine_handle<>, const cancel_request& r) noexcept {
      if (r.forced()) h_.promise().request_cancel(r);  // reaches the running cleanup
      return false;
    }
    bool await_must_resume() const noexcept { return true; }  // closing is done, whatever reached it
    void await_resume() {
      if (!h_) return;
      promise_type& p = h_.promise();
      if (p.cleanup_failed) {
        p.cleanup_failed = false;
        std::rethrow_exception(p.cleanup->error);
      }
    }

   private:
    handle h_;
  };

  // Ends a producer suspended at co_yield, running its async cleanups (see above).
  close_awaiter close() noexcept { return close_awaiter(h_); }

 private:
  explicit generator(handle h) noexcept : h_(h) {}

  void destroy() noexcept {
    if (!h_) return;
    promise_type& p = h_.promise();
    if (p.state == detail::promise_base::phase::running) {
      if (!p.at_yield) {
        detail::fatal("quell: a generator created at " + detail::describe_site(p.where) +
                      " was destroyed while a next() or close() on it was in progress");
      }
      if (p.cleanup && !p.cleanup->empty()) {
        detail::fatal("quell: a generator created at " + detail::describe_site(p.where) +
                      " was destroyed at a co_yield with an async cleanup that has not run; close it first with "
                      "co_await g.close()");
      }
      p.state = detail::promise_base::phase::done;  // its frame goes: locals destroyed (RAII)
      if (detail::tls.hooks) [[unlikely]]
        detail::hook_task(detail::hook_event::finished, p);
    }
    std::exchange(h_, {}).destroy();
  }

  handle h_;
};

}  // namespace quell
