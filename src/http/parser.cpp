#include "parser.hpp"

#include <strings.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <new>

namespace quell::http::detail {
namespace {

// A chunk-size line (size and extensions) longer than this is refused: nothing legitimate needs it,
// and the line is buffered.
constexpr std::size_t max_chunk_line = 4096;
// Header fields per message (nginx and Go allow about 100).
constexpr std::size_t max_fields = 128;

// tchar (RFC 9110 5.6.2), one table lookup per byte: parsing a request is mostly this and the
// next check.
constexpr auto tchar_table = [] {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}();

bool is_tchar(unsigned char c) noexcept { return tchar_table[c]; }

bool is_token(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (unsigned char c : s)
    if (!is_tchar(c)) return false;
  return true;
}

bool is_ows(char c) noexcept { return c == ' ' || c == '\t'; }

// field-vchar / SP / HTAB (RFC 9110 5.5): every byte but the control bytes, HTAB excepted.
bool is_field_text(std::string_view s) noexcept {
  for (unsigned char c : s)
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  return true;
}

std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// Calls fn(element) for each non-empty element of a comma-separated list (RFC 9110 5.6.1).
template <class Fn>
void for_each_element(std::string_view list, Fn fn) {
  while (!list.empty()) {
    auto comma = list.find(',');
    auto element = trim_ows(list.substr(0, comma));
    if (!element.empty()) fn(element);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}

// "HTTP/" DIGIT "." DIGIT, exactly (RFC 9112 2.3).
bool parse_version(std::string_view v, int& major, int& minor) noexcept {
  if (v.size() != 8 || v.substr(0, 5) != "HTTP/" || v[6] != '.') return false;
  if (v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9') return false;
  major = v[5] - '0';
  minor = v[7] - '0';
  return true;
}

}  // namespace

message_parser::message_parser(kind k, std::size_t max_header_bytes, std::size_t max_body_bytes) noexcept
    : kind_(k), max_header_(max_header_bytes), max_body_(max_body_bytes) {
  reset();
}

void message_parser::reset() noexcept {
  state_ = state::start;
  method.clear();
  target.clear();
  body.clear();
  headers.clear();
  line_.clear();
  status = version_major = version_minor = 0;
  header_bytes_ = 0;
  left_ = 0;
  started_ = headers_done_ = keep_alive_ = no_body_ = upgrade_ = false;
  error_status_ = 0;
  error_text_.clear();
}

bool message_parser::line_state() const noexcept {
  return state_ == state::start || state_ == state::head || state_ == state::chunk_size ||
         state_ == state::chunk_end || state_ == state::trailers;
}

std::size_t message_parser::feed(const char* data, std::size_t n) noexcept {
  std::size_t i = 0;
  try {
    while (i < n && state_ != state::done && !failed()) {
      if (line_state()) {
        const char* at = data + i;
        const auto* nl = static_cast<const char*>(std::memchr(at, '\n', n - i));
        const std::size_t take = nl ? static_cast<std::size_t>(nl - at) + 1 : n - i;
        if (state_ == state::chunk_size || state_ == state::chunk_end) {
          if (line_.size() + take > max_chunk_line) {
            fail(400, "a chunk size line too long, or chunk data not followed by CRLF (RFC 9112 7.1)");
            break;
          }
        } else if ((header_bytes_ += take) > max_header_) {
          fail(431, "request line and headers too large");
          break;
        }
        i += take;
        if (!nl) {
          line_.append(at, take);
          // A request line has begun, unless all there is so far is the CR of an empty line: then
          // the answer would depend on where a read split "\r\n".
          if (state_ == state::start && line_ != "\r") started_ = true;
          break;
        }
        // A line that arrived whole is read where it lies; only one cut by a read is copied.
        std::string_view line(at, take);
        if (!line_.empty()) {
          line_.append(at, take);
          line = line_;
        }
        if (line.size() < 2 || line[line.size() - 2] != '\r') {
          fail(400, "a line ends in a bare LF (RFC 9112 2.2)");
          break;
        }
        line.remove_suffix(2);
        on_line(line);
        line_.clear();
      } else if (state_ == state::length_body || state_ == state::chunk_data) {
        const std::size_t take = left_ < n - i ? static_cast<std::size_t>(left_) : n - i;
        body.append(data + i, take);
        i += take;
        left_ -= take;
        if (left_ == 0) state_ = state_ == state::length_body ? state::done : state::chunk_end;
      } else {  // until_close
        if (body.size() + (n - i) > max_body_) {
          fail(413, "body too large");
          break;
        }
        body.append(data + i, n - i);
        i = n;
      }
    }
  } catch (const std::bad_alloc&) {
    fail(headers_done_ ? 413 : 431, "out of memory");
  }
  return i;
}

void message_parser::feed_eof() noexcept {
  if (state_ == state::done || failed() || !started_) return;
  if (state_ == state::until_close) {
    state_ = state::done;
    return;
  }
  fail(400, "the connection closed in the middle of a message");
}

bool message_parser::expects_continue() const noexcept {
  auto v = find_header(headers, "expect");
  return v && iequals(*v, "100-continue");
}

void message_parser::fail(int st, const char* text) noexcept {
  if (error_status_ != 0) return;
  error_status_ = st;
  try {
    error_text_ = text;
  } catch (...) {
  }
}

void message_parser::on_line(std::string_view line) noexcept {
  switch (state_) {
    case state::start:
      if (line.empty()) return;  // an empty line before a request line is skipped (RFC 9112 2.2)
      started_ = true;
      start_line(line);
      if (!failed()) state_ = state::head;
      return;
    case state::head:
      if (line.empty()) {
        end_of_head();
      } else if (is_ows(line.front())) {
        fail(400, "a header line folded onto the previous one (obs-fold, RFC 9112 5.2)");
      } else {
        field_line(line, true);
      }
      return;
    case state::chunk_size:
      chunk_size_line(line);
      return;
    case state::chunk_end:
      if (!line.empty()) fail(400, "chunk data not followed by CRLF (RFC 9112 7.1)");
      state_ = state::chunk_size;
      return;
    case state::trailers:
      // Trailer fields are checked like header fields and dropped: merging them would let them
      // say what the head did not, after a front proxy had decided on the head.
      if (line.empty()) {
        state_ = state::done;
      } else if (is_ows(line.front())) {
        fail(400, "a trailer line folded onto the previous one (obs-fold, RFC 9112 5.2)");
      } else {
        field_line(line, false);
      }
      return;
    default:
      return;
  }
}

void message_parser::start_line(std::string_view line) noexcept {
  if (!is_field_text(line) || line.find('\t') != std::string_view::npos) {
    fail(400, "a control byte in the start line (RFC 9112 3)");
    return;
  }
  if (kind_ == kind::request) {
    auto sp1 = line.find(' ');
    if (sp1 == std::string_view::npos || !is_token(line.substr(0, sp1))) {
      fail(400, "a request line that does not start with a method token and one space (RFC 9112 3)");
      return;
    }
    auto rest = line.substr(sp1 + 1);
    auto sp2 = rest.find(' ');
    if (sp2 == std::string_view::npos) {
      fail(400, "a request line without an HTTP version (HTTP/0.9 is not supported)");
      return;
    }
    auto t = rest.substr(0, sp2);
    if (t.empty()) {
      fail(400, "two spaces in the request line (RFC 9112 3)");
      return;
    }
    for (unsigned char c : t)
      if (c < 0x21 || c > 0x7e) {
        fail(400, "a request target with a byte that is not visible ASCII (RFC 9112 3.2)");
        return;
      }
    if (!parse_version(rest.substr(sp2 + 1), version_major, version_minor)) {
      fail(400, "a request line that does not end in one space and HTTP/d.d (RFC 9112 2.3, 3)");
      return;
    }
    if (version_major != 1) {
      fail(505, "only HTTP/1.x is supported");
      return;
    }
    method.assign(line.substr(0, sp1));
    if (method == "CONNECT") {
      // A tunnel is not served: a proxy in front that saw a 2xx would switch to forwarding raw
      // bytes, which would reach this server as requests it never inspected (RFC 9110 9.3.6).
      fail(501, "CONNECT is not supported");
      return;
    }
    // The forms of RFC 9112 3.2 left once CONNECT (authority form) is refused: origin ("/x"),
    // absolute ("http://h/x") and asterisk (OPTIONS only).
    const bool origin = t.front() == '/';
    const bool absolute = t.find("://") != std::string_view::npos && is_token(t.substr(0, t.find("://")));
    const bool ok = t == "*" ? method == "OPTIONS" : origin || absolute;
    if (!ok) {
      fail(400, "a request target in none of the forms its method allows (RFC 9112 3.2)");
      return;
    }
    target.assign(t);
  } else {
    if (line.size() < 12 || line[8] != ' ' || !parse_version(line.substr(0, 8), version_major, version_minor) ||
        version_major != 1) {
      fail(400, "a status line that does not start with HTTP/1.x and one space (RFC 9112 4)");
      return;
    }
    auto code = line.substr(9, 3);
    if (code[0] < '1' || code[0] > '5' || code[1] < '0' || code[1] > '9' || code[2] < '0' || code[2] > '9' ||
        (line.size() > 12 && line[12] != ' ')) {
      fail(400, "a status code that is not three digits (RFC 9112 4)");
      return;
    }
    status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
  }
}

bool message_parser::field_line(std::string_view line, bool keep) noexcept {
  // The name runs to the first byte that is not a token character, which must be the colon.
  std::size_t colon = 0;
  while (colon < line.size() && is_tchar(static_cast<unsigned char>(line[colon]))) ++colon;
  if (colon == line.size() || colon == 0) {
    fail(400, "a header line without a name and a colon (RFC 9112 5)");
    return false;
  }
  if (line[colon] != ':') {
    fail(400, "a header name with a byte that is not a token character, whitespace before the colon "
              "included (RFC 9112 5.1)");
    return false;
  }
  auto value = trim_ows(line.substr(colon + 1));
  if (!is_field_text(value)) {
    fail(400, "a control byte in a header value (RFC 9110 5.5)");
    return false;
  }
  if (keep) {
    // Each field costs a header (two strings) however short it is: 16 KiB of "a:" lines would
    // be 4,000 of them. Real requests carry a few dozen.
    if (headers.size() >= max_fields) {
      fail(431, "too many header fields");
      return false;
    }
    headers.push_back(header{std::string(line.substr(0, colon)), std::string(value)});
  }
  return true;
}

void message_parser::end_of_head() noexcept {
  headers_done_ = true;
  const bool request = kind_ == kind::request;
  int hosts = 0;
  bool te = false, cl = false, chunked_last = false, close = false, keep_token = false, upgrade_token = false,
       upgrade_header = false, bad_host = false;
  int codings = 0, chunked = 0;
  std::string_view length;
  bool lengths_differ = false, length_not_digits = false;
  for (const auto& h : headers) {
    const std::string_view name = h.name, value = h.value;
    if (iequals(name, "host")) {
      ++hosts;
      bad_host |= value.find_first_of(" \t/\\@?#,") != std::string_view::npos;
    } else if (iequals(name, "transfer-encoding")) {
      te = true;
      for_each_element(value, [&](std::string_view coding) {
        ++codings;
        chunked_last = iequals(coding, "chunked");
        if (chunked_last) ++chunked;
      });
    } else if (iequals(name, "content-length")) {
      if (value.empty() || value.find_first_not_of("0123456789") != std::string_view::npos) length_not_digits = true;
      if (cl && value != length) lengths_differ = true;
      cl = true;
      length = value;
    } else if (iequals(name, "connection")) {
      for_each_element(value, [&](std::string_view token) {
        close |= iequals(token, "close");
        keep_token |= iequals(token, "keep-alive");
        upgrade_token |= iequals(token, "upgrade");
      });
    } else if (iequals(name, "upgrade")) {
      upgrade_header = true;
    }
  }
  keep_alive_ = version_minor >= 1 ? !close : keep_token && !close;
  if (request) {
    upgrade_ = upgrade_token && upgrade_header;
    if (hosts > 1 || (version_minor >= 1 && hosts == 0) || bad_host) {
      fail(400, "an HTTP/1.1 request needs exactly one valid Host header (RFC 9112 3.2)");
      return;
    }
  } else {
    // These have no body whatever their headers say (RFC 9110 6.4.1).
    if (status / 100 == 1 || status == 204 || status == 304) no_body_ = true;
    if (no_body_) {
      state_ = state::done;
      return;
    }
  }
  if (te) {
    if (cl) {
      fail(400, "both Transfer-Encoding and Content-Length (RFC 9112 6.3: the framing is ambiguous)");
    } else if (version_minor == 0) {
      fail(400, "Transfer-Encoding in an HTTP/1.0 message (RFC 9112 6.1)");
    } else if (!chunked_last || chunked != 1) {
      fail(400, "a Transfer-Encoding whose final coding is not chunked, once (RFC 9112 6.1)");
    } else if (codings != 1) {
      fail(request ? 501 : 400, "a transfer coding other than chunked (not implemented)");
    } else {
      state_ = state::chunk_size;
    }
    return;
  }
  if (cl) {
    if (length_not_digits || lengths_differ) {
      fail(400, "a Content-Length that is not one number (RFC 9112 6.3)");
      return;
    }
    // Saturates instead of wrapping: 2^64 + 1 must not read as 1, whatever max_body_ is.
    std::uint64_t n = 0;
    bool too_large = false;
    for (char c : length) {
      const auto digit = static_cast<std::uint64_t>(c - '0');
      if (n > (UINT64_MAX - digit) / 10) {
        too_large = true;
        break;
      }
      n = n * 10 + digit;
    }
    if (too_large || n > max_body_) {
      fail(413, "body too large");
      return;
    }
    left_ = n;
    state_ = n == 0 ? state::done : state::length_body;
    return;
  }
  if (request) {
    state_ = state::done;  // no body
  } else {
    state_ = state::until_close;
    keep_alive_ = false;
  }
}

void message_parser::chunk_size_line(std::string_view line) noexcept {
  std::uint64_t size = 0;
  std::size_t j = 0;
  for (; j < line.size(); ++j) {
    const char c = line[j];
    int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (digit < 0) break;
    if (size > (UINT64_MAX >> 4)) {  // would wrap: 2^64 + 1 must not read as 1
      fail(413, "a chunk size beyond 64 bits");
      return;
    }
    size = size * 16 + static_cast<std::uint64_t>(digit);
  }
  if (j == 0) {
    fail(400, "a chunk size that is not hex digits (RFC 9112 7.1)");
    return;
  }
  // Whitespace may only come before an extension's ';' (BWS), never end the line.
  auto ext = line.substr(j);
  const bool extended = !ext.empty();
  while (!ext.empty() && is_ows(ext.front())) ext.remove_prefix(1);
  if (extended && (ext.empty() || ext.front() != ';' || !is_field_text(ext))) {
    fail(400, "a chunk size followed by something other than an extension (RFC 9112 7.1.1)");
    return;
  }
  if (size == 0) {
    state_ = state::trailers;
    return;
  }
  if (size > max_body_ || body.size() + size > max_body_) {
    fail(413, "body too large");
    return;
  }
  left_ = size;
  state_ = state::chunk_data;
}

}  // namespace quell::http::detail
