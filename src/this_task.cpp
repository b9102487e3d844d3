#include "quell/this_task.hpp"

#include "quell/deadline.hpp"
#include "quell/detail/scheduler.hpp"

namespace quell::this_task {

using detail::scope_node;

bool cancel_requested() noexcept {
  for (const scope_node* n = detail::tls.scope; n; n = n->parent) {
    if (n->what == scope_node::kind::task) return n->request->level != cancel_level::none;
    if (n->what == scope_node::kind::shield) return false;  // a hook's own code, run shielded
  }
  return false;
}

time_point deadline() noexcept { return detail::effective_deadline(detail::tls.scope); }

std::optional<quell::cancel_reason> cancel_reason() {
  for (const scope_node* n = detail::tls.scope; n; n = n->parent) {
    if (n->request && n->request->level != cancel_level::none) return n->request->reason;
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
        if (n->request->level != cancel_level::none) return time_point::min();
        break;
      case scope_node::kind::deadline:
        if (n->deadline < d) d = n->deadline;
        break;
      case scope_node::kind::shield:
        return n->deadline < d ? n->deadline : d;
      case scope_node::kind::plain:
        break;
    }
  }
  return d;
}

}  // namespace quell::detail
