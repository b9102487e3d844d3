// quell::http's message parser (request or response): incremental, stops after one complete
// message so that pipelined bytes stay with the caller, enforces the header and body limits while
// it reads, and is strict where RFC 9112 lets a lenient reader disagree with its neighbours about
// where a message ends (request smuggling, response splitting). Each rejection names its rule.
//
// What is rejected (400 unless said otherwise), and why:
//   - a line ending in a bare LF, a bare CR anywhere, a NUL or another control byte in the start
//     line or a field line (RFC 9112 2.2, 5.5): two readers would split the lines differently;
//   - a request line that is not exactly `method SP target SP HTTP/d.d` (3): no HTTP/0.9, no
//     double spaces, no whitespace inside the target; an HTTP major version other than 1: 505;
//   - a field name with anything but token characters, whitespace before the colon included
//     (5.1), and a line folded onto the previous one (obs-fold, 5.2);
//   - an HTTP/1.1 request without exactly one Host, or with more than one (3.2);
//   - Transfer-Encoding together with Content-Length, Transfer-Encoding in an HTTP/1.0 message,
//     or a coding list other than exactly "chunked" (6.1, 6.3): a request whose final coding is
//     chunked after another coding gets 501 (no other coding is implemented);
//   - a Content-Length that is not digits, or two that differ (6.3, RFC 9110 8.6);
//   - a chunk size that is not hex digits (optionally followed by extensions), and chunk data not
//     followed by exactly CRLF (7.1); trailer lines are checked like header lines, then dropped.
// Empty lines (CRLF) before a request line are skipped (2.2). A response status line may omit the
// space after the status code (nothing is framed by the reason phrase). CONNECT is refused (501):
// quell serves no tunnels. More than 128 header fields: 431. Numbers that would pass 64 bits are
// too large (413), never wrapped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
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
  bool complete() const noexcept { return state_ == state::done; }
  bool failed() const noexcept { return error_status_ != 0; }
  // The status to answer a failed request with (400, 413, 431, 501, 505), and what went wrong.
  int error_status() const noexcept { return error_status_; }
  const std::string& error_text() const noexcept { return error_text_; }

  // Body bytes still to come as the head declared them (Content-Length), once headers_complete().
  std::uint64_t declared_body() const noexcept { return state_ == state::length_body ? left_ : 0; }
  bool keep_alive() const noexcept { return keep_alive_; }
  bool upgrade() const noexcept { return upgrade_; }
  bool expects_continue() const noexcept;

  // The parsed message (valid once complete; a request's or a response's fields).
  std::string method, target, body;
  std::vector<header> headers;
  int status = 0, version_major = 0, version_minor = 0;

 private:
  enum class state { start, head, length_body, chunk_size, chunk_data, chunk_end, trailers, until_close, done };
  bool line_state() const noexcept;
  void on_line(std::string_view line) noexcept;
  void start_line(std::string_view line) noexcept;
  bool field_line(std::string_view line, bool keep) noexcept;
  void end_of_head() noexcept;
  void chunk_size_line(std::string_view line) noexcept;
  void fail(int status, const char* text) noexcept;

  kind kind_;
  state state_ = state::start;
  std::size_t max_header_, max_body_;
  std::size_t header_bytes_ = 0;
  std::uint64_t left_ = 0;  // body bytes or chunk bytes still to come
  std::string line_;        // the line being collected
  bool started_ = false, headers_done_ = false, keep_alive_ = false, no_body_ = false, upgrade_ = false;
  int error_status_ = 0;
  std::string error_text_;
};

}  // namespace quell::http::detail
