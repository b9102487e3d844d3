// TLS 1.2/1.3 over a tcp_stream: tls_context, tls_stream (OpenSSL 3, memory BIOs).
//
//   auto ctx = quell::tls_context::client();                       // system CA store, verification on
//   quell::tcp_stream tcp = co_await quell::tcp_stream::connect("example.org", 443);
//   quell::tls_stream tls = co_await quell::tls_stream::connect(std::move(tcp), ctx, "example.org");
//   co_await tls.write_all("GET / HTTP/1.1\r\nHost: example.org\r\n\r\n");
//   char buf[4096];
//   std::size_t n = co_await tls.read_some(buf);                   // 0: the peer sent close_notify
//   co_await tls.close();                                          // close_notify both ways, bounded
//
// HOW IT RUNS. OpenSSL never touches the socket: it reads ciphertext from one memory BIO and
// writes ciphertext to another. quell moves the bytes: ciphertext comes in through the stream's own
// read_some (with its receive-ahead: what a cancelled read got stays in the stream) and goes out
// through its write_all. No thread, no second event loop; every wait is a tcp_stream wait, so
// every operation here is cancellable wherever the stream's are.
//
// STATES. A tls_stream is made from a connected tcp_stream (it owns it from then on) and is
//   handshaking -> open -> closed,
// plus two dead ends: broken (a handshake that failed or was cancelled, a fatal TLS error, a
// record cut short: see WRITES) and, for the sending side only, sent-close (after close()
// started). Operations on a stream that is not open throw std::system_error (EBADF for a closed
// or never-handshaken stream, EPIPE once the sending side is gone). One read and one write may
// run at the same time (a reader task and a writer task); two reads, or two writes, at once are
// not allowed (std::logic_error).
//
// WHO RESUMES WHOM. Each operation is a quell task on the executor that runs it. It suspends only
// in the tcp_stream's leaves (a read, a write, close) and in the stream's own write lock (a
// quell::mutex: a read that must send something, e.g. the answer to a TLS 1.3 KeyUpdate, or an
// alert, waits for a running write to finish its record). Those leaves resume it; a cancel reaches
// them through the task, like any quell task.
//
// HANDSHAKE. connect()/accept() (or handshake() on a constructed stream) run the handshake to its
// end. Cancelled anywhere, the handshake ends cancelled and the stream is broken: destroy it or
// close() it (which then just closes the socket). A peer that never answers is bounded by the
// caller's deadline: `co_await quell::timeout(5s, tls_stream::connect(...))`. Nothing leaks: the
// socket is closed when the stream goes. Failures throw tls_error with OpenSSL's reason:
// "tls handshake: certificate verify failed: self-signed certificate", "... hostname mismatch",
// "... certificate has expired", "... wrong version number" (the peer does not speak TLS).
//
// READS. read_some(buf) returns decrypted bytes (at least one), or 0 once the peer sent
// close_notify; read_exact(buf) fills buf or throws end_of_stream. The cancel-safety is the
// stream's: "cancelled" means "nothing was read".
//   - Cancelled while waiting for ciphertext: the ciphertext that arrived meanwhile stays in the
//     tcp_stream (or in OpenSSL's input BIO), and is decrypted by the next read.
//   - Decryption and the copy into `buf` happen with no suspension in between, so a read that
//     decrypted something always returns it (completion wins).
//   - read_exact keeps what it decrypted before it was cancelled in the stream's plaintext
//     buffer (buffered()): the next read returns it first. It never consumes part of buf.
//   - A read whose result a combinator discards (a race's loser that completed anyway) gives its
//     bytes back to the front of the plaintext buffer (the leaf protocol's await_give_back).
// The peer closing the TCP connection without close_notify is an error (tls_error "unexpected
// eof while reading"): a truncation an attacker could cause looks like that.
//
// WRITES: THE RULE FOR A RECORD CUT SHORT. write_all(data, written) encrypts `data` into records
// of at most 16 KiB of plaintext and sends each. Once a record is encrypted it must go out whole:
// its sequence number is spent, and a peer that got half of it sees a broken connection. So:
//   - A cancel between records ends the write at once, cancelled; `*written` is the plaintext of
//     the records that went out, always a prefix of `data` ending on a record boundary.
//   - A graceful cancel that arrives while a record is being sent waits for that record (the
//     "shielded tail", at most tls_options::record_tail_bound, default 5 s), then ends the write
//     cancelled with `*written` counting that record too.
//   - A forced cancel, or a tail that does not go out within the bound (a peer that stopped
//     reading), cuts the record: the write ends cancelled, `*written` does not count it, and the
//     sending side is broken (later writes throw EPIPE; close() just closes).
//   - A write that finished anyway completes normally (completion wins).
//
// RENEGOTIATION is refused (SSL_OP_NO_RENEGOTIATION): a TLS 1.2 peer asking for it gets a
// no_renegotiation alert; TLS 1.3 has none (its KeyUpdate is answered).
//
// CLOSE. close(bound) sends close_notify, then waits at most `bound` (default 5 s) for the
// peer's, discarding application data that comes first, then closes the socket. A peer that
// already sent close_notify (read_some returned 0) is not waited for. A cancel of close() ends
// it cancelled and closes the socket without waiting for the peer: a forced one at once, a
// graceful one once the close_notify record it may be sending is out (the WRITES rule's tail, at
// most record_tail_bound). close() on a broken stream just closes. Destroying a tls_stream
// without close() closes its socket in the background like a tcp_stream (no close_notify).
//
// ERRORS. TLS failures are quell::tls_error (a std::system_error in tls_category(), whose code
// is OpenSSL's reason code) with a message "what: reason[: detail]"; socket failures are the
// tcp_stream's std::system_error. A failed stream is broken afterwards.
#pragma once

#include <coroutine>
#include <cstddef>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "quell/cancellation.hpp"
#include "quell/clock.hpp"
#include "quell/net.hpp"
#include "quell/task.hpp"

namespace quell {

// The category of tls_error codes (OpenSSL's reason codes, ERR_GET_REASON).
const std::error_category& tls_category() noexcept;

class tls_error : public std::system_error {
 public:
  tls_error(int reason, std::string message, long verify_result = 0);
  const char* what() const noexcept override { return message_.c_str(); }
  // X509_V_OK (0), or why the peer's certificate was refused (X509_V_ERR_*).
  long verify_result() const noexcept { return verify_; }

 private:
  std::string message_;
  long verify_;
};

struct tls_options {
  // PEM files: the certificate chain (leaf first) and its private key. A server needs both; a
  // client sends them only when the server asks for a client certificate.
  std::string cert_chain_file;
  std::string private_key_file;
  // PEM file of trusted CA certificates; empty: the system's default store.
  std::string ca_file;
  // Client: verify the server's certificate and host name (on by default; off only for tests
  // against a peer whose identity does not matter). Server: require and verify a client
  // certificate (off by default).
  bool verify_peer = true;
  // ALPN protocols in order of preference ("h2", "http/1.1"); empty: no ALPN.
  std::vector<std::string> alpn;
  // The graceful cancel of a write waits at most this long for the record it started (see WRITES).
  duration record_tail_bound = std::chrono::seconds(5);
};

// An SSL_CTX: certificates, trust, policy. Copies share it (it is immutable once made). Throws
// tls_error for a file that cannot be read or a key that does not match its certificate.
class tls_context {
 public:
  enum class role : unsigned char { client, server };

  static tls_context client(const tls_options& options = {});
  static tls_context server(const tls_options& options);

  tls_context() noexcept = default;
  role side() const noexcept;
  const tls_options& options() const;
  void* native_handle() const noexcept;  // SSL_CTX*

  struct state;

 private:
  std::shared_ptr<const state> s_;
  friend class tls_stream;
};

namespace detail {
struct tls_state;
template <class T>
struct tls_read_op;
}  // namespace detail

class tls_stream {
 public:
  tls_stream() noexcept;
  // Takes `tcp` and prepares a handshake (not started: see handshake()). A client verifies
  // `host` against the server's certificate (unless verify_peer is off) and sends it as SNI
  // (not for a numeric address); `host` is ignored by a server.
  tls_stream(tcp_stream tcp, const tls_context& ctx, std::string_view host = {});
  tls_stream(tls_stream&&) noexcept;
  tls_stream& operator=(tls_stream&&) noexcept;
  ~tls_stream();

  // The handshake of a client (with SNI and host-name check) or of a server.
  static task<tls_stream> connect(tcp_stream tcp, tls_context ctx, std::string host);
  static task<tls_stream> accept(tcp_stream tcp, tls_context ctx);
  task<> handshake();

  // Decrypted bytes: at least one, or 0 after the peer's close_notify.
  detail::tls_read_op<std::size_t> read_some(std::span<char> buf);
  // Exactly buf.size() bytes; throws end_of_stream if the peer closes first.
  detail::tls_read_op<void> read_exact(std::span<char> buf);
  // Every byte of data; `*written` (if given) as the WRITES rule above says.
  task<> write_all(std::string_view data, std::size_t* written = nullptr);
  // close_notify both ways within `bound`, then the socket is closed (see CLOSE).
  task<> close(duration bound = std::chrono::seconds(5));

  bool is_open() const noexcept;          // handshake done, not closed, not broken
  std::size_t buffered() const noexcept;  // decrypted bytes not read yet
  std::string alpn_protocol() const;      // what ALPN agreed on; empty: none
  std::string protocol_version() const;   // "TLSv1.3"
  tcp_stream& next_layer() noexcept;      // the socket (do not read or write it directly)
  void* native_handle() const noexcept;   // SSL*

 private:
  template <class T>
  friend struct detail::tls_read_op;
  std::unique_ptr<detail::tls_state> s_;
};

namespace detail {

task<std::size_t> tls_read_some(tls_state* s, std::span<char> buf);
task<void> tls_read_exact(tls_state* s, std::span<char> buf);
void tls_give_back(tls_state* s, std::span<const char> bytes) noexcept;

// read_some/read_exact as an awaiter around their task, adding await_give_back: bytes a
// combinator would discard go back to the front of the plaintext buffer.
template <class T>
struct tls_read_op {
  using inner = typename task<T>::awaiter;

  tls_read_op(tls_state* s, std::span<char> b, task<T> t) : st(s), buf(b), aw(std::move(t).operator co_await()) {}

  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) noexcept { aw.await_suspend(h); }
  bool await_early_cancel() const noexcept { return true; }
  static constexpr bool reentrant_cancel = true;
  bool await_cancel(std::coroutine_handle<> h, const cancel_request& r) noexcept { return aw.await_cancel(h, r); }
  bool await_must_resume() const noexcept { return aw.await_must_resume(); }
  task_record* child_task() noexcept { return aw.child_task(); }
  bool await_give_back() noexcept {
    try {
      if constexpr (std::is_void_v<T>) {
        aw.await_resume();
        tls_give_back(st, buf);
      } else {
        std::size_t n = aw.await_resume();
        tls_give_back(st, buf.first(n));
      }
    } catch (...) {
      error = std::current_exception();
      return false;  // await_resume rethrows it: an error is kept, never dropped
    }
    return true;
  }
  T await_resume() {
    if (error) std::rethrow_exception(error);
    return aw.await_resume();
  }

  tls_state* st;
  std::span<char> buf;
  inner aw;
  std::exception_ptr error;
};

}  // namespace detail

inline detail::tls_read_op<std::size_t> tls_stream::read_some(std::span<char> buf) {
  return {s_.get(), buf, detail::tls_read_some(s_.get(), buf)};
}
inline detail::tls_read_op<void> tls_stream::read_exact(std::span<char> buf) {
  return {s_.get(), buf, detail::tls_read_exact(s_.get(), buf)};
}

}  // namespace quell
