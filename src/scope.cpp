#include "quell/scope.hpp"

#include <string>

#include "quell/task.hpp"
#include "quell/task_group.hpp"

namespace quell {

void detail::scope_core::adopt(detail::child_base* c) noexcept {
  c->owner = this;
  children_.push_back(c);
  ++running_;
  enter();
  {
    // No guard against the scope's destruction here (unlike child_finished): while the new child
    // runs it counts as running, so destroying a task_group now terminates, and start()'s
    // caller is not resumed before its own await_suspend returns.
    detail::context_guard g(&node_);
    if (c->launch(req_.level != cancel_level::none ? &req_ : nullptr)) child_finished(c);
  }
  leave();  // may destroy *this
}

void detail::scope_core::child_finished(detail::child_base* c) noexcept {
  enter();
  c->finished = true;
  c->unlink();
  --running_;
  detail::start_state* const s = std::exchange(c->starter, nullptr);
  if (ended_) {
    c->retain();
    ended_(this, c);  // queues it; never resumes a task from here
  } else if (!s && c->has_error()) {
    record_error(c->error());  // before started(), start()'s caller gets it
  }
  const std::coroutine_handle<> w = std::exchange(c->waiter, {});
  // Both may resume a task at once, which may destroy the scope: a task_group it owns, joined at
  // once since nothing else runs (the task awaited this child's handle).
  if ((s || w) && destroyed_by([&] {
        if (s) s->on_ended(s);
        if (w) detail::resume(w);
      })) {
    c->release();
    return;
  }
  c->release();
  leave();  // may destroy *this
}

void detail::scope_core::record_error(std::exception_ptr e) noexcept {
  if (!error_) {
    error_ = std::move(e);
    failed_due_ = true;
  } else if (e != error_) {
    attach_error(error_, std::move(e));
  }
}

namespace {
// A place in a scope's child list that is not a child: always finished, so every walk passes it.
struct walk_marker final : detail::child_base {
  walk_marker() noexcept { finished = true; }
  bool launch(const cancel_request*) noexcept override { return true; }
  void cancel(const cancel_request&) noexcept override {}
  std::exception_ptr error() const noexcept override { return nullptr; }
};
}  // namespace

void detail::scope_core::cancel_children(const cancel_request& r) noexcept {
  if (!merge_request(req_, r)) return;
  enter();
  // One pass, with a cursor that steps past each child just before the child is cancelled:
  // cancelling one child may finish others and unlink them, but the cursor and the end marker
  // stay linked, so the walk never follows a pointer out of a node that left. Stepping past a
  // child touches the next one, so its cache miss overlaps this child's cancellation; the
  // snapshot this replaces first walked the whole list as a chain of misses (W7 in bench/compare/WORKLOADS.md: 13%
  // slower). Children spawned during the walk go after the end marker; they started under req_ already.
  walk_marker cursor, end;
  children_.push_front(&cursor);
  children_.push_back(&end);
  while (cursor.next != &end) {
    auto* c = static_cast<detail::child_base*>(cursor.next);
    cursor.unlink();
    cursor.link_after(c);
    if (c->finished) continue;  // another walk's marker
    // Cancelling a child may end it, and its end may resume its handle's waiter, which may
    // destroy the scope (the markers then left the list with it).
    c->retain();
    const bool gone = destroyed_by([&] { c->cancel(req_); });
    c->release();
    if (gone) return;
  }
  cursor.unlink();
  end.unlink();
  leave();  // may destroy *this
}

void detail::scope_core::leave() noexcept {
  if (--busy_ != 0) return;
  if (failed_due_) {
    failed_due_ = false;
    ++busy_;
    // Cancels the other members (their ends are reported below), which may destroy the scope.
    if (destroyed_by([&] { failed_(this); })) return;
    --busy_;
  }
  if (running_ == 0) idle_(this);  // may destroy *this
}

task_group::task_group(detail::site where) noexcept : detail::scope_core(&on_idle, &on_failed), where_(where) {}

namespace {
std::string where(const detail::site& s) {
  return std::string(s.file) + ":" + std::to_string(s.line) + " (in `" + s.function + "`)";
}
}  // namespace

task_group::~task_group() {
  if (joiner_) {
    detail::fatal("quell: a task_group created at " + where(where_) +
                  " was destroyed while a task was waiting in its join(); only the joining task may end it");
  }
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

void task_group::on_idle(detail::scope_core* s) noexcept {
  auto* g = static_cast<task_group*>(s);
  if (std::coroutine_handle<> j = std::exchange(g->joiner_, {})) detail::resume(j);
}

void task_group::on_failed(detail::scope_core* s) noexcept {
  static_cast<task_group*>(s)->cancel_children(
      cancel_request{cancel_level::graceful, cancel_reason(cancel_kind::sibling_failed)});
}

}  // namespace quell
