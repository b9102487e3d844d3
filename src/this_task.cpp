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
}  // namespace

bool cancel_requested() noexcept {
  for (const scope_node* n = detail::tls.scope; n; n = n->parent) {
    if (n->what == scope_node::kind::task) return request_of(n)->level != cancel_level::none;
    if (n->what == scope_node::kind::shield) return false;  // a hook's own code, run shielded
  }
  return false;
}

time_point deadline() noexcept { return detail::effective_deadline(detail::tls.scope); }

std::optional<quell::cancel_reason> cancel_reason() {
  for (const scope_node* n = detail::tls.scope; n; n = n->parent) {
    const cancel_request* r = request_of(n);
    if (r && r->level != cancel_level::none) return r->reason;
  }
  return std::nullopt;
}

}  // namespace quell::this_task

namespace quell::detail {

time_point effective_deadline(const scope_node* from) noexcept {
  time_point d = time_point::max();
  for (const scope_node* n = from; n; n = n->parent) {
    switch (n->what) {
      case scope_node::kind::task:
        if (static_cast<const detail::task_record*>(n)->request.level != cancel_level::none) return time_point::min();
        break;
      case scope_node::kind::deadline:
        d = std::min(d, static_cast<const scope_frame*>(n)->deadline);
        break;
      case scope_node::kind::shield:
        return std::min(d, static_cast<const scope_frame*>(n)->deadline);
      case scope_node::kind::plain:
        break;
    }
  }
  return d;
}

}  // namespace quell::detail
