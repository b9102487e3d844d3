#include "quell/scope.hpp"

#include <string>
#include <vector>

#include "quell/task.hpp"
#include "quell/task_group.hpp"

namespace quell {

void scope_core::adopt(detail::child_base* c) noexcept {
  c->owner = this;
  children_.push_back(c);
  ++running_;
  enter();
  {
    detail::scope_guard g(&node_);
    if (c->launch(req_.level != cancel_level::none ? &req_ : nullptr)) child_finished(c);
  }
  leave();  // may destroy *this
}

void scope_core::child_finished(detail::child_base* c) noexcept {
  enter();
  c->finished = true;
  c->unlink();
  --running_;
  if (detail::start_state* s = c->starter) {
    c->starter = nullptr;
    s->on_ended(s);  // before started(): the outcome belongs to start()'s caller
  } else if (c->has_error()) {
    record_error(c->error());
  }
  if (std::coroutine_handle<> w = std::exchange(c->waiter, {})) detail::resume(w);
  c->release();
  leave();  // may destroy *this
}

void scope_core::record_error(std::exception_ptr e) noexcept {
  if (!error_) {
    error_ = std::move(e);
    failed_due_ = true;
  } else if (e != error_) {
    attach_error(error_, std::move(e));
  }
}

void scope_core::cancel_children(const cancel_request& r) noexcept {
  if (!merge_request(req_, r)) return;
  enter();
  // Cancelling one child may finish others (and free them): hold each while walking.
  std::vector<detail::child_base*> snapshot;
  snapshot.reserve(running_);
  children_.for_each([&](detail::list_node* n) {
    auto* c = static_cast<detail::child_base*>(n);
    c->retain();
    snapshot.push_back(c);
  });
  for (detail::child_base* c : snapshot) {
    if (!c->finished) c->cancel(req_);
    c->release();
  }
  leave();  // may destroy *this
}

void scope_core::leave() noexcept {
  if (--busy_ != 0) return;
  if (failed_due_) {
    failed_due_ = false;
    ++busy_;
    failed_(this);  // cancels the other members; their ends are reported below
    --busy_;
  }
  if (running_ == 0) idle_(this);  // may destroy *this
}

task_group::task_group(detail::site where) noexcept : scope_core(&on_idle, &on_failed), where_(where) {}

namespace {
std::string where(const detail::site& s) {
  return std::string(s.file) + ":" + std::to_string(s.line) + " (in `" + s.function + "`)";
}
}  // namespace

task_group::~task_group() {
  if (running() != 0) {
    detail::fatal("quell: a task_group created at " + where(where_) + " was destroyed with " +
                  std::to_string(running()) +
                  " task(s) still running; close it first with co_await g.join() or co_await g.cancel_and_join()");
  }
  if (error_) {
    detail::fatal("quell: a task_group created at " + where(where_) +
                  " was destroyed holding an error nobody collected (" + describe(error_) +
                  "); close it with co_await g.join() or co_await g.cancel_and_join()");
  }
}

void task_group::on_idle(scope_core* s) noexcept {
  auto* g = static_cast<task_group*>(s);
  if (std::coroutine_handle<> j = std::exchange(g->joiner_, {})) detail::resume(j);
}

void task_group::on_failed(scope_core* s) noexcept {
  static_cast<task_group*>(s)->cancel_children(
      cancel_request{cancel_level::graceful, cancel_reason(cancel_kind::sibling_failed)});
}

}  // namespace quell
