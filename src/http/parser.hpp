// The one place quell::http talks to libhttp-parser: a message (request or response) parser that
// stops after one complete message, so pipelined bytes stay with the caller, and that enforces
// the header and body limits while it reads.
#pragma once

#include <http_parser.h>

#include <cstddef>
#include <string>
#include <vector>

#include "quell/http.hpp"

namespace quell::http::detail {

class message_parser {
 public:
  enum class kind { request, response };
  message_parser(kind k, std::size_t max_header_bytes, std::size_t max_body_bytes) noexcept;
  message_parser(const message_parser&) = delete;
  message_parser& operator=(const message_parser&) = delete;

  // Ready for the next message on the same connection.
  void reset() noexcept;
  // Parses up to n bytes; returns how many it used. It uses fewer only when the message is complete
  // (the rest belongs to the next one) or has failed.
  std::size_t feed(const char* data, std::size_t n) noexcept;
  // The peer closed its side: completes a response delimited by the end of the connection.
  void feed_eof() noexcept;
  // A response to HEAD (or a 1xx/204/304) has no body whatever its headers say.
  void expect_no_body() noexcept { no_body_ = true; }

  // A message began: something other than the empty lines a client may send between requests.
  bool started() const noexcept { return started_; }
  bool headers_complete() const noexcept { return headers_done_; }
  bool complete() const noexcept { return complete_; }
  bool failed() const noexcept { return error_status_ != 0; }
  // The status to answer a failed request with (400, 413, 431, 505), and what went wrong.
  int error_status() const noexcept { return error_status_; }
  const std::string& error_text() const noexcept { return error_text_; }

  bool keep_alive() const noexcept { return keep_alive_; }
  bool upgrade() const noexcept { return p_.upgrade != 0; }
  bool expects_continue() const noexcept;

  // The parsed message (valid once complete; a request's or a response's fields).
  std::string method, target, body;
  std::vector<header> headers;
  int status = 0, version_major = 0, version_minor = 0;

 private:
  static int on_message_begin(http_parser* p);
  static int on_url(http_parser* p, const char* at, std::size_t n);
  static int on_header_field(http_parser* p, const char* at, std::size_t n);
  static int on_header_value(http_parser* p, const char* at, std::size_t n);
  static int on_headers_complete(http_parser* p);
  static int on_body(http_parser* p, const char* at, std::size_t n);
  static int on_message_complete(http_parser* p);
  int fail(int status, const char* text) noexcept;
  bool count_header_bytes(std::size_t n) noexcept;

  http_parser p_;
  kind kind_;
  std::size_t max_header_, max_body_;
  std::size_t header_bytes_ = 0;
  bool in_value_ = false;
  bool started_ = false, headers_done_ = false, complete_ = false, keep_alive_ = false, no_body_ = false;
  int error_status_ = 0;
  std::string error_text_;
};

}  // namespace quell::http::detail
