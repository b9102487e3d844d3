#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <system_error>

#include "message.hpp"
#include "parser.hpp"
#include "quell/deadline.hpp"
#include "quell/detail/alarm.hpp"
#include "quell/event.hpp"
#include "quell/http.hpp"
#include "quell/race.hpp"
#include "quell/readiness.hpp"
#include "quell/runtime.hpp"
#include "quell/scope.hpp"
#include "quell/shared_event.hpp"
#include "quell/time.hpp"

namespace quell::http {

using detail::response_closes;
using detail::serialize;

namespace {

constexpr std::size_t read_buffer_size = 16 * 1024;

}  // namespace

struct server::impl {
  tcp_listener listener;
  handler handle;
  server_options opts;
  server_stats stats;
  event drain;       // shutdown() was called
  event all_closed;  // draining, and the last connection has gone
  // Connections waiting for their next request, oldest first: the ones closed to make room.
  struct idle_connection : quell::detail::list_node {
    event evict;
    const tcp_stream* conn = nullptr;
  };
  quell::detail::node_list idle;
  std::size_t body_bytes_held = 0;  // bodies of requests read and not yet finished
  int spare_fd = -1;                // kept open so that, out of descriptors, one can still be shed
  time_point last_shed_log{};
  duration grace{};
  bool draining = false;
  bool running = false;

  // server_options::every_core: what the cores share. Each core's slot is written and read by
  // that core only, and by the home core after the cores have ended (on_each_core's join orders
  // them); set() and the grace are the only things another thread touches.
  struct core_slot {
    std::unique_ptr<impl> server;  // the core's own server while it runs (null on the home core)
    server_stats last;             // its stats when it ended
  };
  struct every_core_state {
    shared_event stop;
    std::atomic<bool> stopping{false};
    std::atomic<duration::rep> grace{0};
    std::vector<core_slot> cores;
    unsigned home = 0;    // the core run() was called on (its slot stays empty: this impl serves there)
    bool active = false;  // the home core's: run() is serving on the cores now
  };
  std::unique_ptr<every_core_state> every;

  impl(tcp_listener l, handler h, server_options o) : listener(std::move(l)), handle(std::move(h)), opts(o) {
    spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (opts.every_core) every = std::make_unique<every_core_state>();
  }
  ~impl() {
    if (spare_fd >= 0) ::close(spare_fd);
  }

  // Closes the connection idle the longest, if any: room for a new one. True if one was asked.
  // The oldest connection waiting for its next request whose request has not started to arrive:
  // bytes kept by the stream (receive-ahead's queue) or still in the socket mean a client is
  // sending, and closing under it would reset the connection under that request.
  bool evict_oldest_idle() noexcept {
    idle_connection* victim = nullptr;
    idle.for_each([&](quell::detail::list_node* n) {
      if (victim) return;
      auto* c = static_cast<idle_connection*>(n);
      int unread = 0;
      if (c->conn &&
          (c->conn->buffered() > 0 || (::ioctl(c->conn->native_handle(), FIONREAD, &unread) == 0 && unread > 0))) {
        return;
      }
      victim = c;
    });
    if (!victim) return false;
    victim->unlink();
    victim->evict.set();
    return true;
  }
  void shed_log(const char* what);
  void shed_without_descriptors();

  task<void> run();
  task<void> run_every_core();
  task<void> run_core(bool is_home, address bound);
  void shutdown(duration grace) noexcept;
  task<void> accept_loop(scope& s);
  struct connection;
  task<void> serve(tcp_stream conn);
  task<void> refuse(tcp_stream conn);
  task<void> run_handler(int fd, request& req, std::optional<response>& out, bool& gone);

  // Counts a connection for as long as its task's frame lives (a cancelled task ends without
  // running the code after its last co_await).
  struct connection_count {
    impl& s;
    explicit connection_count(impl& s) : s(s) {
      ++s.stats.connections_accepted;
      ++s.stats.connections_open;
    }
    ~connection_count() {
      if (--s.stats.connections_open == 0 && s.draining) s.all_closed.set();
    }
  };
  struct in_flight {
    impl& s;
    explicit in_flight(impl& s) : s(s) {
      ++s.stats.requests_handled;
      ++s.stats.requests_in_flight;
    }
    ~in_flight() { --s.stats.requests_in_flight; }
  };
};

task<void> server::impl::run() {
  if (running) throw std::logic_error("quell::http::server: run() is already running");
  running = true;
  // Also when run() is cancelled: no more connections queue up in a backlog nobody accepts.
  struct not_running {
    impl& s;
    ~not_running() {
      s.running = false;
      if (s.listener.is_open()) s.listener = tcp_listener();  // closes in the background
    }
  } guard{*this};
  auto body = [this](scope& s) -> task<void> {
    s.spawn(accept_loop(s));
    co_await drain.wait();
    // Stop accepting first: the accept in flight ends (ECANCELED) and the loop sees `draining`.
    co_await listener.close();
    if (stats.connections_open > 0) {
      auto finished = co_await move_on_after(grace, all_closed.wait());
      if (!finished) s.cancel(cancel_reason(cancel_kind::shutdown, "the grace period is over"));
    }
  };
  co_await with_scope(body);
}

void server::impl::shutdown(duration grace_period) noexcept {
  if (draining) return;
  draining = true;
  grace = grace_period;
  if (stats.connections_open == 0) all_closed.set();
  drain.set();
}

task<void> server::impl::run_every_core() {
  if (running || every->active) throw std::logic_error("quell::http::server: run() is already running");
  // The cores bind to the address the home listener got (port 0 resolved), before it can close.
  const address bound = listener.local_address();
  const unsigned home = this_core();
  every->cores.clear();
  every->cores.resize(core_count());
  every->home = home;
  every->active = true;
  struct inactive {
    every_core_state& e;
    ~inactive() { e.active = false; }
  } done{*every};
  auto one_core = [this, bound, home] { return run_core(this_core() == home, bound); };
  co_await on_each_core(one_core);
}

// On each core: the home core serves on the server's own listener, every other core on a
// listener of its own bound to the same address (SO_REUSEPORT), with its own copy of the handler
// and its own limits. A shutdown() from any thread reaches each of them through `every->stop`.
task<void> server::impl::run_core(bool is_home, address bound) {
  core_slot& slot = every->cores[this_core()];
  impl* here = this;
  if (!is_home) {
    tcp_listener mine;
    try {
      listen_options lo;
      lo.reuse_port = true;
      mine = tcp_listener::bind(bound, lo);
    } catch (const std::system_error& e) {
      throw std::system_error(e.code(), "quell::http::server on core " + std::to_string(this_core()) + ": " + e.what() +
                                            " (every_core: the server's listener must be bound with reuse_port)");
    }
    server_options o = opts;
    o.every_core = false;
    slot.server = std::make_unique<impl>(std::move(mine), handle, o);
    here = slot.server.get();
  }
  // The slot keeps the core's figures when its server is gone, whichever way run() ends.
  struct keep_stats {
    core_slot& slot;
    impl& s;
    ~keep_stats() {
      slot.last = s.stats;
      slot.server.reset();
    }
  } keep{slot, *here};
  auto body = [this, here](scope& s) -> task<void> {
    auto watch = [this, here]() -> task<void> {
      co_await every->stop.wait();
      here->shutdown(duration(every->grace.load(std::memory_order_acquire)));
    };
    auto watcher = s.spawn(watch);
    co_await here->run();
    watcher.cancel(cancel_reason(cancel_kind::requested, "the core's server ended"));
  };
  co_await with_scope(body);
}

task<void> server::impl::accept_loop(scope& s) {
  for (;;) {
    tcp_stream conn;
    bool back_off = false;
    try {
      conn = co_await listener.accept();
    } catch (const std::system_error& e) {
      if (draining || !listener.is_open()) co_return;
      int code = e.code().value();
      if (code == EMFILE || code == ENFILE || code == ENOBUFS || code == ENOMEM) {
        back_off = true;  // out of descriptors: let connections finish before trying again
      } else if (code != ECONNABORTED && code != EPROTO && code != EPERM && code != EINTR && code != ENETDOWN &&
                 code != ENOPROTOOPT && code != EHOSTDOWN && code != ENONET && code != EHOSTUNREACH &&
                 code != EOPNOTSUPP && code != ENETUNREACH) {
        throw;  // the errors accept(2) says to retry on are the connection's, not the listener's
      }
    }
    if (back_off) {
      // Out of descriptors (accept fails before it looks at the backlog): wait until a client is
      // waiting, then shed for it instead of letting it time out in the backlog.
      try {
        co_await move_on_after(std::chrono::milliseconds(100), wait_readable(listener.native_handle()));
      } catch (const std::system_error&) {
      }
      if (draining || !listener.is_open()) co_return;
      shed_without_descriptors();
      // An evicted connection frees its descriptor only once its close has gone through: give
      // it that time rather than evicting another one for the same client (and never spin when
      // there is nothing left to shed).
      co_await sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    if (!conn.is_open()) continue;
    if (draining) {
      co_await conn.close();
      co_return;
    }
    if (stats.connections_open >= opts.max_connections && !evict_oldest_idle()) {
      // Full, and every connection is busy with a request: this one is told to come back.
      ++stats.connections_refused;
      shed_log("at max_connections: new connections are answered 503");
      s.spawn(refuse(std::move(conn)));
      continue;
    }
    s.spawn(serve(std::move(conn)));
  }
}

task<void> server::impl::run_handler(int fd, request& req, std::optional<response>& out, bool& gone) {
  std::optional<spawn_handle<void>> handler_h, watcher_h;
  // The children refer to this frame only: the body may finish before them.
  auto call = [&]() -> task<void> {
    // However the handler ends (a value, an exception, or cancelled on its own, when no code
    // after its co_await runs), the watcher must stop, or the scope would wait for the peer.
    struct stop_watcher {
      std::optional<spawn_handle<void>>& w;
      ~stop_watcher() {
        if (w) w->cancel(cancel_reason(cancel_kind::requested, "the handler ended"));
      }
    } stop{watcher_h};
    out = co_await handle(req);
  };
  auto watch = [&]() -> task<void> {
    // POLLRDHUP consumes nothing: a pipelined request stays in the socket for the next round.
    try {
      co_await wait_for_events(fd, POLLRDHUP);
    } catch (const std::system_error&) {
      co_return;  // cannot watch: the handler runs unwatched rather than failing
    }
    gone = true;
    if (handler_h && !handler_h->done()) {
      ++stats.cancelled_by_disconnect;
      handler_h->cancel(cancel_reason(cancel_kind::peer_disconnected));
    }
  };
  auto body = [&](scope& s) -> task<void> {
    handler_h.emplace(s.spawn(call));
    if (!handler_h->done()) watcher_h.emplace(s.spawn(watch));
    co_return;
  };
  co_await with_scope(body);
}

// One connection, in the steps HTTP/1.1 gives it: wait, idle, for the first byte of a request;
// read that request under its header and body deadlines; answer it (the handler runs watched for
// the client going away); after the last answer, close lingering. Each step is a member below and
// says how it ends; serve() only strings them together.
struct server::impl::connection {
  impl& s;
  tcp_stream& conn;  // the socket (under `tls` when the server speaks HTTPS)
  tls_stream* tls;
  address peer;
  std::unique_ptr<char[]> buf{new char[read_buffer_size]};
  std::span<char> whole{buf.get(), read_buffer_size};
  std::size_t beg = 0, end = 0;  // bytes read and not yet parsed: buf[beg, end)
  detail::message_parser p;
  // Close by saying we are done writing and draining the client's input for a while: set after a
  // final answer the client is still reading.
  bool linger = false;

  // The bodies of all requests being read or handled share one budget, charged as the head
  // declares a body and as a chunked body grows, released when the handler ends: neither a flood
  // of queued requests nor many slow uploads can grow the process without bound.
  struct body_charge {
    impl& s;
    std::size_t n = 0;
    bool fits(std::size_t m) const noexcept { return s.body_bytes_held - n + m <= s.opts.max_buffered_body_bytes; }
    void set(std::size_t m) noexcept {
      s.body_bytes_held = s.body_bytes_held - n + m;
      n = m;
    }
    ~body_charge() { s.body_bytes_held -= n; }
  };

  enum class read_result {
    complete,     // p holds a request
    blank_lines,  // only the empty lines some clients send after a body: still idle
    peer_closed,  // end of stream, or the 100 Continue could not be written
    rejected,     // answer `status` and close
  };

  // Writes go through TLS when there is one (the rare ones; the hot paths choose inline).
  task<void> write_all(std::string_view bytes) {
    if (tls) {
      co_await tls->write_all(bytes);
    } else {
      co_await conn.write_all(bytes);
    }
  }

  connection(impl& s, tcp_stream& conn, tls_stream* tls)
      : s(s),
        conn(conn),
        tls(tls),
        p(detail::message_parser::kind::request, s.opts.max_header_bytes, s.opts.max_body_bytes) {
    // Responses go out in one write each; do not let Nagle hold the last segment back.
    int one = 1;
    ::setsockopt(conn.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    try {
      peer = conn.peer_address();
    } catch (const std::system_error&) {
    }
  }

  // Idle between requests: the next request's first byte, the idle timeout, shutdown, or eviction
  // to make room for a new connection. False: close.
  task<bool> wait_for_first_byte() {
    if (s.draining) co_return false;
    idle_connection me;
    me.conn = &conn;
    s.idle.push_back(&me);
    struct unlink_at_end {
      idle_connection& n;
      ~unlink_at_end() {
        if (n.linked()) n.unlink();
      }
    } unlink{me};
    auto dw = s.drain.wait();
    auto ev = me.evict.wait();
    // Each read is the stream's own awaitable: a byte that arrives as the race is decided is given
    // back, not lost.
    std::size_t n = 0;
    if (tls) {
      auto first =
          co_await move_on_after(s.opts.idle_timeout, race(tls->read_some(whole), std::move(dw), std::move(ev)));
      if (!first || first->index() != 0) co_return false;
      n = std::get<0>(*first);
    } else {
      auto first =
          co_await move_on_after(s.opts.idle_timeout, race(conn.read_some(whole), std::move(dw), std::move(ev)));
      if (!first || first->index() != 0) co_return false;
      n = std::get<0>(*first);
    }
    if (n == 0) co_return false;
    beg = 0;
    end = n;
    co_return true;
  }

  // Parses what was read and reads more until one request is complete, within the header deadline
  // and then the body deadline (408), the body budget (503), and the parser's rules (its status).
  task<read_result> read_request(body_charge& held, int& status) {
    p.reset();
    const time_point header_deadline = quell::detail::add_saturating(now(), s.opts.header_timeout);
    time_point body_deadline{};
    bool continue_sent = false;
    for (;;) {
      beg += p.feed(buf.get() + beg, end - beg);
      if (beg == end) beg = end = 0;
      if (p.failed()) {
        status = p.error_status();
        co_return read_result::rejected;
      }
      // The parser refuses bodies over max_body_bytes before this sum can overflow.
      const std::size_t want = p.body.size() + static_cast<std::size_t>(p.declared_body());
      if (want > held.n) {
        if (!held.fits(want)) {
          status = 503;
          co_return read_result::rejected;
        }
        held.set(want);
      }
      if (p.complete()) co_return read_result::complete;
      if (!p.started()) co_return read_result::blank_lines;
      if (p.headers_complete() && body_deadline == time_point{}) {
        body_deadline = quell::detail::add_saturating(now(), s.opts.body_timeout);
        if (p.expects_continue() && p.version_minor >= 1 && !continue_sent) {
          continue_sent = true;
          auto sent = co_await move_on_after(s.opts.write_timeout, write_all("HTTP/1.1 100 Continue\r\n\r\n"));
          if (!sent) co_return read_result::peer_closed;
        }
      }
      const time_point deadline = p.headers_complete() ? body_deadline : header_deadline;
      // (Plain HTTP awaits the socket's read directly: no task in between on the hot path.)
      auto more = tls ? co_await move_on_at(deadline, tls->read_some(whole))
                      : co_await move_on_at(deadline, conn.read_some(whole));
      if (!more) {
        status = 408;
        co_return read_result::rejected;
      }
      if (*more == 0) co_return read_result::peer_closed;
      end = *more;
    }
  }

  // The answer to a request that was not read: its status and why, then the connection closes.
  task<void> reject(int status) {
    ++s.stats.requests_rejected;
    std::string text = status == 408   ? std::string("request timeout")
                       : status == 503 ? std::string("the server is busy; try again later")
                                       : p.error_text();
    response answer = response::text(status, text + "\n");
    if (status == 503) {
      ++s.stats.requests_shed;
      s.shed_log("over max_buffered_body_bytes: requests with bodies are answered 503");
      answer.headers.push_back({"Retry-After", "1"});
    }
    std::string bytes = serialize(answer, false, false, p.version_minor);
    auto sent = co_await move_on_after(s.opts.write_timeout, write_all(bytes));
    linger = sent.has_value();
  }

  // Runs the handler on the request p holds and writes its response. True: keep the connection
  // for the next request. A handler cancelled because the client went away has nobody to answer.
  task<bool> answer() {
    request req;
    req.method = std::move(p.method);
    req.target = std::move(p.target);
    req.version_major = p.version_major;
    req.version_minor = p.version_minor;
    req.headers = std::move(p.headers);
    req.body = std::move(p.body);
    req.peer = peer;
    const bool client_keep = p.keep_alive() && !p.upgrade();
    const bool head = req.method == "HEAD";

    std::optional<response> out;
    bool gone = false, threw = false;
    {
      in_flight counted_request(s);
      try {
        co_await s.run_handler(conn.native_handle(), req, out, gone);
      } catch (...) {
        threw = true;
        ++s.stats.handler_errors;
      }
    }
    if (threw && !gone) out = response::text(500, "internal server error\n");
    if (!out) co_return false;
    if (out->status < 200 || out->status > 599) {
      // An interim (1xx) or invalid status as a final answer would leave the client waiting.
      ++s.stats.handler_errors;
      out = response::text(500, "internal server error\n");
    }
    const bool keep = client_keep && !gone && !s.draining && !response_closes(*out);
    std::string bytes = serialize(*out, keep, head, req.version_minor);
    auto sent = tls ? co_await move_on_after(s.opts.write_timeout, tls->write_all(bytes))
                    : co_await move_on_after(s.opts.write_timeout, conn.write_all(bytes));
    if (!sent) co_return false;
    linger = !keep && !gone;
    co_return keep;
  }

  // Closing with unread input makes the kernel send a reset, which can destroy the response the
  // client has not read yet: say we are done writing, then drain for a while (nginx's lingering
  // close).
  task<void> lingering_close() {
    if (tls) co_return;  // TLS says "done writing" with close_notify: serve()'s close(linger_timeout)
    try {
      conn.shutdown(SHUT_WR);
    } catch (const std::system_error&) {
      co_return;
    }
    auto drain_input = [&]() -> task<void> {
      std::size_t total = 0;
      try {
        while (std::size_t n = co_await conn.read_some(whole)) {
          total += n;
          if (total > 1024 * 1024) break;  // enough: let the close do the rest
        }
      } catch (const std::system_error&) {
      }
    };
    co_await move_on_after(s.opts.linger_timeout, drain_input());
  }
};

task<void> server::impl::serve(tcp_stream plain) {
  connection_count counted(*this);
  std::optional<tls_stream> tls;
  tcp_stream* sock = &plain;
  if (opts.tls.native_handle()) {
    tls.emplace(std::move(plain), opts.tls);
    sock = &tls->next_layer();
    bool shook = false;
    try {
      shook = (co_await move_on_after(opts.header_timeout, tls->handshake())).has_value();
    } catch (const std::exception&) {  // not TLS, an unknown CA, a reset: this client only
    }
    if (!shook) {
      co_await tls->close();  // broken: just closes
      co_return;
    }
  }
  tcp_stream& conn = *sock;
  connection c(*this, conn, tls ? &*tls : nullptr);
  try {
    for (bool keep = true; keep;) {
      if (c.beg == c.end && !co_await c.wait_for_first_byte()) break;
      connection::body_charge held{*this};
      int status = 0;
      const connection::read_result r = co_await c.read_request(held, status);
      if (r == connection::read_result::peer_closed) break;
      if (r == connection::read_result::blank_lines) continue;
      if (r == connection::read_result::rejected) {
        co_await c.reject(status);
        break;
      }
      keep = co_await c.answer();
    }
  } catch (const std::exception&) {
    // A reset, a broken pipe, or no memory for a huge response: this connection is over; the
    // others are not affected.
    c.linger = false;
  }
  if (c.linger) co_await c.lingering_close();
  if (tls) co_await tls->close(opts.linger_timeout);
  co_await conn.close();
}

void server::impl::shed_log(const char* what) {
  // Once per interval: a flood must not turn into a flood of log lines.
  const time_point t = now();
  if (last_shed_log != time_point{} && t - last_shed_log < opts.shed_log_interval) return;
  last_shed_log = t;
  std::fprintf(stderr, "quell::http::server on %s: %s (refused so far: %llu connections, %llu requests)\n",
               listener.is_open() ? listener.local_address().to_string().c_str() : "?", what,
               static_cast<unsigned long long>(stats.connections_refused),
               static_cast<unsigned long long>(stats.requests_shed));
}

void server::impl::shed_without_descriptors() {
  // An idle keep-alive connection gives its descriptor back first; when there is none, the spare
  // descriptor is given up for a moment to take the waiting client off the backlog and answer it
  // 503 (it learns at once instead of timing out), as nginx and libuv users do. The listener is
  // readable, so accept4 does not block.
  pollfd waiting{listener.native_handle(), POLLIN, 0};
  if (::poll(&waiting, 1, 0) != 1 || !(waiting.revents & POLLIN)) return;  // nobody to shed for
  if (evict_oldest_idle()) {
    shed_log("out of file descriptors: the oldest idle connection was closed for a new one");
    return;
  }
  if (spare_fd < 0) return;
  ::close(spare_fd);
  spare_fd = -1;
  const int fd = ::accept4(listener.native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd >= 0) {
    static constexpr char busy[] =
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    [[maybe_unused]] auto n = ::send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    ::close(fd);
    ++stats.connections_refused;
  }
  spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  shed_log("out of file descriptors: new connections are answered 503");
}

task<void> server::impl::refuse(tcp_stream conn) {
  if (opts.tls.native_handle()) {  // a 503 would need a handshake first: shed by closing
    co_await conn.close();
    co_return;
  }
  response busy = response::text(503, "too many connections; try again later\n");
  busy.headers.push_back({"Retry-After", "1"});
  auto sent = co_await move_on_after(opts.write_timeout, conn.write_all(serialize(busy, false, false, 1)));
  // The client's request is probably unread: closing now would reset the connection under the
  // 503. Stop writing, read and drop for a moment (a short lingering close: this is shedding).
  bool ok = sent.has_value();
  try {
    if (ok) conn.shutdown(SHUT_WR);
  } catch (const std::system_error&) {
    ok = false;
  }
  if (ok) {
    auto drain_input = [&]() -> task<void> {
      char sink[4096];
      std::size_t total = 0;
      try {
        while (std::size_t n = co_await conn.read_some(sink)) {
          if ((total += n) > 64 * 1024) break;
        }
      } catch (const std::system_error&) {
      }
    };
    co_await move_on_after(std::min<duration>(opts.linger_timeout, std::chrono::milliseconds(500)), drain_input());
  }
  co_await conn.close();
}

server::server(tcp_listener listener, handler h, server_options options)
    : impl_(std::make_unique<impl>(std::move(listener), std::move(h), options)) {
  if (!impl_->handle) throw std::invalid_argument("quell::http::server: the handler is empty");
}

namespace {
tcp_listener bind_for(const address& local, const server_options& options) {
  listen_options lo;
  lo.reuse_port = options.every_core;  // the other cores bind the same port
  return tcp_listener::bind(local, lo);
}
}  // namespace

server::server(const address& local, handler h, server_options options)
    : server(bind_for(local, options), std::move(h), options) {}

server::server(server&&) noexcept = default;
server& server::operator=(server&&) noexcept = default;
server::~server() = default;

address server::local_address() const { return impl_->listener.local_address(); }

task<void> server::run() { return impl_->every ? impl_->run_every_core() : impl_->run(); }

void server::shutdown(duration grace) {
  if (auto* every = impl_->every.get()) {
    if (every->stopping.exchange(true, std::memory_order_acq_rel)) return;  // the first call's grace holds
    every->grace.store(grace.count(), std::memory_order_release);
    every->stop.set();
    return;
  }
  impl_->shutdown(grace);
}

bool server::shutting_down() const noexcept {
  return impl_->every ? impl_->every->stopping.load(std::memory_order_acquire) : impl_->draining;
}

namespace {
void add_stats(server_stats& to, const server_stats& s) noexcept {
  to.connections_accepted += s.connections_accepted;
  to.connections_open += s.connections_open;
  to.requests_handled += s.requests_handled;
  to.requests_in_flight += s.requests_in_flight;
  to.requests_rejected += s.requests_rejected;
  to.handler_errors += s.handler_errors;
  to.cancelled_by_disconnect += s.cancelled_by_disconnect;
  to.connections_refused += s.connections_refused;
  to.requests_shed += s.requests_shed;
}
}  // namespace

task<server_stats> server::total_stats() {
  impl& h = *impl_;
  server_stats sum = h.stats;
  if (!h.every) co_return sum;
  auto& every = *h.every;
  for (unsigned i = 0; i < every.cores.size(); ++i) {
    if (i == every.home) continue;
    if (!every.active) {
      add_stats(sum, every.cores[i].last);  // the cores have ended: their join ordered this read
      continue;
    }
    // Each core's figures are read on that core, where they change.
    auto read = [&every, i]() -> task<server_stats> {
      const auto& slot = every.cores[i];
      co_return slot.server ? slot.server->stats : slot.last;
    };
    add_stats(sum, co_await on(i, read));
  }
  co_return sum;
}

const server_stats& server::stats() const noexcept { return impl_->stats; }

}  // namespace quell::http
