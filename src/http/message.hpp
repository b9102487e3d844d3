// What the server needs from message.cpp beyond the public helpers of quell/http.hpp.
#pragma once

#include <string>

#include "quell/http.hpp"

namespace quell::http::detail {

// Whether the handler's response asks to close the connection ("Connection: close").
bool response_closes(const response& r) noexcept;

// The bytes of `r` on an HTTP/1.`minor` connection. Framing is the server's: the handler's
// Content-Length, Transfer-Encoding and Connection headers are replaced, and a header whose name is
// not a token or whose value has a control byte is dropped (no response splitting). `head`: the
// body is left out, its length kept.
std::string serialize(const response& r, bool keep_alive, bool head, int minor);

}  // namespace quell::http::detail
