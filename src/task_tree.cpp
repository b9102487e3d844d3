// The task tree (quell/task_tree.hpp): a snapshot of each core's live tasks, joined across cores,
// and its text and JSON forms.
#include "quell/task_tree.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "quell/detail/cleanup.hpp"
#include "quell/detail/core_group.hpp"
#include "quell/detail/task_tree_build.hpp"
#include "quell/executor.hpp"
#include "quell/leaves.hpp"
#include "quell/runtime.hpp"

namespace quell {

std::string_view to_string(task_state s) noexcept {
  switch (s) {
    case task_state::running:
      return "running";
    case task_state::suspended:
      return "suspended";
    case task_state::cancelling:
      return "cancelling";
    case task_state::in_cleanup:
      return "in cleanup";
  }
  return "?";
}

namespace detail {

namespace {

const task_record* task_above(const context_node* n) noexcept {
  for (; n; n = n->parent) {
    if (n->what == context_node::kind::task) return static_cast<const task_record*>(n);
  }
  return nullptr;
}

const promise_base& promise_of(const task_record* t) noexcept { return static_cast<const promise_base&>(*t); }

bool live(const task_record* t) noexcept { return promise_of(t).state == promise_base::phase::running; }

// The effective deadline of a task's body, its own request aside: the earliest deadline up to
// the first shield, whose armed bound counts too.
time_point deadline_of(const task_record* t) noexcept {
  time_point d = time_point::max();
  for (const context_node* n = t->parent; n; n = n->parent) {
    if (n->what == context_node::kind::deadline) {
      d = std::min(d, static_cast<const context_frame*>(n)->deadline);
    } else if (n->what == context_node::kind::shield) {
      return std::min(d, static_cast<const context_frame*>(n)->deadline);
    }
  }
  return d;
}

const char* frame_name(context_node::tag t) noexcept {
  switch (t) {
    case context_node::tag::none:
      return nullptr;
    case context_node::tag::move_on_after:
      return "move_on_after";
    case context_node::tag::move_on_at:
      return "move_on_at";
    case context_node::tag::timeout:
      return "timeout";
    case context_node::tag::with_deadline:
      return "with_deadline";
    case context_node::tag::on_cancel_hook:
      return "on_cancel hook";
    case context_node::tag::bounded_shield:
      return "shield";
    case context_node::tag::bounded_cleanup:
      return "cleanup";
  }
  return nullptr;
}

task_tree::node describe(const task_record* t, unsigned core, time_point now) {
  const promise_base& p = promise_of(t);
  task_tree::node n;
  n.function = t->where.function;
  n.file = t->where.file;
  n.line = t->where.line;
  n.core = core;
  if (p.cleanup && p.cleanup->running()) {
    n.state = task_state::in_cleanup;
    n.waits_on = "its cleanup";
  } else if (p.awaited_task && !promise_of(p.awaited_task).continuation) {
    // Inside the call that runs its child inline (the child has not suspended yet): on the stack.
    n.state = task_state::running;
    n.waits_on = std::string("`") + p.awaited_task->where.function + "`";
  } else if (p.waiting()) {
    n.state = p.request.level != cancel_level::none ? task_state::cancelling : task_state::suspended;
    if (p.awaited_task) {
      n.waits_on = std::string("`") + p.awaited_task->where.function + "`";
    } else {
      wait_note w;
      p.awaitee->describe(w);
      n.waits_on = std::move(w.what);
      if (w.until != time_point::max()) n.wait_left = w.until - now;
    }
  } else if (p.at_yield) {
    n.state = task_state::suspended;
    n.waits_on = "its consumer (at co_yield)";
  } else {
    n.state = task_state::running;
  }
  if (p.request.level != cancel_level::none) {
    task_tree::cancel_info c{p.request.level, p.request.reason.describe(), std::nullopt};
    if (t->requested_at != time_point::min()) c.age = now - t->requested_at;
    n.cancel = std::move(c);
  }
  for (const context_node* f = t->parent; f && f->what != context_node::kind::task; f = f->parent) {
    if (f->what == context_node::kind::task) break;
    const auto* fr = static_cast<const context_frame*>(f);
    const char* name = frame_name(fr->label);
    if (!name) continue;
    task_tree::frame out{name, std::nullopt, std::nullopt};
    if (fr->deadline != time_point::max()) out.left = fr->deadline - now;
    if (fr->label == context_node::tag::bounded_shield || fr->label == context_node::tag::bounded_cleanup) {
      const duration b = static_cast<const bounded_frame*>(fr)->bound;
      if (b != duration::max()) out.bound = b;
    }
    n.frames.push_back(std::move(out));
  }
  if (const time_point d = deadline_of(t); d != time_point::max()) n.deadline_left = d - now;
  return n;
}

std::vector<const void*> wait_links_of(const task_record* t) {
  const promise_base& p = promise_of(t);
  if (!p.waiting() || p.awaited_task) return {};
  wait_note w;
  p.awaitee->describe(w);
  return std::move(w.links);
}

const void* origin_of(const task_record* t) noexcept {
  const context_node* top = nullptr;
  for (const context_node* n = t->parent; n; n = n->parent) top = n;
  return top;
}

}  // namespace

core_part snapshot(const scheduler& s, const context_node* running) {
  const time_point now = s.timers().clock().now();
  std::vector<const task_record*> order;
  std::unordered_map<const task_record*, std::size_t> index;
  auto include = [&](const task_record* t) {
    std::vector<const task_record*> chain;
    for (const task_record* x = t; x && !index.count(x); x = task_above(x->parent)) chain.push_back(x);
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
      if (!live(*it)) continue;
      index.emplace(*it, order.size());
      order.push_back(*it);
    }
  };
  if (const task_record* r = task_above(running)) include(r);
  s.for_each_registered([&](const task_record* t) {
    if (live(t)) include(t);
  });

  // Children are attached innermost first, so each subtree is complete when it moves.
  std::vector<raw_task> nodes(order.size());
  std::vector<std::ptrdiff_t> parent(order.size(), -1);
  for (std::size_t i = 0; i < order.size(); ++i) {
    nodes[i].n = describe(order[i], s.core_index, now);
    nodes[i].wait_links = wait_links_of(order[i]);
    for (const task_record* a = task_above(order[i]->parent); a; a = task_above(a->parent)) {
      if (auto it = index.find(a); it != index.end()) {
        parent[i] = static_cast<std::ptrdiff_t>(it->second);
        break;
      }
    }
    if (parent[i] < 0) nodes[i].origin = origin_of(order[i]);
  }
  // A parent is always included before its descendants, so walking backwards moves each node
  // after all of its own children have been moved into it.
  std::vector<std::vector<std::size_t>> kids(order.size());
  for (std::size_t i = 0; i < order.size(); ++i) {
    if (parent[i] >= 0) kids[static_cast<std::size_t>(parent[i])].push_back(i);
  }
  for (std::size_t i = order.size(); i-- > 0;) {
    for (std::size_t k : kids[i]) nodes[i].kids.push_back(std::move(nodes[k]));
  }
  core_part out;
  out.core = s.core_index;
  for (std::size_t i = 0; i < order.size(); ++i) {
    if (parent[i] < 0) out.roots.push_back(std::move(nodes[i]));
  }
  return out;
}

core_part snapshot_here() {
  scheduler* s = tls.current;
  if (!s) throw std::logic_error("quell: a task tree is taken on an executor's thread, inside it");
  return snapshot(*s, tls.context);
}

namespace {
// Hangs `r` under the task in `t`'s subtree (t included) that awaits r's origin through on().
bool attach(raw_task& t, raw_task& r) {
  if (std::find(t.wait_links.begin(), t.wait_links.end(), r.origin) != t.wait_links.end()) {
    t.kids.push_back(std::move(r));
    return true;
  }
  for (raw_task& k : t.kids) {
    if (attach(k, r)) return true;
  }
  return false;
}

task_tree::node finish(raw_task&& r) {
  task_tree::node n = std::move(r.n);
  for (raw_task& k : r.kids) n.children.push_back(finish(std::move(k)));
  return n;
}
}  // namespace

task_tree assemble(std::vector<core_part> parts, unsigned cores) {
  std::sort(parts.begin(), parts.end(), [](const core_part& a, const core_part& b) { return a.core < b.core; });
  std::vector<raw_task> all;
  for (core_part& p : parts) {
    for (raw_task& r : p.roots) all.push_back(std::move(r));
  }
  // A root on one core whose frame a task on another core awaits hangs under that task. Each
  // pass moves the roots whose host is found; a chain across several cores takes a pass per
  // hop. A root whose host is not in the snapshot (a core that did not answer) stays a root.
  std::vector<bool> gone(all.size(), false);
  for (bool moved = true; moved;) {
    moved = false;
    for (std::size_t i = 0; i < all.size(); ++i) {
      if (gone[i] || !all[i].origin) continue;
      raw_task r = std::move(all[i]);
      bool placed = false;
      for (std::size_t j = 0; j < all.size() && !placed; ++j) {
        if (j != i && !gone[j]) placed = attach(all[j], r);
      }
      if (placed) {
        gone[i] = moved = true;
      } else {
        all[i] = std::move(r);
      }
    }
  }
  task_tree t;
  t.cores = cores;
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (!gone[i]) t.roots.push_back(finish(std::move(all[i])));
  }
  return t;
}

}  // namespace detail

// ----------------------------------------------------------------------------------------------
// Rendering

namespace {

std::string human(duration d) {
  using namespace std::chrono;
  const bool neg = d < duration::zero();
  const auto a = neg ? -d : d;
  std::string s;
  if (a < milliseconds(1)) {
    s = std::to_string(duration_cast<microseconds>(a).count()) + " us";
  } else if (a < seconds(10)) {
    s = std::to_string(duration_cast<milliseconds>(a).count()) + " ms";
  } else {
    s = std::to_string(duration_cast<seconds>(a).count()) + " s";
  }
  return neg ? "-" + s : s;
}

std::string base_name(const std::string& f) {
  const std::size_t slash = f.find_last_of('/');
  return slash == std::string::npos ? f : f.substr(slash + 1);
}

std::string level_name(cancel_level l) {
  return l == cancel_level::forced ? "forced" : l == cancel_level::graceful ? "graceful" : "none";
}

void text(const task_tree::node& n, int depth, bool show_core, std::string& out) {
  const std::string pad(static_cast<std::size_t>(depth) * 2, ' ');
  out += pad + "- " + n.function + " (" + base_name(n.file) + ":" + std::to_string(n.line) + ")";
  if (show_core) out += " on core " + std::to_string(n.core);
  out += " ";
  out += to_string(n.state);
  if (!n.waits_on.empty()) {
    out += ", waiting on " + n.waits_on;
    if (n.wait_left) out += " (" + human(*n.wait_left) + " left)";
  }
  out += "\n";
  const std::string attr = pad + "    ";
  if (n.cancel) {
    out += attr + "cancel: " + level_name(n.cancel->level) + " (" + n.cancel->reason + ")";
    if (n.cancel->age) out += ", " + human(*n.cancel->age) + " ago";
    out += "\n";
  }
  if (!n.frames.empty()) {
    out += attr + "under: ";
    for (std::size_t i = 0; i < n.frames.size(); ++i) {
      const task_tree::frame& f = n.frames[i];
      if (i) out += ", ";
      out += f.what;
      std::string paren;
      if (f.bound)
        paren = "bound " + human(*f.bound) + (f.left ? ", " + human(*f.left) + " left" : ", not armed");
      else if (f.left)
        paren = human(*f.left) + " left";
      if (!paren.empty()) out += " (" + paren + ")";
    }
    out += "\n";
  }
  if (n.deadline_left) out += attr + "deadline: " + human(*n.deadline_left) + " left\n";
  for (const task_tree::node& c : n.children) text(c, depth + 1, show_core, out);
}

void json_string(const std::string& s, std::string& out) {
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

std::string ns(duration d) { return std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()); }

void json(const task_tree::node& n, std::string& out) {
  out += "{\"function\":";
  json_string(n.function, out);
  out += ",\"file\":";
  json_string(n.file, out);
  out += ",\"line\":" + std::to_string(n.line) + ",\"core\":" + std::to_string(n.core) + ",\"state\":";
  json_string(std::string(to_string(n.state)), out);
  if (!n.waits_on.empty()) {
    out += ",\"waits_on\":";
    json_string(n.waits_on, out);
  }
  if (n.wait_left) out += ",\"wait_left_ns\":" + ns(*n.wait_left);
  if (n.cancel) {
    out += ",\"cancel\":{\"level\":";
    json_string(level_name(n.cancel->level), out);
    out += ",\"reason\":";
    json_string(n.cancel->reason, out);
    if (n.cancel->age) out += ",\"age_ns\":" + ns(*n.cancel->age);
    out += "}";
  }
  if (!n.frames.empty()) {
    out += ",\"frames\":[";
    for (std::size_t i = 0; i < n.frames.size(); ++i) {
      const task_tree::frame& f = n.frames[i];
      if (i) out += ",";
      out += "{\"what\":";
      json_string(f.what, out);
      if (f.left) out += ",\"left_ns\":" + ns(*f.left);
      if (f.bound) out += ",\"bound_ns\":" + ns(*f.bound);
      out += "}";
    }
    out += "]";
  }
  if (n.deadline_left) out += ",\"deadline_left_ns\":" + ns(*n.deadline_left);
  out += ",\"children\":[";
  for (std::size_t i = 0; i < n.children.size(); ++i) {
    if (i) out += ",";
    json(n.children[i], out);
  }
  out += "]}";
}

std::size_t count(const std::vector<task_tree::node>& v) {
  std::size_t c = v.size();
  for (const task_tree::node& n : v) c += count(n.children);
  return c;
}

}  // namespace

std::size_t task_tree::size() const noexcept { return count(roots); }

std::string task_tree::to_string() const {
  std::string out;
  if (roots.empty()) return "(no live task)\n";
  for (const node& n : roots) text(n, 0, cores > 1, out);
  return out;
}

std::string task_tree::to_json() const {
  std::string out = "{\"cores\":" + std::to_string(cores) + ",\"tasks\":[";
  for (std::size_t i = 0; i < roots.size(); ++i) {
    if (i) out += ",";
    json(roots[i], out);
  }
  out += "]}";
  return out;
}

task_tree task_tree_here() {
  std::vector<detail::core_part> parts;
  parts.push_back(detail::snapshot_here());
  return detail::assemble(std::move(parts), 1);
}

task<task_tree> current_task_tree() {
  auto part = [] { return ready(detail::snapshot_here()); };
  std::vector<detail::core_part> parts = co_await on_each_core(part);
  const auto n = static_cast<unsigned>(parts.size());
  co_return detail::assemble(std::move(parts), n);
}

}  // namespace quell

namespace quell::detail {

quell::task_tree executor_core::task_tree() const {
  std::vector<core_part> parts;
  parts.push_back(snapshot(sched_, tls.current == &sched_ ? tls.context : nullptr));
  return assemble(std::move(parts), 1);
}

}  // namespace quell::detail

namespace quell::detail {

// Each core's part, gathered through the cores' mailboxes (the one cross-core message path):
// whoever adds the last part finishes the tree, unless someone finished it early.
struct tree_collector {
  std::mutex m;
  std::condition_variable cv;
  std::vector<core_part> parts;
  unsigned remaining = 0;
  unsigned cores = 0;
  bool finished = false;
  std::function<void(task_tree, std::string)> done;  // null: a thread waits on cv instead

  void add(core_part* p) {
    std::function<void(task_tree, std::string)> finish;
    std::vector<core_part> all;
    {
      std::lock_guard<std::mutex> lock(m);
      if (p) parts.push_back(std::move(*p));
      if (--remaining != 0) return;
      if (!done) {
        cv.notify_all();
        return;
      }
      if (finished) return;
      finished = true;
      finish = std::move(done);
      all = std::move(parts);
    }
    finish(assemble(std::move(all), cores), {});
  }

  // Finishes with the parts that have come; the note names the cores that have not answered.
  void finish_now() {
    std::function<void(task_tree, std::string)> finish;
    std::vector<core_part> all;
    std::string missing;
    {
      std::lock_guard<std::mutex> lock(m);
      if (finished || !done) return;
      finished = true;
      finish = std::move(done);
      all = parts;
      for (unsigned i = 0; i < cores; ++i) {
        if (std::none_of(all.begin(), all.end(), [&](const core_part& c) { return c.core == i; }))
          missing += (missing.empty() ? "" : ", ") + std::to_string(i);
      }
    }
    finish(assemble(std::move(all), cores), missing);
  }
};

namespace {
struct tree_request final : core_message {
  std::shared_ptr<tree_collector> c;
  tree_request() {
    run = [](core_message* m) noexcept {
      std::unique_ptr<tree_request> self(static_cast<tree_request*>(m));
      try {
        core_part p = snapshot_here();
        self->c->add(&p);
      } catch (...) {
        self->c->add(nullptr);
      }
    };
    drop = [](core_message* m) noexcept {
      std::unique_ptr<tree_request> self(static_cast<tree_request*>(m));
      self->c->add(nullptr);  // the core is gone: its part is missing
    };
  }
};

// Asks every running core but `skip`; returns how many were asked.
unsigned ask_cores(core_group& g, unsigned skip, const std::shared_ptr<tree_collector>& c) {
  unsigned asked = 0;
  for (unsigned i = 0; i < g.size(); ++i) {
    if (i == skip || !g.cores[i].load(std::memory_order_acquire)) continue;
    auto* r = new tree_request;
    r->c = c;
    g.boxes[i]->push(r);
    ++asked;
  }
  return asked;
}
}  // namespace

std::shared_ptr<tree_collector> dump_task_tree(executor_core& core, std::function<void(const std::string&)> out) {
  auto c = std::make_shared<tree_collector>();
  c->done = [out = std::move(out)](task_tree t, std::string missing) {
    std::string text = t.to_string();
    if (!missing.empty()) {
      text += "(core" + std::string(missing.find(',') == std::string::npos ? " " : "s ") + missing +
              " did not answer in time: busy in a long resume, see the stall detector)\n";
    }
    out(text);
  };
  core_group* g = core.group();
  c->cores = g ? g->size() : 1;
  {
    std::lock_guard<std::mutex> lock(c->m);  // the other cores may answer at once
    c->remaining = 1 + (g ? ask_cores(*g, core.core_index(), c) : 0);
  }
  core_part mine = snapshot(core.sched(), tls.current == &core.sched() ? tls.context : nullptr);
  c->add(&mine);
  return c;
}

void dump_task_tree_now(const std::shared_ptr<tree_collector>& c) {
  if (c) c->finish_now();
}

task_tree group_task_tree(core_group& g, duration timeout) {
  for (unsigned i = 0; i < g.size(); ++i) {
    if (tls.current && g.cores[i].load(std::memory_order_acquire) == tls.current->core) {
      throw std::logic_error(
          "quell: runtime::task_tree() called on one of the runtime's own cores (it would wait for itself): "
          "use co_await quell::current_task_tree() there");
    }
  }
  auto c = std::make_shared<tree_collector>();
  c->cores = g.size();
  std::unique_lock<std::mutex> lock(c->m);  // answers wait until `remaining` is set
  c->remaining = ask_cores(g, g.size(), c);
  if (c->remaining == 0) return task_tree{{}, g.size()};  // not running
  c->cv.wait_for(lock, timeout, [&] { return c->remaining == 0; });
  // A core that has not answered (busy in a long resume, or not running) is left out.
  std::vector<core_part> parts = c->parts;
  lock.unlock();
  return assemble(std::move(parts), g.size());
}

}  // namespace quell::detail
