// quell::pg: PostgreSQL through libpq's asynchronous API, with asynchronous query cancellation.
// CMake target quell::pg (library quell_pg); needs Debian's libpq-dev.
//
//   auto conn = co_await quell::pg::connection::connect("host=127.0.0.1 port=5432 dbname=app");
//   quell::pg::result r = co_await conn.query("select name from users where id = $1", 42);
//   std::string_view name = r.at(0, 0);
//
//   quell::pg::pool pool{"host=127.0.0.1 dbname=app", 4};
//   auto lease = co_await pool.acquire();            // FIFO, cancellable
//   co_await lease->query("select pg_sleep(1)");     // the connection goes back when `lease` dies
//
// CONNECTING. connect() runs PQconnectStart / PQconnectPoll and waits on libpq's socket with
// quell::wait_readable / wait_writable (quell/readiness.hpp), so the executor never blocks on the
// network. Host names (host=db.internal, one or a list) are resolved first with quell::resolve
// (quell/resolve.hpp; cancellable like the rest) and passed to libpq as hostaddr, with host kept
// for authentication and TLS, so libpq's own blocking getaddrinfo never runs; a name with several
// addresses becomes as many entries, tried in order. A name that does not resolve is a pg::error
// ("quell::pg: cannot connect: resolve db.internal: not found"). A conninfo that gives hostaddr
// itself is passed unchanged. Only a host written in the conninfo is seen this way: one that
// libpq takes from PGHOST or a service file (service=) is still looked up by libpq, blocking;
// write the host in the conninfo. libpq's connect_timeout is not honoured by the
// asynchronous API: bound a connect with quell::timeout instead.
//   - It fails with pg::error carrying libpq's message (refused port, bad password, malformed
//     conninfo).
//   - Cancelled: the half-open connection is closed (PQfinish) and connect ends cancelled.
//
// QUERIES. query(sql, params...) sends one statement with PQsendQueryParams (parameters in text
// form: strings as they are, numbers formatted, std::nullopt or an empty std::optional as SQL
// NULL), flushes it while waiting for the socket to be writable, then reads with wait_readable +
// PQconsumeInput + PQisBusy + PQgetResult until libpq reports the end of the results, so the
// connection is ready for the next query whenever query() ends with a value or a pg::error.
//   - A server error (syntax, constraint, ...) is a pg::error whose sqlstate() is the SQLSTATE
//     ("42601"); the connection stays usable.
//   - The connection failing underneath (server gone, socket error) is a pg::error with an empty
//     sqlstate(); the connection is then marked broken() and closed.
//   - One query at a time per connection: a second query while one runs is a std::logic_error.
//     The connection must outlive its running query (await or cancel it first).
//
// CANCELLATION OF A RUNNING QUERY (who resumes whom, and each race). When a cancel request
// reaches query(), the query is not abandoned: the request is held back (quell::on_cancel) while
// a cleanup hook, shielded from graceful requests and bounded by options.cancel_timeout, does:
//   1. waits until the statement is fully written to the socket (a cancel that reached the
//      server before the statement would be ignored there, and the statement would then run);
//   2. sends the server a cancel request, once: PQcancel on a short-lived helper thread, since
//      PQcancel opens a new connection to the server and blocks; the thread hands the outcome
//      back to the executor through its remote_handle (quell/executor.hpp), which wakes it;
//   3. waits for the helper's answer and for the query's reader, which has kept running all the
//      while, to see the end of the results (normally SQLSTATE 57014 query_canceled) and the
//      server ready for the next statement.
// Then query() ends cancelled, and the connection is reusable at once: no stale cancel can hit
// the next statement, because the server has already acted on it (PQcancel returns once the
// server has processed the request) and the reader has seen the end of the cancelled one.
//   - The results had fully arrived before the cancel could land (completion wins): the result
//     (or the server's own error) is delivered, and the caller's next suspension point is
//     cancelled. The server ignores a cancel that reaches an idle connection, so the next
//     statement is not affected. If the results were complete before the hook could send
//     anything, no cancel is sent at all.
//   - The server does not confirm within cancel_timeout (a cancel lost or ignored, a server that
//     does not read), or the helper could not deliver it: the connection is closed and marked
//     broken() (a pool replaces it); it is never reused with a statement still running.
//   - A forced cancel request does not wait for the server: the hook starts as usual (so the
//     cancel is still sent if the statement is on the wire) and is cut short at its first wait;
//     the connection is closed.
//   - The cancel is sent at most once per query (cancels_sent() counts them).
// A pending cancel before query() starts means nothing is sent to the server at all.
//
// POOL. pool(conninfo, size) hands out at most `size` connections as leases. acquire() waits for
// a free slot (a quell::semaphore: waiters are served first come, first served; a cancelled
// waiter takes nothing), then reuses an idle connection or opens a new one (lazily: a pool
// starts empty). A lease gives its connection back when destroyed: a connection that is broken,
// closed, or not idle (a transaction left open, PQtransactionStatus != PQTRANS_IDLE) is closed
// instead of being returned dirty, and its slot is refilled by a later acquire(). The pool must
// outlive its leases and acquirers.
//   - An idle connection the server has closed meanwhile (a restart, an idle timeout, a
//     terminated backend) is found before it is handed out: acquire() looks, without blocking,
//     whether the server sent anything on it (an idle connection receives nothing else) and
//     replaces it. A query is therefore never sent on a connection known to be dead; a query
//     that fails once sent is never retried (it may have run).
//   - While the server cannot be reached, new connections are attempted with a backoff shared
//     by the pool (100 ms, doubling, at most pool_options::max_backoff): acquire() waits for the
//     next attempt instead of failing at once, for at most pool_options::reconnect_window, then
//     throws the last error. Cancelling acquire() ends the wait.
//
// THREADS. Everything here belongs to one executor's thread, except the cancel helper threads,
// which own only a copy of the cancel key (PQgetCancel) and a remote_handle. A helper outlives
// its query only if the cancel connection hangs past cancel_timeout; it then finishes on its own
// and its answer is dropped.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "quell/clock.hpp"
#include "quell/semaphore.hpp"
#include "quell/task.hpp"

struct pg_conn;  // libpq's PGconn

namespace quell::pg {

// A failure reported by the server (sqlstate() is its SQLSTATE, e.g. "42601") or by libpq
// (sqlstate() is empty: connection refused, connection lost, malformed conninfo).
class error : public std::runtime_error {
 public:
  explicit error(const std::string& message, std::string sqlstate = {})
      : std::runtime_error(message), sqlstate_(std::move(sqlstate)) {}
  const std::string& sqlstate() const noexcept { return sqlstate_; }

 private:
  std::string sqlstate_;
};

// The rows of a query, copied out of libpq as text.
class result {
 public:
  std::size_t rows() const noexcept { return rows_.size(); }
  std::size_t columns() const noexcept { return names_.size(); }
  const std::string& column_name(std::size_t col) const { return names_.at(col); }
  bool is_null(std::size_t row, std::size_t col) const { return !rows_.at(row).at(col).has_value(); }
  // The value as text; std::nullopt for SQL NULL.
  std::optional<std::string_view> get(std::size_t row, std::size_t col) const {
    const auto& v = rows_.at(row).at(col);
    if (!v) return std::nullopt;
    return std::string_view(*v);
  }
  // The value as text; std::out_of_range for a bad index, pg::error for SQL NULL.
  std::string_view at(std::size_t row, std::size_t col) const {
    const auto& v = rows_.at(row).at(col);
    if (!v) throw error("quell::pg: value (" + std::to_string(row) + ", " + std::to_string(col) + ") is NULL");
    return *v;
  }
  // The command tag: "SELECT 1", "INSERT 0 3", "CREATE TABLE".
  const std::string& command_status() const noexcept { return status_; }
  // Rows affected by INSERT/UPDATE/DELETE (and rows returned by SELECT), from the command tag.
  std::uint64_t rows_affected() const noexcept { return affected_; }

 private:
  friend struct result_builder;
  std::vector<std::string> names_;
  std::vector<std::vector<std::optional<std::string>>> rows_;
  std::string status_;
  std::uint64_t affected_ = 0;
};

struct connection_options {
  // How long a cancelled query may take to be confirmed by the server (from the moment the cancel
  // reached query() until the server is ready again) before the connection is closed instead.
  duration cancel_timeout = std::chrono::seconds(5);
};

using param = std::optional<std::string>;

namespace detail {
std::string format_double(double v);

inline param to_param(std::nullopt_t) { return std::nullopt; }
inline param to_param(const char* s) { return s ? param(s) : param(); }
inline param to_param(std::string_view s) { return std::string(s); }
inline param to_param(const std::string& s) { return s; }
inline param to_param(bool b) { return std::string(b ? "true" : "false"); }
template <class T>
requires(std::is_integral_v<T> && !std::is_same_v<T, bool> && !std::is_same_v<T, char>) param to_param(T v) {
  return std::to_string(v);
}
template <class T>
requires std::is_floating_point_v<T> param to_param(T v) { return format_double(static_cast<double>(v)); }
template <class T>
param to_param(const std::optional<T>& v) {
  return v ? to_param(*v) : param();
}
struct conn_state;
}  // namespace detail

class connection {
 public:
  // Opens a connection without blocking the executor (see CONNECTING above).
  static task<connection> connect(std::string conninfo, connection_options options = {});

  connection() noexcept;  // not connected: is_open() is false
  connection(connection&&) noexcept;
  connection& operator=(connection&&) noexcept;
  ~connection();  // closes; std::terminate if a query is still running on it

  // Sends `sql` with text parameters $1, $2, ... (see QUERIES and CANCELLATION above).
  template <class... P>
  task<result> query(std::string sql, const P&... params) {
    std::vector<param> ps;
    ps.reserve(sizeof...(P));
    (ps.push_back(detail::to_param(params)), ...);
    return query_params(std::move(sql), std::move(ps));
  }
  task<result> query_params(std::string sql, std::vector<param> params);

  bool is_open() const noexcept;
  // The connection failed or a cancel could not be confirmed: it is closed and must be replaced.
  bool broken() const noexcept;
  bool busy() const noexcept;  // a query is running
  // Open, not broken, no query running, no transaction open (PQTRANS_IDLE).
  bool idle() const noexcept;
  // For an idle connection: looks, without blocking, whether the server closed it meanwhile (it
  // sends an idle connection nothing else), reading what arrived. False: it is dead and closed.
  bool still_alive() noexcept;
  int backend_pid() const noexcept;
  const connection_options& options() const noexcept;

  std::size_t cancels_sent() const noexcept;
  // The statement ended (cancelled, or completed first) after our cancel, within cancel_timeout.
  std::size_t cancels_confirmed() const noexcept;
  std::size_t cancels_timed_out() const noexcept;  // not confirmed in time: the connection was closed

  // Closes now (PQfinish). Not while a query runs (std::logic_error).
  void close();
  pg_conn* native_handle() const noexcept;

  // Tests only: send this connection's next cancel request with `other`'s cancel key (taken now), so
  // that a real cancel goes to the server but reaches another backend, which ignores it while
  // idle: the way to see the cancel timeout with a real server.
  void redirect_cancels_for_testing(const connection& other);

 private:
  explicit connection(std::unique_ptr<detail::conn_state> s) noexcept;
  // The state lives on the heap so that a running query keeps its address when the connection
  // object is moved.
  std::unique_ptr<detail::conn_state> s_;
};

class pool;

// A connection borrowed from a pool; given back (or closed, if not reusable) when destroyed.
class lease {
 public:
  lease() noexcept = default;
  lease(lease&& o) noexcept
      : pool_(std::exchange(o.pool_, nullptr)), conn_(std::move(o.conn_)), permit_(std::move(o.permit_)) {}
  lease& operator=(lease&& o) noexcept {
    if (this != &o) {
      release();
      pool_ = std::exchange(o.pool_, nullptr);
      conn_ = std::move(o.conn_);
      permit_ = std::move(o.permit_);
    }
    return *this;
  }
  ~lease() { release(); }

  connection& operator*() noexcept { return conn_; }
  connection* operator->() noexcept { return &conn_; }
  explicit operator bool() const noexcept { return pool_ != nullptr; }
  // Gives the connection back now (idempotent).
  void release() noexcept;

 private:
  friend class pool;
  lease(pool* p, connection c, permit pm) noexcept : pool_(p), conn_(std::move(c)), permit_(std::move(pm)) {}
  pool* pool_ = nullptr;
  connection conn_;
  permit permit_;
};

struct pool_options {
  // How long acquire() keeps trying to open a connection while the server is unreachable.
  duration reconnect_window = std::chrono::seconds(5);
  // The longest pause between two attempts (the pause doubles from 100 ms).
  duration max_backoff = std::chrono::seconds(2);
};

class pool {
 public:
  pool(std::string conninfo, std::size_t size, connection_options options = {}, pool_options pool = {});
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;
  ~pool();  // closes the idle connections

  // Waits for a free slot (FIFO; a cancelled waiter takes nothing), then hands out an idle
  // connection or opens a new one. A failed connect throws pg::error and frees the slot.
  task<lease> acquire();

  std::size_t size() const noexcept { return size_; }
  std::size_t available() const noexcept { return slots_.available(); }  // free slots
  std::size_t waiting() const noexcept { return slots_.waiting(); }
  std::size_t idle() const noexcept { return idle_.size(); }
  std::size_t opened() const noexcept { return opened_; }  // connections opened so far
  std::size_t closed() const noexcept { return closed_; }  // connections closed instead of reused

 private:
  friend class lease;
  void give_back(connection c) noexcept;

  task<connection> open_with_backoff();

  std::string conninfo_;
  std::size_t size_;
  connection_options options_;
  pool_options pool_options_;
  duration backoff_{};         // zero while the server answers
  time_point next_attempt_{};  // no connect before this while backing off
  std::string last_error_;
  semaphore slots_;
  std::vector<connection> idle_;
  std::size_t opened_ = 0;
  std::size_t closed_ = 0;
};

}  // namespace quell::pg
