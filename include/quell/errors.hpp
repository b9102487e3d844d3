// Errors quell reports, and how secondary errors stay attached to the primary one.
//
// When two things fail at once (an operation throws, then its cleanup hook throws too; a race
// branch throws while a sibling's cancellation throws as well), the *first* error is the one that
// propagates, unchanged: `catch (const X&)` keeps working and nothing is wrapped in a surprise
// type. The later errors are attached to it and can be read while handling it:
//
//   catch (const std::exception& e) {
//     for (const std::exception_ptr& extra : quell::attached_errors()) log(extra);
//   }
//
// Attachments are kept for the most recent 256 primary errors of the process (older ones are
// dropped first); that bound keeps a long-running service from accumulating them.
#pragma once

#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

namespace quell {

// The root of an executor (or block_on's task) ended cancelled, so there is no value to return.
class cancelled_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Nothing can make progress any more: tasks wait for events that can no longer happen. The
// message lists the waiting tasks and where each was created.
class stuck_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A stream ended (the peer closed its side) before an operation that needs more bytes, such as
// tcp_stream::read_exact, got them. read_some reports the end as a 0-byte read instead.
class end_of_stream : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Attaches `extra` to `primary` (both non-null; attaching an error to itself is ignored).
void attach_error(const std::exception_ptr& primary, std::exception_ptr extra);

// The errors attached to `primary`, oldest first; empty if none.
std::vector<std::exception_ptr> attached_errors(const std::exception_ptr& primary);

// The errors attached to the exception currently being handled (call inside a catch block).
std::vector<std::exception_ptr> attached_errors();

// what() of an exception_ptr's exception, or a placeholder for non-std exceptions.
std::string describe(const std::exception_ptr& e);

}  // namespace quell
