// tls_stream on OpenSSL 3 with memory BIOs (the contract: include/quell/tls.hpp).
#include "quell/tls.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "quell/deadline.hpp"
#include "quell/errors.hpp"
#include "quell/mutex.hpp"
#include "quell/shield.hpp"
#include "quell/this_task.hpp"

namespace quell {

namespace {

class tls_category_impl : public std::error_category {
 public:
  const char* name() const noexcept override { return "tls"; }
  std::string message(int reason) const override {
    const char* r = ERR_reason_error_string(ERR_PACK(ERR_LIB_SSL, 0, reason));
    return r ? r : "tls error " + std::to_string(reason);
  }
};

// The first error OpenSSL queued (the cause; later ones say where it surfaced), as a tls_error
// "what: reason[: verify detail]". The queue is cleared.
tls_error openssl_error(const std::string& what, SSL* ssl = nullptr, int ssl_error = SSL_ERROR_SSL) {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  int reason = e ? ERR_GET_REASON(e) : 0;
  std::string text = what + ": ";
  if (e && ERR_SYSTEM_ERROR(e)) {  // a file that cannot be opened: errno
    text += std::strerror(ERR_GET_REASON(e));
  } else if (e) {
    const char* r = ERR_reason_error_string(e);
    text += r ? r : "error " + std::to_string(reason);
  } else if (ssl_error == SSL_ERROR_SYSCALL) {
    text += "unexpected eof while reading";
    reason = SSL_R_UNEXPECTED_EOF_WHILE_READING;
  } else {
    text += "error " + std::to_string(ssl_error);
  }
  long verify = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
  if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED && verify != X509_V_OK) {
    text += ": ";
    text += X509_verify_cert_error_string(verify);
  } else {
    verify = X509_V_OK;
  }
  return tls_error(reason, std::move(text), verify);
}

bool numeric_host(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 || ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// ALPN wire format: each name prefixed by its length.
std::string alpn_wire(const std::vector<std::string>& names) {
  std::string w;
  for (const auto& n : names) {
    if (n.empty() || n.size() > 255) throw std::invalid_argument("quell::tls_context: bad ALPN protocol name");
    w += static_cast<char>(n.size());
    w += n;
  }
  return w;
}

constexpr std::size_t record_plaintext = 16384;  // TLS's largest record

}  // namespace

const std::error_category& tls_category() noexcept {
  static const tls_category_impl c;
  return c;
}

tls_error::tls_error(int reason, std::string message, long verify_result)
    : std::system_error(std::error_code(reason, tls_category()), message),
      message_(std::move(message)),
      verify_(verify_result) {}

// ---- tls_context ----

struct tls_context::state {
  SSL_CTX* ctx = nullptr;
  role side = role::client;
  tls_options opts;
  std::string alpn;  // wire format
  ~state() { SSL_CTX_free(ctx); }
};

namespace {

int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned inlen,
                void* arg) {
  auto* st = static_cast<const tls_context::state*>(arg);
  unsigned char* chosen = nullptr;
  if (SSL_select_next_proto(&chosen, outlen, reinterpret_cast<const unsigned char*>(st->alpn.data()),
                            static_cast<unsigned>(st->alpn.size()), in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;  // no protocol in common: RFC 7301 says refuse
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

std::shared_ptr<tls_context::state> make_context(tls_context::role side, const tls_options& o) {
  auto st = std::make_shared<tls_context::state>();
  st->side = side;
  st->opts = o;
  st->alpn = alpn_wire(o.alpn);
  ERR_clear_error();
  st->ctx = SSL_CTX_new(side == tls_context::role::client ? TLS_client_method() : TLS_server_method());
  if (!st->ctx) throw openssl_error("tls context");
  SSL_CTX_set_min_proto_version(st->ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(st->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  if (!o.cert_chain_file.empty() && SSL_CTX_use_certificate_chain_file(st->ctx, o.cert_chain_file.c_str()) != 1)
    throw openssl_error("tls certificate chain " + o.cert_chain_file);
  if (!o.private_key_file.empty() &&
      SSL_CTX_use_PrivateKey_file(st->ctx, o.private_key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    throw openssl_error("tls private key " + o.private_key_file);
  if (!o.cert_chain_file.empty() && !o.private_key_file.empty() && SSL_CTX_check_private_key(st->ctx) != 1)
    throw openssl_error("tls private key " + o.private_key_file);
  if (side == tls_context::role::server && (o.cert_chain_file.empty() || o.private_key_file.empty()))
    throw std::invalid_argument("quell::tls_context::server needs cert_chain_file and private_key_file");
  if (o.verify_peer) {
    if (!o.ca_file.empty()) {
      if (SSL_CTX_load_verify_locations(st->ctx, o.ca_file.c_str(), nullptr) != 1)
        throw openssl_error("tls CA file " + o.ca_file);
    } else if (SSL_CTX_set_default_verify_paths(st->ctx) != 1) {
      throw openssl_error("tls default CA store");
    }
    SSL_CTX_set_verify(
        st->ctx,
        side == tls_context::role::client ? SSL_VERIFY_PEER : SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
        nullptr);
  } else {
    SSL_CTX_set_verify(st->ctx, SSL_VERIFY_NONE, nullptr);
  }
  if (!st->alpn.empty()) {
    if (side == tls_context::role::client) {
      if (SSL_CTX_set_alpn_protos(st->ctx, reinterpret_cast<const unsigned char*>(st->alpn.data()),
                                  static_cast<unsigned>(st->alpn.size())) != 0)
        throw openssl_error("tls ALPN");
    } else {
      SSL_CTX_set_alpn_select_cb(st->ctx, select_alpn, st.get());
    }
  }
  return st;
}

}  // namespace

tls_context tls_context::client(const tls_options& options) {
  tls_context c;
  c.s_ = make_context(role::client, options);
  return c;
}

tls_context tls_context::server(const tls_options& options) {
  tls_context c;
  c.s_ = make_context(role::server, options);
  return c;
}

tls_context::role tls_context::side() const noexcept { return s_ ? s_->side : role::client; }
const tls_options& tls_context::options() const {
  if (!s_) throw std::logic_error("quell::tls_context: empty");
  return s_->opts;
}
void* tls_context::native_handle() const noexcept { return s_ ? s_->ctx : nullptr; }

// ---- tls_stream ----

namespace detail {

struct tls_state {
  enum class phase : unsigned char { fresh, handshaking, open, broken, closed };

  tcp_stream tcp;
  std::shared_ptr<const tls_context::state> ctx;
  SSL* ssl = nullptr;
  BIO* rbio = nullptr;  // ciphertext from the peer (owned by ssl)
  BIO* wbio = nullptr;  // ciphertext for the peer (owned by ssl)
  phase at = phase::fresh;
  bool send_dead = false;    // a record was cut short, or the socket failed while sending
  bool close_sent = false;   // our close_notify is queued or gone
  bool peer_closed = false;  // the peer's close_notify was read
  bool tcp_eof = false;      // the socket ended (the input BIO now reports EOF)
  bool reading = false;
  bool writing = false;
  std::string plain;  // decrypted, not read yet: [head, size)
  std::size_t head = 0;
  std::string out;  // ciphertext being sent (kept in the state: a cut send's buffer stays valid)
  std::unique_ptr<char[]> in = std::make_unique<char[]>(record_plaintext + 2048);
  mutex wlock;  // one sender of ciphertext at a time (a write, or a read that must answer)

  ~tls_state() { SSL_free(ssl); }

  std::size_t available() const noexcept { return plain.size() - head; }
  void take(char* to, std::size_t n) noexcept {
    std::memcpy(to, plain.data() + head, n);
    head += n;
    if (head == plain.size()) {
      plain.clear();
      head = 0;
    }
  }
  bool output_pending() const noexcept { return BIO_ctrl_pending(wbio) > 0; }
};

namespace {

// Marks a flag for the duration of an operation (one reader, one writer at a time).
struct busy_flag {
  bool* f;
  busy_flag(bool& flag, const char* what) : f(&flag) {
    if (flag) throw std::logic_error(std::string("quell::tls_stream: two ") + what + " at once");
    flag = true;
  }
  busy_flag(const busy_flag&) = delete;
  ~busy_flag() { *f = false; }
};

tls_state* need(tls_state* s, const char* what) {
  if (!s || s->at == tls_state::phase::closed || s->at == tls_state::phase::fresh)
    throw std::system_error(EBADF, std::generic_category(), std::string("tls ") + what);
  return s;
}

tls_state* need_open(tls_state* s, const char* what) {
  need(s, what);
  if (s->at != tls_state::phase::open)
    throw std::system_error(EBADF, std::generic_category(), std::string("tls ") + what + " (stream is broken)");
  return s;
}

// Sends everything OpenSSL queued for the peer; the caller holds wlock. Once taken out of the
// BIO, ciphertext must go out whole (see WRITES in tls.hpp): a graceful cancel is held back for at
// most record_tail_bound; if the send is cut anyway (forced, the bound, an error), send_dead
// stays set and the sending side is over.
task<> send_pending(tls_state* s) {
  while (s->output_pending()) {
    if (s->send_dead) throw std::system_error(EPIPE, std::generic_category(), "tls write (a record was cut short)");
    const auto n = BIO_ctrl_pending(s->wbio);
    s->out.resize(n);
    BIO_read(s->wbio, s->out.data(), static_cast<int>(n));
    s->send_dead = true;  // until this ciphertext is out whole
    co_await shield(s->tcp.write_all(s->out), s->ctx->opts.record_tail_bound);
    s->send_dead = false;
  }
}

task<> flush(tls_state* s) {
  auto g = co_await s->wlock.lock();
  co_await send_pending(s);
}

// A fatal error: OpenSSL queued an alert for the peer; send it if nobody else is sending (a
// failed handshake then tells the peer why), then throw.
task<> fail(tls_state* s, tls_error err) {
  s->at = tls_state::phase::broken;
  if (s->output_pending() && !s->send_dead) {
    if (auto g = s->wlock.try_lock()) {
      try {
        co_await send_pending(s);
      } catch (const std::exception&) {  // the peer may be gone already: the TLS error is the news
      }
    }
  }
  throw err;
}

// More ciphertext from the socket into the input BIO; no suspension between the two, so a
// cancelled read leaves the bytes in the tcp_stream.
task<> feed(tls_state* s) {
  if (s->tcp_eof) co_return;
  std::size_t n = co_await s->tcp.read_some(std::span<char>(s->in.get(), record_plaintext + 2048));
  if (n == 0) {
    s->tcp_eof = true;
    BIO_set_mem_eof_return(s->rbio, 0);  // OpenSSL now sees the end of the stream
  } else {
    BIO_write(s->rbio, s->in.get(), static_cast<int>(n));
  }
}

// Decrypts at least one more byte into `plain`; false once the peer sent close_notify.
task<bool> decrypt_more(tls_state* s) {
  for (;;) {
    if (s->peer_closed) co_return false;
    ERR_clear_error();
    std::size_t got = 0;
    const int r = SSL_read_ex(s->ssl, s->in.get(), record_plaintext, &got);
    const int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(s->ssl, r);
    if (r == 1) {
      if (s->head == s->plain.size()) {
        s->plain.clear();
        s->head = 0;
      }
      s->plain.append(s->in.get(), got);
    }
    if (e == SSL_ERROR_ZERO_RETURN) s->peer_closed = true;
    if (e == SSL_ERROR_SSL || e == SSL_ERROR_SYSCALL) co_await fail(s, openssl_error("tls read", s->ssl, e));
    // Something to answer (a KeyUpdate, an alert): what was decrypted is already in `plain`.
    if (s->output_pending()) co_await flush(s);
    if (r == 1) co_return true;
    if (e == SSL_ERROR_ZERO_RETURN) co_return false;
    if (e != SSL_ERROR_WANT_READ) co_await fail(s, openssl_error("tls read", s->ssl, e));
    if (s->tcp_eof)
      co_await fail(s, tls_error(SSL_R_UNEXPECTED_EOF_WHILE_READING, "tls read: unexpected eof while reading"));
    co_await feed(s);
  }
}

}  // namespace

task<std::size_t> tls_read_some(tls_state* s, std::span<char> buf) {
  need(s, "read");
  busy_flag b(s->reading, "reads");
  if (s->available() == 0) {
    if (s->at != tls_state::phase::open && !s->peer_closed) need_open(s, "read");
    if (buf.empty()) co_return 0;
    if (!co_await decrypt_more(s)) co_return 0;
  }
  const std::size_t n = std::min(buf.size(), s->available());
  s->take(buf.data(), n);
  co_return n;
}

task<void> tls_read_exact(tls_state* s, std::span<char> buf) {
  need(s, "read");
  busy_flag b(s->reading, "reads");
  while (s->available() < buf.size()) {
    if (s->at != tls_state::phase::open && !s->peer_closed) need_open(s, "read");
    if (!co_await decrypt_more(s)) throw end_of_stream("tls read: the peer closed the stream");
  }
  if (!buf.empty()) s->take(buf.data(), buf.size());
}

void tls_give_back(tls_state* s, std::span<const char> bytes) noexcept {
  if (bytes.empty()) return;
  if (s->head >= bytes.size()) {
    s->head -= bytes.size();
    std::memcpy(s->plain.data() + s->head, bytes.data(), bytes.size());
  } else {
    s->plain.insert(s->head, bytes.data(), bytes.size());  // (an allocation failure here would terminate)
  }
}

}  // namespace detail

using detail::tls_state;

tls_stream::tls_stream() noexcept = default;
tls_stream::tls_stream(tls_stream&&) noexcept = default;
tls_stream& tls_stream::operator=(tls_stream&&) noexcept = default;
tls_stream::~tls_stream() = default;

tls_stream::tls_stream(tcp_stream tcp, const tls_context& ctx, std::string_view host) {
  if (!ctx.s_) throw std::invalid_argument("quell::tls_stream: empty tls_context");
  if (!tcp.is_open()) throw std::system_error(EBADF, std::generic_category(), "tls_stream: the tcp_stream is closed");
  const bool client = ctx.s_->side == tls_context::role::client;
  if (client && ctx.s_->opts.verify_peer && host.empty())
    throw std::invalid_argument("quell::tls_stream: a client that verifies its peer needs the host name");
  auto s = std::make_unique<tls_state>();
  s->ctx = ctx.s_;
  ERR_clear_error();
  s->ssl = SSL_new(ctx.s_->ctx);
  if (!s->ssl) throw openssl_error("tls_stream");
  s->rbio = BIO_new(BIO_s_mem());
  s->wbio = BIO_new(BIO_s_mem());
  if (!s->rbio || !s->wbio) {
    BIO_free(s->rbio);
    BIO_free(s->wbio);
    throw openssl_error("tls_stream");
  }
  BIO_set_mem_eof_return(s->rbio, -1);  // empty means "wait for more", not the end
  SSL_set_bio(s->ssl, s->rbio, s->wbio);
  if (client) {
    SSL_set_connect_state(s->ssl);
    const std::string h(host);
    if (!h.empty() && !numeric_host(h) && SSL_set_tlsext_host_name(s->ssl, h.c_str()) != 1)
      throw openssl_error("tls_stream: host name " + h);
    if (ctx.s_->opts.verify_peer) {
      X509_VERIFY_PARAM* p = SSL_get0_param(s->ssl);
      X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      const int ok = numeric_host(h) ? X509_VERIFY_PARAM_set1_ip_asc(p, h.c_str())
                                     : X509_VERIFY_PARAM_set1_host(p, h.c_str(), h.size());
      if (ok != 1) throw openssl_error("tls_stream: host name " + h);
    }
  } else {
    SSL_set_accept_state(s->ssl);
  }
  // Records are written whole, one write each: Nagle's algorithm would only hold the last small
  // one back until the peer's delayed ACK (40 ms). (A Unix socket refuses the option: harmless.)
  int one = 1;
  ::setsockopt(tcp.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  s->tcp = std::move(tcp);
  s_ = std::move(s);
}

task<> tls_stream::handshake() {
  tls_state* s = s_.get();
  if (!s || s->at != tls_state::phase::fresh)
    throw std::logic_error("quell::tls_stream::handshake: not a fresh stream");
  s->at = tls_state::phase::handshaking;
  // Cancelled or failed anywhere, the stream is broken: only close() or destruction remain.
  struct unless_done {
    tls_state* s;
    ~unless_done() {
      if (s->at == tls_state::phase::handshaking) s->at = tls_state::phase::broken;
    }
  } guard{s};
  for (;;) {
    ERR_clear_error();
    const int r = SSL_do_handshake(s->ssl);
    if (r == 1) {
      if (s->output_pending()) co_await detail::flush(s);
      s->at = tls_state::phase::open;
      co_return;
    }
    const int e = SSL_get_error(s->ssl, r);
    if (e != SSL_ERROR_WANT_READ) co_await detail::fail(s, openssl_error("tls handshake", s->ssl, e));
    if (s->output_pending()) co_await detail::flush(s);
    if (s->tcp_eof)
      co_await detail::fail(
          s, tls_error(SSL_R_UNEXPECTED_EOF_WHILE_READING, "tls handshake: the peer closed the connection"));
    co_await detail::feed(s);
  }
}

task<tls_stream> tls_stream::connect(tcp_stream tcp, tls_context ctx, std::string host) {
  tls_stream t(std::move(tcp), ctx, host);
  co_await t.handshake();
  co_return t;
}

task<tls_stream> tls_stream::accept(tcp_stream tcp, tls_context ctx) {
  tls_stream t(std::move(tcp), ctx);
  co_await t.handshake();
  co_return t;
}

task<> tls_stream::write_all(std::string_view data, std::size_t* written) {
  tls_state* s = detail::need_open(s_.get(), "write");
  if (written) *written = 0;
  if (s->send_dead || s->close_sent)
    throw std::system_error(EPIPE, std::generic_category(), "tls write (the sending side is closed)");
  detail::busy_flag b(s->writing, "writes");
  auto g = co_await s->wlock.lock();
  std::size_t off = 0;
  while (off < data.size()) {
    co_await this_task::checkpoint();  // a cancel between records ends the write here
    if (s->at != tls_state::phase::open)
      throw std::system_error(EBADF, std::generic_category(), "tls write (stream is broken)");
    const std::size_t n = std::min(record_plaintext, data.size() - off);
    ERR_clear_error();
    std::size_t put = 0;
    if (SSL_write_ex(s->ssl, data.data() + off, n, &put) != 1 || put != n) {
      s->at = tls_state::phase::broken;
      throw openssl_error("tls write", s->ssl);
    }
    co_await detail::send_pending(s);
    off += n;
    if (written) *written = off;
  }
}

namespace {

// Waits for the peer's close_notify, discarding application data before it; errors end the wait.
task<> await_close_notify(tls_state* s) {
  try {
    while (co_await detail::decrypt_more(s)) {
      s->plain.clear();
      s->head = 0;
    }
  } catch (const std::exception&) {  // a peer that resets or just closes: nothing more to wait for
  }
}

task<> send_close_notify(tls_state* s) {
  try {
    co_await detail::flush(s);
  } catch (const std::exception&) {
  }
}

}  // namespace

task<> tls_stream::close(duration bound) {
  tls_state* s = s_.get();
  if (!s || s->at == tls_state::phase::closed) co_return;
  // Any cancel ends close() at once: the socket is closed (in the background) without waiting.
  struct close_anyway {
    tls_state* s;
    bool done = false;
    ~close_anyway() {
      if (!done) s->tcp = tcp_stream();
      s->at = tls_state::phase::closed;
    }
  } guard{s};
  if (s->at == tls_state::phase::open && !s->send_dead && !s->close_sent) {
    s->close_sent = true;
    ERR_clear_error();
    SSL_shutdown(s->ssl);  // queues close_notify
    auto both = [s]() -> task<> {
      co_await send_close_notify(s);
      if (!s->peer_closed && !s->reading) co_await await_close_notify(s);
    };
    (void)co_await move_on_after(bound, both());
  }
  ERR_clear_error();
  guard.done = true;
  s->at = tls_state::phase::closed;
  co_await s->tcp.close();
}

bool tls_stream::is_open() const noexcept { return s_ && s_->at == tls_state::phase::open; }
std::size_t tls_stream::buffered() const noexcept { return s_ ? s_->available() : 0; }

std::string tls_stream::alpn_protocol() const {
  if (!s_) return {};
  const unsigned char* p = nullptr;
  unsigned len = 0;
  SSL_get0_alpn_selected(s_->ssl, &p, &len);
  return p ? std::string(reinterpret_cast<const char*>(p), len) : std::string();
}

std::string tls_stream::protocol_version() const { return s_ ? SSL_get_version(s_->ssl) : ""; }
tcp_stream& tls_stream::next_layer() noexcept {
  static thread_local tcp_stream none;
  return s_ ? s_->tcp : none;
}
void* tls_stream::native_handle() const noexcept { return s_ ? s_->ssl : nullptr; }

}  // namespace quell
