// quell::pg: libpq's asynchronous API on quell (see include/quell/pg.hpp for the contract).
#include "quell/pg.hpp"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <new>
#include <thread>

#include "quell/cancel_token.hpp"  // detail::current_core_for_tokens: the running executor
#include "quell/deadline.hpp"
#include "quell/event.hpp"
#include "quell/executor.hpp"
#include "quell/on_cancel.hpp"
#include "quell/readiness.hpp"
#include "quell/resolve.hpp"
#include "quell/this_task.hpp"
#include "quell/time.hpp"

namespace quell::pg {

struct result_builder {
  static void fill(result& out, const PGresult* r) {
    const int ncols = PQnfields(r);
    const int nrows = PQntuples(r);
    out.names_.clear();
    out.rows_.clear();
    out.names_.reserve(static_cast<std::size_t>(ncols));
    for (int c = 0; c < ncols; ++c) out.names_.emplace_back(PQfname(r, c));
    out.rows_.reserve(static_cast<std::size_t>(nrows));
    for (int i = 0; i < nrows; ++i) {
      auto& row = out.rows_.emplace_back();
      row.reserve(static_cast<std::size_t>(ncols));
      for (int c = 0; c < ncols; ++c) {
        if (PQgetisnull(r, i, c)) {
          row.emplace_back(std::nullopt);
        } else {
          row.emplace_back(std::string(PQgetvalue(r, i, c), static_cast<std::size_t>(PQgetlength(r, i, c))));
        }
      }
    }
    out.status_ = PQcmdStatus(const_cast<PGresult*>(r));
    const char* n = PQcmdTuples(const_cast<PGresult*>(r));
    out.affected_ = (n && *n) ? std::strtoull(n, nullptr, 10) : static_cast<std::uint64_t>(nrows);
  }
};

namespace detail {

std::string format_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

namespace {

std::string trimmed(const char* msg) {
  std::string s = msg ? msg : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

struct result_deleter {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using result_ptr = std::unique_ptr<PGresult, result_deleter>;

// What a cancel helper thread reports back. Written by the thread before it posts; read on the
// executor's thread by the posted function, so the post orders the two.
struct cancel_call {
  bool ok = false;
  std::string message;
  // Executor thread only: whom to wake; null once the query that asked is gone.
  event* done = nullptr;
  bool finished = false;
};

}  // namespace

struct conn_state {
  PGconn* conn = nullptr;
  connection_options options;
  bool broken = false;
  bool busy = false;
  std::size_t cancels_sent = 0;
  std::size_t cancels_confirmed = 0;
  std::size_t cancels_timed_out = 0;
  PGcancel* redirected_cancel = nullptr;  // tests only (redirect_cancels_for_testing)

  ~conn_state() {
    if (busy) {
      quell::detail::fatal("quell::pg: a connection was destroyed while a query was running on it");
    }
    close();
    if (redirected_cancel) PQfreeCancel(redirected_cancel);
  }

  void close() noexcept {
    if (conn) PQfinish(std::exchange(conn, nullptr));
  }

  [[noreturn]] void fail(const std::string& what) {
    std::string msg = "quell::pg: " + what + ": " + trimmed(conn ? PQerrorMessage(conn) : "connection closed");
    broken = true;
    throw error(msg);
  }

  task<result> run_query(std::string sql, std::vector<param> params);
};

namespace {

// Everything the query's reader and its cancel hook share; lives in run_query's frame.
struct query_shared {
  event on_wire;    // the statement is fully written (or the reader has ended)
  event reader_done;
  event helper_done;
  std::shared_ptr<cancel_call> call;
  bool cancel_sent = false;

  ~query_shared() {
    if (call) call->done = nullptr;  // a late helper finds no one to wake
  }
};

// Ends the query's bookkeeping on every exit (value, error, cancelled): the reader and the hook
// have finished by then (they are awaited inside run_query), so no wait on the socket is in flight
// and closing the connection is safe.
struct query_guard {
  conn_state* c;
  ~query_guard() {
    c->busy = false;
    if (!c->conn) return;
    if (PQstatus(c->conn) != CONNECTION_OK || PQtransactionStatus(c->conn) == PQTRANS_ACTIVE) c->broken = true;
    if (c->broken) c->close();  // never reused with a statement (or a cancel) still in flight
  }
};

// Sets `e` when the reader ends, however it ends.
struct set_on_exit {
  event& e;
  ~set_on_exit() { e.set(); }
};

// Starts a helper thread that sends the cancel request with `key` (which it frees), and sets
// `call->done` through the executor's remote handle when the server has processed it.
void start_cancel_helper(PGcancel* key, std::shared_ptr<cancel_call> call) {
  remote_handle remote = quell::detail::current_core_for_tokens().remote();
  std::thread helper([key, call = std::move(call), remote = std::move(remote)]() mutable {
    char buf[256] = {0};
    // Blocks: connects to the server, sends the cancel key, waits until the server closed the
    // cancel connection, i.e. has signalled the backend.
    const int ok = PQcancel(key, buf, sizeof buf);
    PQfreeCancel(key);
    call->ok = ok != 0;
    call->message = trimmed(buf);
    try {
      remote.post([call] {
        call->finished = true;
        if (call->done) call->done->set();
      });
    } catch (...) {
      // Out of memory on a helper thread: the query's hook times out and closes the connection.
    }
  });
  helper.detach();  // see the THREADS paragraph of pg.hpp: it owns nothing the executor frees
}

}  // namespace

task<result> conn_state::run_query(std::string sql, std::vector<param> params) {
  if (!conn) throw error(broken ? "quell::pg: the connection is broken" : "quell::pg: the connection is closed");
  if (busy) throw std::logic_error("quell::pg: a query is already running on this connection");
  busy = true;
  query_guard guard{this};
  query_shared q;

  // The reader: sends, flushes, reads every result. It keeps running while the cancel hook works
  // (on_cancel holds the request back until the hook is done), which is how the end of a
  // cancelled statement is seen.
  auto reader = [&]() -> task<result> {
    set_on_exit done{q.reader_done};
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
    if (!PQsendQueryParams(conn, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                           nullptr, 0)) {
      q.on_wire.set();
      fail("cannot send the query");
    }
    for (;;) {
      const int f = PQflush(conn);
      if (f == 0) break;
      if (f < 0) {
        q.on_wire.set();
        fail("cannot send the query");
      }
      // libpq docs: while flushing, also read, or a server busy writing to us could deadlock.
      const unsigned ev = co_await wait_for_events(PQsocket(conn), POLLIN | POLLOUT);
      if ((ev & (POLLIN | POLLERR | POLLHUP)) && !PQconsumeInput(conn)) {
        q.on_wire.set();
        fail("cannot send the query");
      }
    }
    q.on_wire.set();

    result out;
    result_ptr first_error;
    bool have_rows = false;
    for (;;) {
      while (PQisBusy(conn)) {
        co_await wait_readable(PQsocket(conn));
        if (!PQconsumeInput(conn)) fail("connection lost while reading the result");
      }
      result_ptr r(PQgetResult(conn));
      if (!r) break;
      switch (PQresultStatus(r.get())) {
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
        case PGRES_EMPTY_QUERY:
          if (!have_rows || PQresultStatus(r.get()) == PGRES_TUPLES_OK) result_builder::fill(out, r.get());
          have_rows = have_rows || PQresultStatus(r.get()) == PGRES_TUPLES_OK;
          break;
        case PGRES_COPY_IN:
        case PGRES_COPY_OUT:
        case PGRES_COPY_BOTH:
          // The connection is now in COPY mode, which this API does not drive: it cannot be
          // brought back to ready without one, so it is given up.
          broken = true;
          throw error("quell::pg: COPY is not supported by query()");
        default:
          if (!first_error) first_error = std::move(r);
          break;
      }
    }
    if (PQstatus(conn) != CONNECTION_OK) fail("connection lost");
    if (first_error) {
      const char* state = PQresultErrorField(first_error.get(), PG_DIAG_SQLSTATE);
      throw error("quell::pg: " + trimmed(PQresultErrorMessage(first_error.get())), state ? state : "");
    }
    co_return out;
  };

  // The cancel hook: runs when a cancel request reaches the query (and, per on_cancel's rule,
  // when the reader throws; then it has nothing to do).
  auto confirm = [&]() -> task<bool> {
    co_await q.on_wire.wait();  // a cancel arriving before the statement would be ignored by the server
    if (q.reader_done.is_set()) co_return true;  // completed first: nothing to cancel
    PGcancel* key = redirected_cancel ? nullptr : PQgetCancel(conn);
    if (redirected_cancel) key = std::exchange(redirected_cancel, nullptr);
    if (!key) co_return false;
    q.call = std::make_shared<cancel_call>();
    q.call->done = &q.helper_done;
    try {
      start_cancel_helper(key, q.call);
    } catch (...) {
      PQfreeCancel(key);
      co_return false;
    }
    q.cancel_sent = true;
    ++cancels_sent;
    co_await q.helper_done.wait();
    if (!q.call->ok) co_return false;  // the server did not take it: nothing will end the statement
    co_await q.reader_done.wait();
    co_return true;
  };
  auto hook = [&]() -> task<> {
    if (q.reader_done.is_set()) co_return;  // the reader threw (or finished): no statement to cancel
    const std::optional<bool> ok = co_await move_on_after(options.cancel_timeout, confirm());
    if (ok.value_or(false)) {
      if (q.cancel_sent) ++cancels_confirmed;
      co_return;
    }
    // Not confirmed: the reader is cancelled next (its wait on the socket), and the guard closes
    // the connection, since the statement may still be running.
    broken = true;
    if (q.cancel_sent) ++cancels_timed_out;
  };

  std::exception_ptr failure;
  try {
    co_return co_await on_cancel(reader(), hook);
  } catch (const error& e) {
    if (!(q.cancel_sent && e.sqlstate() == "57014")) throw;
    failure = std::current_exception();
  }
  // Our cancel ended the statement as asked: the query ends cancelled (the request that started
  // the hook is still on this task, so this checkpoint is where it ends).
  co_await this_task::checkpoint();
  std::rethrow_exception(failure);  // unreachable unless the 57014 was not ours after all
}

}  // namespace detail

// ---- connection ----

connection::connection() noexcept = default;
connection::connection(std::unique_ptr<detail::conn_state> s) noexcept : s_(std::move(s)) {}
connection::connection(connection&&) noexcept = default;
connection& connection::operator=(connection&&) noexcept = default;
connection::~connection() = default;

namespace {

struct conninfo_deleter {
  void operator()(PQconninfoOption* o) const noexcept { PQconninfoFree(o); }
};

std::vector<std::string> split_commas(const char* v) {
  std::vector<std::string> out;
  if (!v || !*v) return out;
  std::string cur;
  for (const char* p = v; *p; ++p) {
    if (*p == ',') {
      out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += *p;
    }
  }
  out.push_back(std::move(cur));
  return out;
}

std::string join_commas(const std::vector<std::string>& v) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + v[i];
  return out;
}

bool is_numeric_host(const std::string& h) {
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, h.c_str(), buf) == 1 || ::inet_pton(AF_INET6, h.c_str(), buf) == 1;
}

std::string numeric_host(const address& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  const void* src = a.family() == AF_INET6
                        ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(a.data())->sin6_addr)
                        : static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(a.data())->sin_addr);
  ::inet_ntop(a.family(), src, buf, sizeof buf);
  return buf;
}

void append_option(std::string& out, const char* key, const std::string& value) {
  if (!out.empty()) out += ' ';
  out += key;
  out += "='";
  for (char c : value) {
    if (c == '\\' || c == '\'') out += '\\';
    out += c;
  }
  out += '\'';
}

// libpq resolves a host *name* with a blocking getaddrinfo. Resolve each one here, with
// quell::resolve, and hand libpq the addresses as hostaddr (host stays, for authentication and
// TLS): a name with several addresses becomes as many entries, tried in order as libpq would.
task<std::string> resolve_hosts(std::string conninfo) {
  char* err = nullptr;
  std::unique_ptr<PQconninfoOption, conninfo_deleter> opts(PQconninfoParse(conninfo.c_str(), &err));
  if (!opts) {
    std::string msg = err ? detail::trimmed(err) : "malformed conninfo";
    if (err) PQfreemem(err);
    throw error("quell::pg: cannot connect: " + msg);
  }
  const char* host = nullptr;
  const char* hostaddr = nullptr;
  const char* port = nullptr;
  for (PQconninfoOption* o = opts.get(); o->keyword; ++o) {
    if (!o->val) continue;
    if (std::strcmp(o->keyword, "host") == 0) host = o->val;
    if (std::strcmp(o->keyword, "hostaddr") == 0) hostaddr = o->val;
    if (std::strcmp(o->keyword, "port") == 0) port = o->val;
  }
  if (!host || (hostaddr && *hostaddr)) co_return conninfo;  // nothing to resolve, or the caller did
  const std::vector<std::string> hosts = split_commas(host);
  auto is_name = [](const std::string& h) { return !h.empty() && h[0] != '/' && h[0] != '@' && !is_numeric_host(h); };
  if (std::none_of(hosts.begin(), hosts.end(), is_name)) co_return conninfo;
  const std::vector<std::string> ports = split_commas(port);
  std::vector<std::string> new_hosts, new_addrs, new_ports;
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    const std::string p = ports.size() == hosts.size() ? ports[i] : (ports.size() == 1 ? ports[0] : "");
    if (!is_name(hosts[i])) {
      new_hosts.push_back(hosts[i]);
      new_addrs.push_back(is_numeric_host(hosts[i]) ? hosts[i] : "");  // empty: libpq uses host
      new_ports.push_back(p);
      continue;
    }
    std::vector<address> found;
    try {
      found = co_await quell::resolve(hosts[i], "");
    } catch (const std::system_error& e) {
      throw error(std::string("quell::pg: cannot connect: ") + e.what());
    }
    for (const address& a : found) {
      new_hosts.push_back(hosts[i]);
      new_addrs.push_back(numeric_host(a));
      new_ports.push_back(p);
    }
  }
  std::string out;
  for (PQconninfoOption* o = opts.get(); o->keyword; ++o) {
    if (!o->val || std::strcmp(o->keyword, "host") == 0 || std::strcmp(o->keyword, "hostaddr") == 0 ||
        std::strcmp(o->keyword, "port") == 0)
      continue;
    append_option(out, o->keyword, o->val);
  }
  append_option(out, "host", join_commas(new_hosts));
  append_option(out, "hostaddr", join_commas(new_addrs));
  if (!ports.empty()) append_option(out, "port", ports.size() == 1 ? ports[0] : join_commas(new_ports));
  co_return out;
}

}  // namespace

task<connection> connection::connect(std::string conninfo, connection_options options) {
  conninfo = co_await resolve_hosts(std::move(conninfo));
  auto s = std::make_unique<detail::conn_state>();
  s->options = options;
  // Owned by `s` from here on: cancelled or failed, the half-open connection is PQfinish'ed when
  // this frame goes (after the wait on its socket has ended).
  s->conn = PQconnectStart(conninfo.c_str());
  if (!s->conn) throw std::bad_alloc();
  if (PQstatus(s->conn) == CONNECTION_BAD) {
    throw error("quell::pg: cannot connect: " + detail::trimmed(PQerrorMessage(s->conn)));
  }
  // libpq docs: behave as if PQconnectPoll had last returned PGRES_POLLING_WRITING.
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  while (st != PGRES_POLLING_OK) {
    if (st == PGRES_POLLING_FAILED) {
      throw error("quell::pg: cannot connect: " + detail::trimmed(PQerrorMessage(s->conn)));
    }
    // The socket may change between attempts (several hosts, SSL then plain): ask every time.
    const int fd = PQsocket(s->conn);
    if (fd < 0) throw error("quell::pg: cannot connect: " + detail::trimmed(PQerrorMessage(s->conn)));
    if (st == PGRES_POLLING_READING) {
      co_await wait_readable(fd);
    } else {
      co_await wait_writable(fd);
    }
    st = PQconnectPoll(s->conn);
  }
  if (PQsetnonblocking(s->conn, 1) != 0) {
    throw error("quell::pg: cannot make the connection non-blocking: " + detail::trimmed(PQerrorMessage(s->conn)));
  }
  co_return connection(std::move(s));
}

task<result> connection::query_params(std::string sql, std::vector<param> params) {
  if (!s_) throw error("quell::pg: the connection is not open");
  return s_->run_query(std::move(sql), std::move(params));
}

bool connection::is_open() const noexcept { return s_ && s_->conn; }
bool connection::broken() const noexcept { return s_ && s_->broken; }
bool connection::busy() const noexcept { return s_ && s_->busy; }
bool connection::idle() const noexcept {
  return is_open() && !s_->broken && !s_->busy && PQstatus(s_->conn) == CONNECTION_OK &&
         PQtransactionStatus(s_->conn) == PQTRANS_IDLE;
}
int connection::backend_pid() const noexcept { return is_open() ? PQbackendPID(s_->conn) : 0; }
const connection_options& connection::options() const noexcept {
  static const connection_options defaults;
  return s_ ? s_->options : defaults;
}
std::size_t connection::cancels_sent() const noexcept { return s_ ? s_->cancels_sent : 0; }
std::size_t connection::cancels_confirmed() const noexcept { return s_ ? s_->cancels_confirmed : 0; }
std::size_t connection::cancels_timed_out() const noexcept { return s_ ? s_->cancels_timed_out : 0; }

void connection::close() {
  if (!s_) return;
  if (s_->busy) throw std::logic_error("quell::pg: close() while a query is running");
  s_->close();
}

pg_conn* connection::native_handle() const noexcept { return s_ ? s_->conn : nullptr; }

void connection::redirect_cancels_for_testing(const connection& other) {
  if (!s_ || !other.is_open()) throw std::logic_error("quell::pg: redirect_cancels_for_testing needs two open connections");
  if (s_->redirected_cancel) PQfreeCancel(s_->redirected_cancel);
  s_->redirected_cancel = PQgetCancel(other.s_->conn);
}

bool connection::still_alive() noexcept {
  if (!s_ || !s_->conn || s_->broken || s_->busy) return false;
  pollfd p{PQsocket(s_->conn), POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) == 0) return true;  // nothing arrived: as alive as can be known
  const bool hung_up = (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  if (hung_up || !PQconsumeInput(s_->conn) || PQstatus(s_->conn) != CONNECTION_OK) {
    s_->broken = true;
    s_->close();
    return false;
  }
  while (PGnotify* n = PQnotifies(s_->conn)) PQfreemem(n);  // LISTEN's notifications: not ours to keep
  return true;
}

// ---- pool ----

pool::pool(std::string conninfo, std::size_t size, connection_options options, pool_options pool)
    : conninfo_(std::move(conninfo)), size_(size), options_(options), pool_options_(pool), slots_(size) {
  idle_.reserve(size);
}

pool::~pool() {
  if (slots_.available() != size_) {
    quell::detail::fatal("quell::pg: a pool was destroyed while leases (or acquirers holding a slot) still existed");
  }
}

task<lease> pool::acquire() {
  permit slot = co_await slots_.acquire();
  while (!idle_.empty()) {
    connection c = std::move(idle_.back());
    idle_.pop_back();
    if (c.idle() && c.still_alive()) co_return lease(this, std::move(c), std::move(slot));
    ++closed_;  // went bad while idle (server restarted it, ...): replaced below
  }
  connection c = co_await open_with_backoff();
  ++opened_;
  co_return lease(this, std::move(c), std::move(slot));
}

task<connection> pool::open_with_backoff() {
  const time_point give_up = quell::detail::add_saturating(now(), pool_options_.reconnect_window);
  for (;;) {
    if (now() < next_attempt_) {
      if (next_attempt_ > give_up) {
        throw error("quell::pg: the server is unreachable (retrying every " +
                    std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(backoff_).count()) +
                    " ms): " + last_error_);
      }
      co_await sleep_until(next_attempt_);
    }
    try {
      connection c = co_await connection::connect(conninfo_, options_);
      backoff_ = duration{};
      next_attempt_ = time_point{};
      co_return c;
    } catch (const error& e) {
      last_error_ = e.what();
      const duration first = std::chrono::milliseconds(100);
      backoff_ = backoff_ == duration{} ? first : std::min(backoff_ * 2, pool_options_.max_backoff);
      next_attempt_ = now() + backoff_;
      if (next_attempt_ > give_up) throw;
    }
  }
}

void pool::give_back(connection c) noexcept {
  if (c.idle()) {
    idle_.push_back(std::move(c));  // reserved for `size` connections: cannot throw
  } else {
    ++closed_;  // broken, closed or inside a transaction: closed here, replaced by a later acquire
  }
}

void lease::release() noexcept {
  if (!pool_) return;
  // The connection goes back before the slot is freed, so the waiter the slot goes to finds it.
  std::exchange(pool_, nullptr)->give_back(std::move(conn_));
  permit_.release();
}

}  // namespace quell::pg
