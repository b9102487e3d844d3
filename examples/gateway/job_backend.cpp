// gateway::job_backend (see job_backend.hpp for the contract).
#include "job_backend.hpp"

#include <poll.h>

#include <charconv>
#include <optional>
#include <string_view>
#include <system_error>
#include <utility>

#include "quell/deadline.hpp"
#include "quell/detail/scheduler.hpp"  // quell::detail::fatal
#include "quell/event.hpp"
#include "quell/leaves.hpp"
#include "quell/on_cancel.hpp"
#include "quell/this_task.hpp"

namespace gateway {

struct job_backend::connection {
  quell::tcp_stream sock;
  std::string in;  // bytes read past the last line
  std::uint64_t next_id = 0;
};

// Holds run()'s connection; gives it back to the pool (or closes it) when run() ends, however
// it ends. Declared after run()'s permit, so the connection is back before the slot is free.
struct job_backend::lease {
  job_backend& owner;
  std::unique_ptr<connection> conn;
  bool clean = false;  // the exchange ended with nothing left to come on the connection
  ~lease() {
    if (conn) owner.give_back(std::move(conn), clean);
  }
};

namespace {

using quell::task;

// Sets `e` when the scope ends, however it ends.
struct set_on_exit {
  quell::event& e;
  ~set_on_exit() { e.set(); }
};

struct reply {
  enum class kind : unsigned char { result, cancelled, done, error } what = kind::error;
  std::uint64_t id = 0;
  std::string text;  // RESULT's text, ERROR's message
};

std::optional<reply> parse_reply(std::string_view line) {
  reply r;
  const std::size_t sp = line.find(' ');
  const std::string_view verb = line.substr(0, sp);
  const std::string_view rest = sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
  if (verb == "ERROR") {
    r.text = std::string(rest);
    return r;
  }
  if (verb == "RESULT") {
    r.what = reply::kind::result;
  } else if (verb == "CANCELLED") {
    r.what = reply::kind::cancelled;
  } else if (verb == "DONE") {
    r.what = reply::kind::done;
  } else {
    return std::nullopt;
  }
  const std::size_t sp2 = rest.find(' ');
  const std::string_view id = rest.substr(0, sp2);
  if ((r.what == reply::kind::result) != (sp2 != std::string_view::npos)) return std::nullopt;
  auto [end, ec] = std::from_chars(id.data(), id.data() + id.size(), r.id);
  if (id.empty() || ec != std::errc() || end != id.data() + id.size()) return std::nullopt;
  if (r.what == reply::kind::result) r.text = std::string(rest.substr(sp2 + 1));
  return r;
}

// Whether an idle connection has something to read: end of file (the service closed it) or bytes
// nobody asked for. Either way it is not fit for a new job. poll(2) with a zero timeout never
// blocks and consumes nothing.
bool readable_now(const quell::tcp_stream& s) {
  pollfd p{s.native_handle(), POLLIN | POLLRDHUP, 0};
  return s.buffered() > 0 || ::poll(&p, 1, 0) != 0;
}

}  // namespace

job_backend::job_backend(job_backend_options options) : options_(std::move(options)), slots_(options_.pool_size) {
  if (options_.pool_size == 0) throw std::invalid_argument("gateway: job_backend needs a pool_size of at least 1");
  idle_.reserve(options_.pool_size);  // give_back never allocates
}

job_backend::~job_backend() {
  if (slots_.available() != options_.pool_size || slots_.waiting() != 0) {
    quell::detail::fatal("gateway: a job_backend was destroyed while run() calls were still using it");
  }
}

backend_stats job_backend::stats() const { return stats_.snapshot(); }

std::string job_backend::describe() const { return options_.label + " at " + options_.service.to_string(); }

std::unique_ptr<job_backend::connection> job_backend::take_idle() noexcept {
  while (!idle_.empty()) {
    std::unique_ptr<connection> c = std::move(idle_.back());
    idle_.pop_back();
    if (c->sock.is_open() && !readable_now(c->sock)) return c;
    --open_;
    ++closed_;  // destroyed here: the socket closes (nothing is pending on it)
  }
  return nullptr;
}

void job_backend::give_back(std::unique_ptr<connection> c, bool clean) noexcept {
  if (clean && c->sock.is_open() && c->in.empty() && c->sock.buffered() == 0) {
    idle_.push_back(std::move(c));  // reserved for pool_size connections: cannot throw
    return;
  }
  // Closed in the background when `c` goes: its reads and writes have ended (run() awaited them),
  // so the descriptor is released at once.
  --open_;
  ++closed_;
}

task<std::string> job_backend::read_line(connection& c) {
  for (;;) {
    const std::size_t nl = c.in.find('\n');
    if (nl != std::string::npos) {
      std::string line = c.in.substr(0, nl);
      c.in.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      co_return line;
    }
    if (c.in.size() > max_reply_line) throw backend_error("gateway: " + describe() + " sent a line that is too long");
    char chunk[1024];
    std::size_t n = 0;
    try {
      n = co_await c.sock.read_some(chunk);
    } catch (const std::system_error& e) {
      throw backend_error("gateway: connection to " + describe() + " failed: " + e.what());
    }
    if (n == 0) throw backend_error("gateway: " + describe() + " closed the connection");
    c.in.append(chunk, n);
  }
}

task<std::string> job_backend::run(std::chrono::milliseconds work) {
  if (work.count() < 0) throw std::invalid_argument("gateway: job_backend::run: negative work duration");
  quell::permit slot = co_await slots_.acquire();
  lease l{*this, take_idle()};
  if (!l.conn) {
    quell::tcp_stream s;
    try {
      s = co_await quell::tcp_stream::connect(options_.service);
    } catch (const std::system_error& e) {
      throw backend_error("gateway: cannot connect to " + describe() + ": " + e.what());
    }
    l.conn = std::make_unique<connection>();
    l.conn->sock = std::move(s);
    ++open_;
    ++opened_;
  }
  connection& c = *l.conn;
  const std::uint64_t id = ++c.next_id;
  // Nothing sent on it yet: if run() ends before the SUBMIT goes out (cancelled right after a
  // connect that completed anyway, say), the connection goes back to the pool as it came.
  l.clean = true;

  // What the reader and the cancel hook share.
  struct {
    quell::event on_wire;      // SUBMIT fully written (or the reader has ended)
    quell::event reader_done;  // the reader has ended, however
    bool cancel_sent = false;
    std::optional<reply::kind> answer;  // the reply to our CANCEL
  } q;

  // The reader: sends SUBMIT, then reads until the job's outcome and, if a CANCEL was sent, its
  // reply. It keeps running while the hook works (on_cancel holds the request back until the
  // hook is done), which is how the reply to the CANCEL is seen. nullopt: the job was cancelled.
  auto reader = [&]() -> task<std::optional<std::string>> {
    set_on_exit done{q.reader_done};
    {
      set_on_exit wire{q.on_wire};
      l.clean = false;  // from here on, something may be left to come on the connection
      const std::string submit = "SUBMIT " + std::to_string(id) + " " + std::to_string(work.count()) + "\n";
      try {
        co_await c.sock.write_all(submit);
      } catch (const std::system_error& e) {
        throw backend_error("gateway: cannot send a job to " + describe() + ": " + e.what());
      }
    }
    std::optional<std::string> result;
    for (;;) {
      const std::string line = co_await read_line(c);
      const std::optional<reply> r = parse_reply(line);
      if (r && r->what == reply::kind::error) {
        throw backend_error("gateway: " + describe() + " reported an error: " + r->text);
      }
      const bool ours = r && r->id == id;
      if (ours && r->what == reply::kind::result && !result) {
        result = r->text;
        if (!q.cancel_sent) {
          l.clean = true;
          co_return result;
        }
        continue;  // the reply to our CANCEL (DONE) follows
      }
      if (ours && r->what == reply::kind::cancelled && q.cancel_sent && !result) {
        q.answer = r->what;
        l.clean = true;
        co_return std::nullopt;
      }
      if (ours && r->what == reply::kind::done && q.cancel_sent && result) {
        q.answer = r->what;
        l.clean = true;
        co_return result;
      }
      throw backend_error("gateway: unexpected line from " + describe() + " while waiting for job " +
                          std::to_string(id) + ": \"" + line.substr(0, 80) + "\"");
    }
  };

  auto confirm = [&]() -> task<bool> {
    co_await q.on_wire.wait();                   // a CANCEL must follow the whole SUBMIT line
    if (q.reader_done.is_set()) co_return true;  // the RESULT came first: nothing to cancel
    q.cancel_sent = true;
    ++stats_.cancels_sent;
    const std::string line = "CANCEL " + std::to_string(id) + "\n";
    try {
      co_await c.sock.write_all(line);
    } catch (const std::system_error&) {
      co_return false;  // the reader sees the broken connection too and throws
    }
    co_await q.reader_done.wait();
    co_return true;
  };
  // Runs when a cancel request reaches the job (and, per on_cancel's rule, when the reader throws;
  // then there is nothing to cancel).
  auto hook = [&]() -> task<> {
    if (q.reader_done.is_set()) co_return;
    // A forced request reaches a hook only once it has suspended (on_cancel starts it first): this
    // turn's pause is where it ends the hook before anything is written. Nothing needs sending
    // then: closing the connection stops the job on the service too.
    co_await quell::yield();
    if (q.reader_done.is_set()) co_return;
    const std::optional<bool> answered = co_await quell::move_on_after(options_.cancel_timeout, confirm());
    if (!answered) {
      // No reply in time: the reader is cancelled next and, l.clean being false, the connection
      // is closed rather than reused with the job perhaps still running.
      if (q.cancel_sent) ++stats_.cancels_timed_out;
      co_return;
    }
    if (q.answer == reply::kind::cancelled) {
      ++stats_.cancels_acknowledged;
    } else if (q.answer == reply::kind::done) {
      ++too_late_;
    }
  };

  std::optional<std::string> r = co_await quell::on_cancel(reader(), hook);
  if (r) co_return std::move(*r);
  // The service stopped the job because we asked, which we did only because a cancel request
  // reached this task; it is still requested (sticky), so this checkpoint ends run() cancelled.
  co_await quell::this_task::checkpoint();
  throw backend_error("gateway: " + describe() + " cancelled job " + std::to_string(id) + " unasked");
}

}  // namespace gateway
