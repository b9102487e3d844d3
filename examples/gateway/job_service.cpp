// gateway::job_service (see job_service.hpp for the protocol and the contract).
#include "job_service.hpp"

#include <cerrno>
#include <charconv>
#include <chrono>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "quell/deadline.hpp"
#include "quell/defer.hpp"
#include "quell/detail/scheduler.hpp"  // quell::detail::fatal
#include "quell/event.hpp"
#include "quell/mutex.hpp"
#include "quell/race.hpp"
#include "quell/scope.hpp"
#include "quell/time.hpp"

namespace gateway {
namespace detail {

namespace {

using quell::task;

// One job of a connection, from SUBMIT until its last reply line is written.
struct job_entry {
  quell::event cancel;     // set by the first CANCEL while the job works
  bool finishing = false;  // the work has stopped; the job owes its reply lines
  unsigned owed_done = 0;  // CANCELs that are answered DONE, after the job's own line
};

struct connection {
  explicit connection(quell::tcp_stream& s) : sock(s) {}
  quell::tcp_stream& sock;
  quell::mutex writing;                     // one writer at a time: reply lines never interleave
  std::map<std::uint64_t, job_entry> jobs;  // by id; std::map: entries keep their address
};

std::optional<std::uint64_t> number(std::string_view s) {
  if (s.empty()) return std::nullopt;  // from_chars rejects signs and reports overflow
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t sp = line.find(' ', start);
    out.push_back(line.substr(start, sp == std::string_view::npos ? std::string_view::npos : sp - start));
    if (sp == std::string_view::npos) return out;
    start = sp + 1;
  }
}

// What a line asks for; `error` non-empty when it is malformed.
struct request {
  enum class verb : unsigned char { submit, cancel } what = verb::submit;
  std::uint64_t id = 0;
  std::uint64_t millis = 0;
  std::string error;
};

request parse(std::string_view line) {
  request r;
  const std::vector<std::string_view> f = fields(line);
  if (f[0] == "SUBMIT") {
    if (f.size() != 3) return {.error = "SUBMIT takes an id and a duration in milliseconds"};
    const auto id = number(f[1]);
    const auto ms = number(f[2]);
    if (!id) return {.error = "bad id"};
    if (!ms || *ms > job_service::max_millis) return {.error = "bad duration"};
    r.id = *id;
    r.millis = *ms;
    return r;
  }
  if (f[0] == "CANCEL") {
    if (f.size() != 2) return {.error = "CANCEL takes an id"};
    const auto id = number(f[1]);
    if (!id) return {.error = "bad id"};
    r.what = request::verb::cancel;
    r.id = *id;
    return r;
  }
  return {.error = "unknown command"};
}

// Keeps jobs_running and the end-of-work counters right on every way a job's work can end.
struct work_count {
  service_state& st;
  bool counted = false;
  explicit work_count(service_state& s);
  void done(bool completed);
  ~work_count();
};

}  // namespace

struct service_state {
  quell::tcp_listener listener;
  quell::address local;
  bool ignore_cancels = false;
  bool serving = false;
  bool served = false;
  std::uint64_t running = 0, started = 0, completed = 0, cancelled = 0;
  std::uint64_t cancels_received = 0, cancels_ignored = 0;
  std::uint64_t connections = 0, accepted = 0, protocol_errors = 0;

  task<> serve_connection(quell::tcp_stream sock);
  task<> read_requests(connection& c, quell::scope& jobs);
  task<> run_job(connection& c, std::uint64_t id, std::uint64_t millis);
  static task<> send(connection& c, std::string line);
  task<> refuse(connection& c, std::string why);
};

namespace {

work_count::work_count(service_state& s) : st(s) {
  ++st.started;
  ++st.running;
}
void work_count::done(bool completed) {
  counted = true;
  --st.running;
  ++(completed ? st.completed : st.cancelled);
}
work_count::~work_count() {
  if (!counted) done(false);  // cancelled with its connection (client gone, ERROR, shutdown)
}

// Removes the job's entry when its frame goes, however the job ended.
struct erase_entry {
  connection& c;
  std::uint64_t id;
  ~erase_entry() { c.jobs.erase(id); }
};

}  // namespace

task<> service_state::send(connection& c, std::string line) {
  quell::mutex::guard g = co_await c.writing.lock();
  co_await c.sock.write_all(line);
}

// The ERROR line is bounded: a client that sends garbage and never reads must not keep its
// connection (and its jobs) alive by leaving the reply stuck in a full socket buffer.
task<> service_state::refuse(connection& c, std::string why) {
  ++protocol_errors;
  co_await quell::move_on_after(std::chrono::seconds(5), send(c, "ERROR " + why + "\n"));
}

task<> service_state::run_job(connection& c, std::uint64_t id, std::uint64_t millis) {
  erase_entry entry_owner{c, id};
  job_entry& e = c.jobs.at(id);
  std::string reply;
  {
    work_count count(*this);
    auto work = [&]() -> task<bool> {
      co_await quell::sleep_for(std::chrono::milliseconds(millis));
      co_return true;
    };
    auto stop = [&]() -> task<bool> {
      co_await e.cancel.wait();
      co_return false;
    };
    // The loser is cancelled and has ended before race returns: a CANCELLED is written only once
    // the work has really stopped.
    const bool completed = co_await quell::race(work(), stop());
    count.done(completed);
    e.finishing = true;
    if (completed) {
      reply = "RESULT " + std::to_string(id) + " report after " + std::to_string(millis) + " ms\n";
      if (e.cancel.is_set()) ++e.owed_done;  // a CANCEL came in the turn the work finished: too late
    } else {
      reply = "CANCELLED " + std::to_string(id) + "\n";
    }
  }
  quell::mutex::guard g = co_await c.writing.lock();
  co_await c.sock.write_all(reply);
  // CANCELs that arrive while these lines are written are counted in owed_done and answered here,
  // so that each one gets its DONE after the job's own line.
  while (e.owed_done > 0) {
    --e.owed_done;
    co_await c.sock.write_all("DONE " + std::to_string(id) + "\n");
  }
}

task<> service_state::read_requests(connection& c, quell::scope& jobs) {
  std::string in;
  char chunk[4096];
  for (;;) {
    std::size_t pos;
    while ((pos = in.find('\n')) != std::string::npos) {
      std::string_view line(in.data(), pos);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      request r = pos > job_service::max_line ? request{.error = "line too long"} : parse(line);
      in.erase(0, pos + 1);
      if (!r.error.empty()) {
        co_await refuse(c, r.error);
        co_return;
      }
      if (r.what == request::verb::submit) {
        auto [it, fresh] = c.jobs.try_emplace(r.id);
        if (!fresh) {
          co_await refuse(c, "duplicate id " + std::to_string(r.id));
          co_return;
        }
        try {
          jobs.spawn([this, &c, id = r.id, ms = r.millis] { return run_job(c, id, ms); });
        } catch (...) {
          c.jobs.erase(it);
          throw;
        }
        continue;
      }
      ++cancels_received;
      if (ignore_cancels) {
        ++cancels_ignored;
        continue;
      }
      auto it = c.jobs.find(r.id);
      if (it == c.jobs.end()) {
        co_await send(c, "DONE " + std::to_string(r.id) + "\n");  // finished (RESULT written) or unknown
      } else if (!it->second.finishing && !it->second.cancel.is_set()) {
        it->second.cancel.set();  // the job stops its work and answers CANCELLED
      } else {
        ++it->second.owed_done;  // the job answers DONE after its own line
      }
    }
    if (in.size() > job_service::max_line) {
      co_await refuse(c, "line too long");
      co_return;
    }
    std::size_t n = 0;
    try {
      n = co_await c.sock.read_some(chunk);
    } catch (const std::system_error&) {
      co_return;  // connection reset: the client is gone, as with end of file
    }
    if (n == 0) co_return;
    in.append(chunk, n);
  }
}

task<> service_state::serve_connection(quell::tcp_stream sock) {
  ++connections;
  ++accepted;
  // Synchronous, so that even a forced cancel (which skips a cleanup's suspension points) closes
  // the socket: by the time it runs, the connection's reads and writes have ended, so dropping
  // the descriptor releases it at once.
  auto close = [this, &sock] {
    --connections;
    sock = quell::tcp_stream();
  };
  co_await quell::defer(std::move(close));
  connection c(sock);
  auto body = [this, &c](quell::scope& jobs) -> task<> {
    co_await read_requests(c, jobs);
    jobs.cancel();  // the client is gone or misbehaved: its jobs stop
  };
  try {
    co_await quell::with_scope(body);
  } catch (const std::exception&) {
    // A write to the client failed (it went away while a reply was written): the scope has
    // cancelled the rest of the connection already; nothing else to do for a client that is gone.
  }
}

}  // namespace detail

job_service job_service::bind(const quell::address& local) {
  auto s = std::make_unique<detail::service_state>();
  s->listener = quell::tcp_listener::bind(local);
  s->local = s->listener.local_address();
  return job_service(std::move(s));
}

job_service::job_service(std::unique_ptr<detail::service_state> s) noexcept : s_(std::move(s)) {}
job_service::job_service(job_service&&) noexcept = default;

job_service::~job_service() {
  if (s_ && s_->serving) quell::detail::fatal("gateway: a job_service was destroyed while serve() was running");
}

quell::address job_service::local_address() const { return s_->local; }

quell::task<void> job_service::serve() {
  detail::service_state* st = s_.get();
  if (st->served) throw std::logic_error("gateway: job_service::serve() runs only once");
  st->served = true;
  st->serving = true;
  auto stop = [st] {  // synchronous, as for a connection: the accept has ended by then
    st->serving = false;
    st->listener = quell::tcp_listener();
  };
  co_await quell::defer(std::move(stop));
  auto accept_loop = [st](quell::scope& conns) -> quell::task<> {
    for (;;) {
      quell::tcp_stream c;
      bool transient = false;
      try {
        c = co_await st->listener.accept();
      } catch (const std::system_error& e) {
        const int err = e.code().value();
        if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM && err != ECONNABORTED) throw;
        transient = true;
      }
      if (transient) {
        co_await quell::sleep_for(std::chrono::milliseconds(10));  // let some connections close first
        continue;
      }
      conns.spawn([st, c = std::move(c)]() mutable { return st->serve_connection(std::move(c)); });
    }
  };
  co_await quell::with_scope(accept_loop);
}

void job_service::set_ignore_cancels(bool ignore) noexcept { s_->ignore_cancels = ignore; }
bool job_service::ignore_cancels() const noexcept { return s_->ignore_cancels; }
std::uint64_t job_service::jobs_running() const noexcept { return s_->running; }
std::uint64_t job_service::jobs_started() const noexcept { return s_->started; }
std::uint64_t job_service::jobs_completed() const noexcept { return s_->completed; }
std::uint64_t job_service::jobs_cancelled() const noexcept { return s_->cancelled; }
std::uint64_t job_service::cancels_received() const noexcept { return s_->cancels_received; }
std::uint64_t job_service::cancels_ignored() const noexcept { return s_->cancels_ignored; }
std::uint64_t job_service::connections() const noexcept { return s_->connections; }
std::uint64_t job_service::connections_accepted() const noexcept { return s_->accepted; }
std::uint64_t job_service::protocol_errors() const noexcept { return s_->protocol_errors; }

}  // namespace gateway
