#include "quell/this_task.hpp"

#include <algorithm>

#include "quell/deadline.hpp"
#include "quell/detail/scheduler.hpp"

namespace quell::this_task {

using detail::scope_frame;
using detail::scope_node;
using detail::task_record;

namespace {
const cancel_request* request_of(const scope_node* n) noexcept {
  if (n->what == scope_node::kind::task) return &static_cast<const task_record*>(n)->request;
  return static_cast<const scope_frame*>(n)->request;
}

// On_cancel's operation before the hook has run: the request above has not reached it yet.
bool held_back(const scope_node* n) noexcept {
  return n->what == scope_node::kind::held && static_cast<const scope_frame*>(n)->request == nullptr;
}
bool requested(const cancel_request* r) noexcept { return r && r->level != cancel_level::none; }
}  // namespace

bool cancel_requested() noexcept {
  for (const scope_node* n = detail::tls.scope; n; n = n->parent) {
    if (n->what == scope_node::kind::task) return requested(request_of(n));
    if (n->what == scope_node::kind::shield) return false;  // a hook's own code, run shielded
    if (n->what == scope_node::kind::held) return requested(request_of(n));
  }
  return false;
}

time_point deadline() noexcept { return detail::effective_deadline(detail::tls.scope); }

std::optional<quell::cancel_reason> cancel_reason() {
  for (const scope_node* n = detail::tls.scope; n; n = n->parent) {
    if (held_back(n)) return std::nullopt;
    const cancel_request* r = request_of(n);
    if (requested(r)) return r->reason;
  }
  return std::nullopt;
}

}  // namespace quell::this_task

namespace quell::detail {

using this_task::held_back;
using this_task::requested;

time_point effective_deadline(const scope_node* from) noexcept {
  time_point d = time_point::max();
  bool held = false;  // below an on_cancel still running its hook: requests above are not ours yet
  for (const scope_node* n = from; n; n = n->parent) {
    switch (n->what) {
      case scope_node::kind::task:
        if (!held && requested(&static_cast<const task_record*>(n)->request)) return time_point::min();
        break;
      case scope_node::kind::deadline:
        d = std::min(d, static_cast<const scope_frame*>(n)->deadline);
        break;
      case scope_node::kind::shield:
        return std::min(d, static_cast<const scope_frame*>(n)->deadline);
      case scope_node::kind::plain:
        break;
      case scope_node::kind::held:
        if (held_back(n)) {
          held = true;
        } else if (!held && requested(static_cast<const scope_frame*>(n)->request)) {
          return time_point::min();
        }
        break;
    }
  }
  return d;
}

bool enclosing_cancel_due(const scope_node* from, time_point now) noexcept {
  for (const scope_node* n = from; n; n = n->parent) {
    switch (n->what) {
      case scope_node::kind::task:
        if (requested(&static_cast<const task_record*>(n)->request)) return true;
        break;
      case scope_node::kind::deadline:
        if (static_cast<const scope_frame*>(n)->deadline <= now) return true;
        break;
      case scope_node::kind::shield:
        return static_cast<const scope_frame*>(n)->deadline <= now;
      case scope_node::kind::plain:
        break;
      case scope_node::kind::held:
        if (held_back(n)) return false;
        if (requested(static_cast<const scope_frame*>(n)->request)) return true;
        break;
    }
  }
  return false;
}

}  // namespace quell::detail
