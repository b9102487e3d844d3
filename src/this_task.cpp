#include "quell/this_task.hpp"

#include <algorithm>

#include "quell/deadline.hpp"
#include "quell/detail/scheduler.hpp"

namespace quell::this_task {

using detail::context_frame;
using detail::context_node;
using detail::task_record;

namespace {
const cancel_request* request_of(const context_node* n) noexcept {
  if (n->what == context_node::kind::task) return &static_cast<const task_record*>(n)->request;
  return static_cast<const context_frame*>(n)->request;
}

// On_cancel's operation before the hook has run: the request above has not reached it yet.
bool held_back(const context_node* n) noexcept {
  return n->what == context_node::kind::held && static_cast<const context_frame*>(n)->request == nullptr;
}
bool requested(const cancel_request* r) noexcept { return r && r->level != cancel_level::none; }
}  // namespace

bool cancel_requested() noexcept {
  for (const context_node* n = detail::tls.context; n; n = n->parent) {
    if (n->what == context_node::kind::task) return requested(request_of(n));
    if (n->what == context_node::kind::shield) return false;  // a hook's own code, run shielded
    if (n->what == context_node::kind::held) return requested(request_of(n));
  }
  return false;
}

time_point deadline() noexcept { return detail::effective_deadline(detail::tls.context); }

std::optional<quell::cancel_reason> cancel_reason() {
  for (const context_node* n = detail::tls.context; n; n = n->parent) {
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

time_point effective_deadline(const context_node* from) noexcept {
  time_point d = time_point::max();
  bool held = false;  // below an on_cancel still running its hook: requests above are not ours yet
  for (const context_node* n = from; n; n = n->parent) {
    switch (n->what) {
      case context_node::kind::task:
        if (!held && requested(&static_cast<const task_record*>(n)->request)) return time_point::min();
        break;
      case context_node::kind::deadline:
        d = std::min(d, static_cast<const context_frame*>(n)->deadline);
        break;
      case context_node::kind::shield:
        return std::min(d, static_cast<const context_frame*>(n)->deadline);
      case context_node::kind::plain:
        break;
      case context_node::kind::held:
        if (held_back(n)) {
          held = true;
        } else if (!held && requested(static_cast<const context_frame*>(n)->request)) {
          return time_point::min();
        }
        break;
    }
  }
  return d;
}

bool enclosing_cancel_due(const context_node* from, time_point now) noexcept {
  for (const context_node* n = from; n; n = n->parent) {
    switch (n->what) {
      case context_node::kind::task:
        if (requested(&static_cast<const task_record*>(n)->request)) return true;
        break;
      case context_node::kind::deadline:
        if (static_cast<const context_frame*>(n)->deadline <= now) return true;
        break;
      case context_node::kind::shield:
        return static_cast<const context_frame*>(n)->deadline <= now;
      case context_node::kind::plain:
        break;
      case context_node::kind::held:
        if (held_back(n)) return false;
        if (requested(static_cast<const context_frame*>(n)->request)) return true;
        break;
    }
  }
  return false;
}

}  // namespace quell::detail
