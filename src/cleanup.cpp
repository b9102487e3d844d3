#include "quell/detail/cleanup.hpp"

#include "quell/errors.hpp"
#include "quell/task.hpp"
#include "quell/time.hpp"

namespace quell::detail {

cleanup_stack::cleanup_stack(task_record& owner, finished_fn finished) noexcept
    : resume_target(&on_posted), owner_(owner), finished_(finished), alarm_(this, &on_alarm) {
  // Cleanups run shielded, under the task: cancel_reason() inside them tells why it ends.
  node_.parent = &owner;
  node_.request = &owner.request;
}

void promise_base::release_rare() noexcept {
  unlink();  // it parked once: leave the registry of suspended tasks
  delete std::exchange(cleanup, nullptr);
}

cleanup_stack::~cleanup_stack() {
  while (top_) delete std::exchange(top_, top_->next);
  delete current_;
}

void cleanup_stack::on_posted(void* self) noexcept {
  static_cast<cleanup_stack*>(static_cast<resume_target*>(self))->step();
}

void cleanup_stack::step() noexcept {
  while (top_) {
    current_ = std::exchange(top_, top_->next);
    current_done_ = false;
    node_.deadline = time_point::max();
    node_.bound = current_->bounded ? current_->bound : duration::max();
    if (current_->bounded) {
      node_.deadline = add_saturating(now(), current_->bound);
      alarm_.arm_at(node_.deadline);
    }
    bool sync;
    {
      context_guard g(&node_);
      sync = current_->start(this, &on_cleanup_done);
      if (!sync && owner_.request.forced()) current_->cancel(owner_.request);
    }
    if (!sync) return;  // on_cleanup_done continues
    current_done_ = true;
    if (!finish_current()) return;  // on_alarm continues
  }
  finished_(&owner_);  // may destroy *this
}

// Collects the finished cleanup's error. False if its bound's timer call is still queued.
bool cleanup_stack::finish_current() noexcept {
  alarm_.stop();
  if (alarm_.pending()) return false;
  if (std::exception_ptr e = current_->error()) {
    if (!error) {
      error = std::move(e);
    } else {
      attach_error(error, std::move(e));
    }
  }
  delete std::exchange(current_, nullptr);
  return true;
}

void cleanup_stack::on_cleanup_done(void* self, driver_base*) noexcept {
  auto* s = static_cast<cleanup_stack*>(self);
  s->current_done_ = true;
  if (s->finish_current()) s->step();
}

void cleanup_stack::on_alarm(void* self) noexcept {
  auto* s = static_cast<cleanup_stack*>(self);
  if (s->current_done_) {
    if (s->finish_current()) s->step();
    return;
  }
  s->current_->cancel(cancel_request{cancel_level::graceful, cancel_reason(cancel_kind::deadline)});
}

void cleanup_stack::request(const cancel_request& r) noexcept {
  if (r.forced() && current_ && !current_done_) current_->cancel(r);
}

}  // namespace quell::detail

#include <stdexcept>

#include "quell/defer.hpp"

namespace quell::detail {

promise_base& current_task_for_defer() {
  context_node* n = tls.context;
  if (!n || n->what != context_node::kind::task) {
    throw std::logic_error("quell: co_await quell::defer(...) must be awaited in the body of a quell task");
  }
  return *static_cast<promise_base*>(static_cast<task_record*>(n));
}

}  // namespace quell::detail
