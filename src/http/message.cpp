// The message types' helpers (quell/http.hpp: headers, request targets and query parameters,
// canned responses) and the server's serialisation of a response.
#include "message.hpp"

#include <strings.h>

#include <cctype>
#include <cstring>
#include <string>

#include "quell/http.hpp"

namespace quell::http {

std::optional<std::string_view> find_header(const std::vector<header>& headers, std::string_view name) noexcept {
  for (const auto& h : headers) {
    if (h.name.size() == name.size() && strncasecmp(h.name.data(), name.data(), name.size()) == 0)
      return std::string_view(h.value);
  }
  return std::nullopt;
}

std::string_view reason_phrase(int status) noexcept {
  // RFC 9110 section 15, plus the registered codes a service meets (429, 431 from RFC 6585).
  // clang-format off
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Entity";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
  // clang-format on
}

std::string_view request::path() const noexcept {
  std::string_view t(target);
  return t.substr(0, t.find_first_of("?#"));
}

std::string_view request::query() const noexcept {
  std::string_view t(target);
  auto q = t.find('?');
  if (q == std::string_view::npos) return {};
  t.remove_prefix(q + 1);
  return t.substr(0, t.find('#'));
}

namespace {

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decoding; a malformed escape is kept as it is (as browsers and most servers do).
std::string decode_component(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

std::optional<std::string> request::query_param(std::string_view name) const {
  std::string_view q = query();
  while (!q.empty()) {
    auto amp = q.find('&');
    std::string_view pair = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    auto eq = pair.find('=');
    std::string key = decode_component(pair.substr(0, eq));
    if (key == name) return eq == std::string_view::npos ? std::string() : decode_component(pair.substr(eq + 1));
  }
  return std::nullopt;
}

response response::text(int status, std::string body) {
  return response{status, {{"Content-Type", "text/plain; charset=utf-8"}}, std::move(body)};
}

response response::json(int status, std::string body) {
  return response{status, {{"Content-Type", "application/json"}}, std::move(body)};
}

namespace detail {

namespace {

bool is_token(std::string_view v, std::string_view token) noexcept {
  // "close" in "Connection: keep-alive, close"
  while (!v.empty()) {
    auto comma = v.find(',');
    std::string_view item = v.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (item.size() == token.size() && strncasecmp(item.data(), token.data(), token.size()) == 0) return true;
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

bool response_closes(const response& r) noexcept {
  auto c = find_header(r.headers, "connection");
  return c && is_token(*c, "close");
}

namespace {

bool valid_field(const header& h) noexcept {
  if (h.name.empty()) return false;
  for (unsigned char c : h.name)
    if (!(std::isalnum(c) || std::strchr("!#$%&'*+-.^_`|~", c)) || c == 0) return false;
  for (unsigned char c : h.value)
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  return true;
}

bool has_no_body(int status) noexcept { return (status >= 100 && status < 200) || status == 204 || status == 304; }

}  // namespace

std::string serialize(const response& r, bool keep_alive, bool head, int minor) {
  std::string out;
  out.reserve(128 + r.body.size());
  out += "HTTP/1.1 ";
  out += std::to_string(r.status);
  out += ' ';
  out += reason_phrase(r.status);
  out += "\r\n";
  for (const auto& h : r.headers) {
    std::string_view n(h.name);
    if (n.empty() || strcasecmp(h.name.c_str(), "content-length") == 0 ||
        strcasecmp(h.name.c_str(), "transfer-encoding") == 0 || strcasecmp(h.name.c_str(), "connection") == 0)
      continue;
    // A header must not smuggle framing into the response: a name that is not a token
    // ("Content-Length " would pass the check above) or a value with a control byte is dropped.
    if (!valid_field(h)) continue;
    out += h.name;
    out += ": ";
    out += h.value;
    out += "\r\n";
  }
  if (!has_no_body(r.status)) {
    out += "Content-Length: ";
    out += std::to_string(r.body.size());
    out += "\r\n";
  }
  if (!keep_alive) {
    out += "Connection: close\r\n";
  } else if (minor == 0) {
    out += "Connection: keep-alive\r\n";
  }
  out += "\r\n";
  if (!head && !has_no_body(r.status)) out += r.body;
  return out;
}

}  // namespace detail
}  // namespace quell::http
