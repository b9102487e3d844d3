#include <strings.h>

#include <cctype>
#include <cstring>
#include <stdexcept>

#include "parser.hpp"
#include "quell/http.hpp"

namespace quell::http {

task<client> client::connect(address peer, client_options options) {
  tcp_stream s = co_await tcp_stream::connect(peer);
  co_return client(std::move(s), options);
}

task<client> client::connect_named(std::string host, std::uint16_t port, client_options options) {
  tcp_stream s = co_await tcp_stream::connect(host, port);
  client c(std::move(s), options);
  const bool v6 = host.find(':') != std::string::npos && host.front() != '[';
  c.host_ = v6 ? "[" + host + "]" : host;
  if (port != 80) c.host_ += ":" + std::to_string(port);
  co_return c;
}

task<client> client::connect(std::string_view host, std::uint16_t port, client_options options) {
  return connect_named(std::string(host), port, options);
}

task<client> client::connect_tls(std::string host, std::uint16_t port, tls_context tls, client_options options) {
  tcp_stream s = co_await tcp_stream::connect(host, port);
  auto t = std::make_unique<tls_stream>(co_await tls_stream::connect(std::move(s), tls, host));
  client c(tcp_stream(), options);
  c.tls_ = std::move(t);
  const bool v6 = host.find(':') != std::string::npos && host.front() != '[';
  c.host_ = v6 ? "[" + host + "]" : host;
  if (port != 443) c.host_ += ":" + std::to_string(port);
  co_return c;
}

task<client> client::connect(std::string_view host, std::uint16_t port, tls_context tls, client_options options) {
  return connect_tls(std::string(host), port, std::move(tls), options);
}

task<client> client::connect_url(std::string_view url, client_options options, tls_context tls) {
  bool https = false;
  if (url.starts_with("https://")) {
    https = true;
    url.remove_prefix(8);
  } else if (url.starts_with("http://")) {
    url.remove_prefix(7);
  } else {
    throw std::invalid_argument("quell::http::client::connect_url: not an http:// or https:// URL");
  }
  url = url.substr(0, url.find_first_of("/?#"));
  std::string host(url);
  std::uint16_t port = https ? 443 : 80;
  const auto bracket = host.find(']');
  const auto colon = host.rfind(':');
  if (colon != std::string::npos && (bracket == std::string::npos || colon > bracket)) {
    const std::string p = host.substr(colon + 1);
    host.resize(colon);
    unsigned long v = 0;
    try {
      std::size_t used = 0;
      v = std::stoul(p, &used);
      if (used != p.size() || v == 0 || v > 65535) throw std::invalid_argument("port");
    } catch (const std::exception&) {
      throw std::invalid_argument("quell::http::client::connect_url: a bad port in the URL");
    }
    port = static_cast<std::uint16_t>(v);
  }
  if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) throw std::invalid_argument("quell::http::client::connect_url: no host in the URL");
  if (!https) co_return co_await connect_named(host, port, options);
  if (!tls.native_handle()) tls = tls_context::client();
  co_return co_await connect_tls(host, port, std::move(tls), options);
}

task<void> client::close() {
  if (tls_) {
    co_await tls_->close(std::chrono::seconds(1));
  } else {
    co_await stream_.close();
  }
}

task<client_response> client::request(std::string method, std::string target, std::vector<header> headers,
                                      std::string body) {
  if (!usable()) {
    throw std::logic_error(
        "quell::http::client: the connection is not usable (a request on it was cancelled or failed, or the "
        "server closed it)");
  }
  auto has_line_break = [](std::string_view v) { return v.find_first_of("\r\n") != std::string_view::npos; };
  if (has_line_break(method) || has_line_break(target) || method.find(' ') != std::string::npos ||
      target.find(' ') != std::string::npos)
    throw std::invalid_argument("quell::http::client: a method or target with a space or a line break");
  auto token = [](std::string_view v) {
    if (v.empty()) return false;
    for (unsigned char c : v)
      if (!(std::isalnum(c) || std::strchr("!#$%&'*+-.^_`|~", c)) || c == 0) return false;
    return true;
  };
  auto field_text = [](std::string_view v) {
    for (unsigned char c : v)
      if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
    return true;
  };
  if (!token(method)) throw std::invalid_argument("quell::http::client: a method that is not a token");
  // A name that is not a token ("Content-Length ") would slip past the framing headers added below.
  for (const auto& h : headers)
    if (!token(h.name) || !field_text(h.value))
      throw std::invalid_argument(
          "quell::http::client: a header whose name is not a token or whose value has a control byte");
  // Until the response is complete, the connection is in the middle of an exchange: a cancel or a
  // failure from here on leaves it unusable, and it is closed when request() ends that way (the
  // server learns that its client went away; the response can never be read in step again).
  broken_ = true;
  struct close_if_broken {
    client& c;
    ~close_if_broken() {
      if (c.broken_ && c.stream_.is_open()) c.stream_ = tcp_stream();  // closes in the background
      if (c.broken_ && c.tls_) c.tls_.reset();                         // (no close_notify: broken)
    }
  } closer{*this};
  std::string out;
  out.reserve(256 + body.size());
  out += method;
  out += ' ';
  out += target;
  out += " HTTP/1.1\r\n";
  if (!find_header(headers, "host")) {
    out += "Host: ";
    if (!host_.empty()) {
      out += host_;
    } else {
      try {
        out += stream().peer_address().to_string();
      } catch (const std::system_error&) {
        out += "localhost";
      }
    }
    out += "\r\n";
  }
  for (const auto& h : headers) {
    out += h.name;
    out += ": ";
    out += h.value;
    out += "\r\n";
  }
  if ((!body.empty() || method == "POST" || method == "PUT") && !find_header(headers, "content-length") &&
      !find_header(headers, "transfer-encoding")) {
    out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  out += "\r\n";
  out += body;
  if (tls_) {
    co_await tls_->write_all(out);
  } else {
    co_await stream_.write_all(out);
  }

  detail::message_parser p(detail::message_parser::kind::response, 1024 * 1024, options_.max_response_bytes);
  if (method == "HEAD") p.expect_no_body();
  std::string buf(16 * 1024, '\0');
  std::string_view have(pending_);
  std::string rest;
  for (;;) {
    std::size_t used = p.feed(have.data(), have.size());
    have.remove_prefix(used);
    if (p.failed()) throw protocol_error("quell::http::client: bad response: " + p.error_text());
    if (p.complete()) {
      if (p.status >= 100 && p.status < 200 && p.status != 101) {  // 100 Continue and friends: the real one follows
        p.reset();
        if (method == "HEAD") p.expect_no_body();
        continue;
      }
      break;
    }
    const std::span<char> into(buf.data(), buf.size());
    std::size_t n = tls_ ? co_await tls_->read_some(into) : co_await stream_.read_some(into);
    if (n == 0) {
      p.feed_eof();
      if (p.complete()) break;
      throw protocol_error("quell::http::client: the server closed the connection before the response was complete");
    }
    // `have` may point into pending_, which is not touched until the end.
    rest.assign(have);
    rest.append(buf.data(), n);
    pending_.swap(rest);
    have = pending_;
  }
  client_response r;
  r.status = p.status;
  r.headers = std::move(p.headers);
  r.body = std::move(p.body);
  r.keep_alive = p.keep_alive();
  pending_.assign(have);
  // 101 Switching Protocols: what follows is not HTTP; the connection is the caller's to use.
  // Bytes after a final response were never asked for (this client does not pipeline): they must
  // not be read as the next request's response (RFC 9112 6.3), so the connection is given up.
  broken_ = !r.keep_alive || r.status == 101 || (!pending_.empty() && r.status != 101);
  co_return r;
}

}  // namespace quell::http
