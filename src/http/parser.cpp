#include "parser.hpp"

#include <strings.h>

#include <new>

namespace quell::http::detail {
namespace {

const http_parser_settings settings_for_all = [] {
  http_parser_settings s;
  http_parser_settings_init(&s);
  return s;
}();

message_parser* self(http_parser* p) noexcept { return static_cast<message_parser*>(p->data); }

}  // namespace

message_parser::message_parser(kind k, std::size_t max_header_bytes, std::size_t max_body_bytes) noexcept
    : kind_(k), max_header_(max_header_bytes), max_body_(max_body_bytes) {
  reset();
}

void message_parser::reset() noexcept {
  http_parser_init(&p_, kind_ == kind::request ? HTTP_REQUEST : HTTP_RESPONSE);
  p_.data = this;
  method.clear();
  target.clear();
  body.clear();
  headers.clear();
  status = version_major = version_minor = 0;
  header_bytes_ = 0;
  in_value_ = false;
  started_ = headers_done_ = complete_ = keep_alive_ = no_body_ = false;
  error_status_ = 0;
  error_text_.clear();
}

std::size_t message_parser::feed(const char* data, std::size_t n) noexcept {
  if (complete_ || failed() || n == 0) return 0;
  static const http_parser_settings settings = [] {
    http_parser_settings s = settings_for_all;
    s.on_message_begin = &message_parser::on_message_begin;
    s.on_url = &message_parser::on_url;
    s.on_header_field = &message_parser::on_header_field;
    s.on_header_value = &message_parser::on_header_value;
    s.on_headers_complete = &message_parser::on_headers_complete;
    s.on_body = &message_parser::on_body;
    s.on_message_complete = &message_parser::on_message_complete;
    return s;
  }();
  std::size_t used = http_parser_execute(&p_, &settings, data, n);
  auto err = HTTP_PARSER_ERRNO(&p_);
  if (complete_) {
    // Paused in on_message_complete on purpose: the rest is the next message's.
    http_parser_pause(&p_, 0);
    return used;
  }
  // An upgrade request (`Connection: Upgrade`) is served as a plain one: libhttp-parser flags it
  // when its headers end, and completes it after its body as usual.
  if (err != HPE_OK && !failed()) fail(err == HPE_HEADER_OVERFLOW ? 431 : 400, http_errno_description(err));
  return used;
}

void message_parser::feed_eof() noexcept {
  if (complete_ || failed() || !started_) return;
  static const http_parser_settings settings = [] {
    http_parser_settings s = settings_for_all;
    s.on_body = &message_parser::on_body;
    s.on_message_complete = &message_parser::on_message_complete;
    return s;
  }();
  http_parser_execute(&p_, &settings, nullptr, 0);
  if (!complete_ && !failed()) fail(400, "the connection closed in the middle of a message");
}

bool message_parser::expects_continue() const noexcept {
  auto v = find_header(headers, "expect");
  return v && v->size() == 12 && strncasecmp(v->data(), "100-continue", 12) == 0;
}

int message_parser::fail(int st, const char* text) noexcept {
  if (error_status_ == 0) {
    error_status_ = st;
    try {
      error_text_ = text;
    } catch (...) {
    }
  }
  return -1;
}

bool message_parser::count_header_bytes(std::size_t n) noexcept {
  header_bytes_ += n;
  return header_bytes_ <= max_header_;
}

int message_parser::on_message_begin(http_parser* p) {
  self(p)->started_ = true;
  return 0;
}

int message_parser::on_url(http_parser* p, const char* at, std::size_t n) {
  auto* s = self(p);
  if (!s->count_header_bytes(n)) return s->fail(431, "request line and headers too large");
  try {
    s->target.append(at, n);
  } catch (const std::bad_alloc&) {
    return s->fail(431, "out of memory");
  }
  return 0;
}

int message_parser::on_header_field(http_parser* p, const char* at, std::size_t n) {
  auto* s = self(p);
  // Trailers of a chunked body are not headers: merging them would let them say what the head
  // did not (and a front proxy never filtered). They are dropped.
  if (s->headers_done_) return 0;
  // ": " and CRLF around each header count too, so the limit is on what was sent.
  if (!s->count_header_bytes(n + (s->in_value_ || s->headers.empty() ? 4 : 0)))
    return s->fail(431, "request line and headers too large");
  try {
    if (s->in_value_ || s->headers.empty()) s->headers.emplace_back();
    s->in_value_ = false;
    s->headers.back().name.append(at, n);
  } catch (const std::bad_alloc&) {
    return s->fail(431, "out of memory");
  }
  return 0;
}

int message_parser::on_header_value(http_parser* p, const char* at, std::size_t n) {
  auto* s = self(p);
  if (s->headers_done_) return 0;  // a trailer
  if (!s->count_header_bytes(n)) return s->fail(431, "request line and headers too large");
  try {
    s->in_value_ = true;
    if (s->headers.empty()) s->headers.emplace_back();
    s->headers.back().value.append(at, n);
  } catch (const std::bad_alloc&) {
    return s->fail(431, "out of memory");
  }
  return 0;
}

int message_parser::on_headers_complete(http_parser* p) {
  auto* s = self(p);
  s->headers_done_ = true;
  s->version_major = p->http_major;
  s->version_minor = p->http_minor;
  s->keep_alive_ = http_should_keep_alive(p) != 0;
  if (s->kind_ == kind::request) {
    s->method = http_method_str(static_cast<http_method>(p->method));
    if (p->http_major != 1) return s->fail(505, "only HTTP/1.x is supported");
  } else {
    s->status = static_cast<int>(p->status_code);
    // These have no body whatever their headers say (RFC 9110, 6.4.1); libhttp-parser would wait
    // for a Content-Length's worth of bytes.
    if (s->status / 100 == 1 || s->status == 204 || s->status == 304) s->no_body_ = true;
  }
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > s->max_body_) {
    return s->fail(413, "body too large");
  }
  // 1: no body follows (HEAD responses); libhttp-parser then completes the message at once.
  return s->no_body_ ? 1 : 0;
}

int message_parser::on_body(http_parser* p, const char* at, std::size_t n) {
  auto* s = self(p);
  if (s->body.size() + n > s->max_body_) return s->fail(413, "body too large");
  try {
    s->body.append(at, n);
  } catch (const std::bad_alloc&) {
    return s->fail(413, "out of memory");
  }
  return 0;
}

int message_parser::on_message_complete(http_parser* p) {
  auto* s = self(p);
  s->complete_ = true;
  s->keep_alive_ = http_should_keep_alive(p) != 0;
  http_parser_pause(p, 1);  // stop here: what follows is the next message
  return 0;
}

}  // namespace quell::http::detail
