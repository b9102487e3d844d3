// quell::http: an HTTP/1.1 server (and a small client) on quell's sockets, in which a client that
// goes away cancels the handler working for it. CMake target quell::http (library quell_http).
// Its parser is strict per RFC 9112 where a lenient one would let two readers disagree on where
// a message ends (request smuggling): see FRAMING below.
//
//   quell::http::server srv{quell::address::parse("127.0.0.1", 8080),
//                           [](quell::http::request& req) -> quell::task<quell::http::response> {
//                             co_return quell::http::response::text(200, "hello\n");
//                           }};
//   co_await srv.run();                      // until srv.shutdown(grace), or until run() is cancelled
//
// CONNECTIONS. Each accepted connection is served by one task in the server's scope; requests on
// it are handled one at a time, in order (pipelined requests wait in the connection's buffer).
// Keep-alive follows HTTP/1.1 (HTTP/1.0: only with "Connection: keep-alive"); request bodies may
// be sized by Content-Length or chunked (trailers are dropped); the whole body is read before the
// handler runs. Responses carry Content-Length (HEAD: the length, no body; 204 and 304: neither);
// a handler's response with a 1xx status is a handler error (500). Empty lines between requests
// are skipped. An upgrade request is answered as a plain request, then the connection is closed.
// CONNECT is refused (501): no tunnels. A handler's header whose name is not a token or whose value
// holds a control byte is dropped from the response.
//
// LIMITS (server_options), answered and then the connection closed, the handler never called:
//   - a request line + headers larger than max_header_bytes: 431;
//   - a body larger than max_body_bytes (declared, or counted while reading a chunked body): 413;
//     a declared one is refused before any of it is read ("Expect: 100-continue" gets 413 too);
//   - the request line and headers not complete within header_timeout of their first byte (a
//     client sending one byte per second), or the body not complete within body_timeout of the
//     headers: 408;
//   - anything FRAMING rejects: 400 (a transfer coding other than chunked: 501); an HTTP major
//     version other than 1: 505. An HTTP/0.9 request line ("GET /") is refused as soon as it ends.
//   - A keep-alive connection with no request for idle_timeout is closed without a response.
//   - Writing a response that the client does not read for write_timeout: the connection is
//     closed.
//   - More than max_connections open: the connection idle the longest is closed to make room;
//     if none is idle, the new one is answered 503 (Retry-After: 1) and closed.
//   - Out of file descriptors (EMFILE/ENFILE): an idle connection is closed and one waiting client
//     is accepted on a descriptor kept in reserve and answered 503, so new clients learn at once
//     instead of timing out in the backlog. Shedding is logged once per shed_log_interval.
//   - The bodies of all requests read and not finished over max_buffered_body_bytes: 503.
//   - Before closing a connection after a response, the server stops writing and discards what
//     the client still sends for up to linger_timeout (nginx's lingering close), so that the
//     client reads the response rather than a reset.
//
// FRAMING (server and client alike; the client throws protocol_error where the server answers
// 400). Rejected: a bare LF or bare CR as a line ending, a NUL or other control byte in a line;
// a request line other than `method SP target SP HTTP/d.d` (double spaces, tabs, a space after the
// version, a non-ASCII target, a target in a form its method does not allow); a header name with
// a non-token byte (whitespace before the colon included); a line folded onto the previous one
// (obs-fold); an HTTP/1.1 request without exactly one valid Host; Transfer-Encoding together with
// Content-Length, in HTTP/1.0, or other than exactly "chunked"; a Content-Length that is not one
// number (equal repeats are one); a chunk size that is not hex, or chunk data not followed by CRLF.
// Each rule and the smuggling attack it stops is a test in tests/http/test_http_strict.cpp.
//
// THE HANDLER AND ITS CLIENT (who cancels whom). While a handler runs, its connection is watched
// (an io_uring poll for POLLRDHUP, which consumes nothing, so a pipelined request stays in the
// socket). When the peer closes or resets the connection, the handler is cancelled, gracefully,
// with reason peer_disconnected, and unwinds through the normal machinery: its on_cancel hooks,
// defer cleanups and shields run, and the permits it holds are released when those finish. Then
// the connection is closed; no response is written.
//   - A client that half-closes (shutdown(SHUT_WR)) after sending its request counts as gone, as
//     in Go's net/http: HTTP/1.1 gives a client no way to say "no more requests, but answer this".
//   - The handler completed anyway while being cancelled (completion wins): its response is
//     written (into the void, usually), and the connection is closed.
//   - A handler that throws gets a 500 (the exception's text is not sent to the client); the
//     connection stays usable.
//   - A handler that ends cancelled for another reason (the server's shutdown, run() cancelled,
//     a cancellation that started inside it, e.g. at a token) gets no response; the connection is
//     closed.
//
// SHUTDOWN. shutdown(grace) (on the executor's thread) stops accepting and closes the listener
// (run() closes it too whenever it ends),
// closes idle keep-alive connections at once, and lets in-flight requests finish for up to
// `grace` (on the executor's clock); their responses carry "Connection: close". Once `grace` has
// passed, the requests still running are cancelled (graceful, reason shutdown) and awaited, so
// every handler's cleanup has finished when run() returns. Cancelling run() itself is the same
// without the grace period: every handler is cancelled at once with run()'s reason, and run()
// ends (cancelled) after all of them have finished.
//
// CLIENT. client is one HTTP/1.1 connection: request() writes a request and reads the response
// (Content-Length, chunked, or until close; 1xx, 204 and 304 have no body). A request() that is
// cancelled or fails leaves the connection unusable (the response would still arrive on it): it
// is closed (in the background) as request() ends, and that is exactly how the server on the
// other side learns that its client went away. Later request()s throw std::logic_error. Bad
// responses throw http::protocol_error; a method, target or header that would break the request's
// framing (a line break, a space in the target, a header name that is not a token, a control byte
// in a value) is a std::invalid_argument. Bytes the server sent after a final response are never
// taken for the next response: the connection is given up (usable() false) once it is returned.
//
// EVERY CORE. With server_options::every_core, run() called in a task of a quell::runtime serves
// on each of its cores: the core run() was called on accepts on the server's own listener, every
// other core on a listener of its own bound to the same address with SO_REUSEPORT (the kernel
// spreads new connections over them; a connection stays on the core that accepted it, and its
// handler runs there). The server's address constructor then binds with reuse_port; a server
// given a listener needs one bound with listen_options::reuse_port. Each core calls its own copy
// of the handler, so a handler's captured state is per core unless it points at something shared
// (a shared_semaphore, atomics). shutdown(grace), from any thread, reaches every core through a
// message: each core, once the message has run there (not before shutdown() returns, unlike the
// single-core server, whose draining starts at once), stops accepting and gives its requests
// the grace, counted from then, then cancels the rest; run() returns when every core's server has
// finished (their handlers' cleanup included). Binding with SO_REUSEPORT has a cost to know: a
// second process of the same user bound to the port with it too gets a share of the connections
// instead of failing to bind. Cancelling run()
// cancels every core's server with its reason. A core that cannot bind (the port taken by a
// listener without reuse_port) fails run() with that error, after the other cores have stopped.
// Outside a runtime, every_core serves on the one executor, as without it.
//
// All of it (but every_core's shutdown) runs on one executor's thread. The server must outlive
// run(); the request passed to the handler lives until the handler's task has finished.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "quell/clock.hpp"
#include "quell/net.hpp"
#include "quell/task.hpp"
#include "quell/tls.hpp"

namespace quell::http {

struct header {
  std::string name;
  std::string value;
};

// Header lookup is case-insensitive; the first header of that name wins.
std::optional<std::string_view> find_header(const std::vector<header>& headers, std::string_view name) noexcept;
// The canonical reason phrase of a status code ("Not Found"); "Unknown" for codes it lacks.
std::string_view reason_phrase(int status) noexcept;

class request {
 public:
  std::string method;  // "GET"
  std::string target;  // "/report?seconds=2", as sent
  int version_major = 1;
  int version_minor = 1;
  std::vector<http::header> headers;
  std::string body;
  address peer;

  std::optional<std::string_view> header(std::string_view name) const noexcept { return find_header(headers, name); }
  // The target without its query string: "/report".
  std::string_view path() const noexcept;
  // The raw query string, without '?': "seconds=2&x=1" (empty if none).
  std::string_view query() const noexcept;
  // A query parameter, percent-decoded ('+' is a space); nullopt if absent.
  std::optional<std::string> query_param(std::string_view name) const;
};

class response {
 public:
  int status = 200;
  std::vector<http::header> headers;  // Content-Length and Connection are the server's to set
  std::string body;

  static response text(int status, std::string body);  // text/plain; charset=utf-8
  static response json(int status, std::string body);  // application/json
};

// The response a client received.
struct client_response {
  int status = 0;
  std::vector<http::header> headers;
  std::string body;
  bool keep_alive = true;  // false: the server will close the connection after it

  std::optional<std::string_view> header(std::string_view name) const noexcept { return find_header(headers, name); }
};

// Malformed HTTP received by the client (the server answers malformed requests with a 4xx).
class protocol_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct server_options {
  // Request line + headers (and a chunked body's trailers), every byte counted.
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_body_bytes = 1024 * 1024;
  duration header_timeout = std::chrono::seconds(10);
  duration body_timeout = std::chrono::seconds(30);
  duration idle_timeout = std::chrono::seconds(60);
  duration write_timeout = std::chrono::seconds(30);
  // After a response that closes the connection: how long to read and discard what the client
  // still sends, so that closing does not reset the connection under the unread response.
  duration linger_timeout = std::chrono::seconds(2);
  // Connections open at once. A new one beyond it closes the connection idle the longest, or,
  // when every connection is busy with a request, is answered 503 (Retry-After) and closed.
  std::size_t max_connections = 10000;
  // The bodies of every request read and not yet finished, together (a request's body is kept
  // until its handler ends). A request that would exceed it is answered 503 and its connection
  // closed, before its handler is called.
  std::size_t max_buffered_body_bytes = 64 * 1024 * 1024;
  // Shedding (max_connections, the body budget, no descriptors left) is logged to stderr at most
  // once per interval.
  duration shed_log_interval = std::chrono::seconds(10);
  // Serve on every core of the runtime run() is called in (see EVERY CORE above). The limits
  // above then hold per core.
  bool every_core = false;
  // HTTPS: a server tls_context (quell/tls.hpp) makes every connection TLS. The handshake must
  // finish within header_timeout; a failed one closes the connection (nothing is answered). A
  // connection that closes sends close_notify and waits for the client's at most linger_timeout.
  // Empty (the default): plain HTTP.
  tls_context tls;
};

struct server_stats {
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_open = 0;
  std::uint64_t requests_handled = 0;         // handlers called
  std::uint64_t requests_in_flight = 0;       // handlers running now
  std::uint64_t requests_rejected = 0;        // answered 4xx/5xx by the server itself, handler not called
  std::uint64_t handler_errors = 0;           // handlers that threw (answered 500)
  std::uint64_t cancelled_by_disconnect = 0;  // handlers cancelled because their client went away
  std::uint64_t connections_refused = 0;      // answered 503 and closed at max_connections or out of descriptors
  std::uint64_t requests_shed = 0;            // answered 503 over max_buffered_body_bytes
};

class server {
 public:
  using handler = std::function<task<response>(request&)>;

  server(tcp_listener listener, handler h, server_options options = {});
  // Binds `local` (port 0: a free port); throws std::system_error like tcp_listener::bind.
  server(const address& local, handler h, server_options options = {});
  server(server&&) noexcept;
  server& operator=(server&&) noexcept;
  ~server();

  address local_address() const;
  // Serves until shutdown() has finished, or until cancelled (see SHUTDOWN above).
  task<void> run();
  // Starts a graceful shutdown (idempotent: the first call's grace period holds). On the
  // server's executor; with every_core, from any thread.
  void shutdown(duration grace = std::chrono::seconds(5));
  bool shutting_down() const noexcept;
  // The figures of the core run() was called on (with every_core: that core's share).
  const server_stats& stats() const noexcept;
  // Every core's figures added up, each read on its own core (a cross-core call per core while
  // run() serves); on the core run() was called on. Without every_core, the same as stats().
  task<server_stats> total_stats();

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

struct client_options {
  std::size_t max_response_bytes = 64 * 1024 * 1024;
};

class client {
 public:
  client() noexcept = default;
  explicit client(tcp_stream s, client_options options = {}) noexcept : stream_(std::move(s)), options_(options) {}

  static task<client> connect(address peer, client_options options = {});
  // Resolves `host` and connects with Happy Eyeballs (tcp_stream::connect(host, port),
  // quell/resolve.hpp); requests then say "Host: host[:port]" (the port unless it is 80).
  static task<client> connect(std::string_view host, std::uint16_t port, client_options options = {});
  // HTTPS: the same, then the TLS handshake with `tls` (a tls_context::client; the server's
  // certificate is verified against `host` unless its options turn verification off). Handshake
  // failures throw quell::tls_error ("tls handshake: certificate verify failed: ...").
  static task<client> connect(std::string_view host, std::uint16_t port, tls_context tls, client_options options = {});
  // "http://host[:port][/...]" or "https://host[:port][/...]" (ports 80 and 443 by default; the
  // path is not used: requests name their targets). https uses `tls`, or when it is empty a client
  // context with the system's CA store. std::invalid_argument for another scheme or no host.
  static task<client> connect_url(std::string_view url, client_options options = {}, tls_context tls = {});

  // One request, one response. Adds Host (if absent) and Content-Length (if there is a body).
  task<client_response> request(std::string method, std::string target, std::vector<header> headers = {},
                                std::string body = {});
  task<client_response> get(std::string target) { return request("GET", std::move(target)); }

  // False after a cancelled or failed request, or once the server said it would close.
  bool usable() const noexcept { return (tls_ ? tls_->is_open() : stream_.is_open()) && !broken_; }
  // The socket (under TLS for an HTTPS client: then read and write through tls()).
  tcp_stream& stream() noexcept { return tls_ ? tls_->next_layer() : stream_; }
  tls_stream* tls() noexcept { return tls_.get(); }
  // Closes the connection (HTTPS: close_notify both ways, at most 1 s).
  task<void> close();

 private:
  tcp_stream stream_;
  std::unique_ptr<tls_stream> tls_;
  client_options options_;
  static task<client> connect_named(std::string host, std::uint16_t port, client_options options);
  static task<client> connect_tls(std::string host, std::uint16_t port, tls_context tls, client_options options);

  std::string host_;     // the Host header's value, when connected by name
  std::string pending_;  // bytes after the previous response
  bool broken_ = false;
};

}  // namespace quell::http
