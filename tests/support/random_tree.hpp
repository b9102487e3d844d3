// Random combinator trees for the sweep (tests/core/test_random_trees.cpp) and the fuzzer
// (fuzz/fuzz_random_trees.cpp): generate a tree from a stream of choices, build it as a task,
// sweep it, and shrink a failing tree to a small one that still fails.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "quell/quell.hpp"
#include "quell/testing.hpp"

namespace quell::test::trees {
// Internal linkage on purpose: clang 14's -fsanitize=function (part of UBSan) cannot emit the
// prologue of an inline (comdat) coroutine ("Cannot represent a difference across sections").
namespace {

using namespace std::chrono_literals;
using quell::task;
using quell::testing::ledger;


struct node {
  enum kind { ready, sleep, never, throws, race, join, scope, hook, shield, deadline, cleanup, any_of, join_settled } k;
  explicit node(kind kk) noexcept : k(kk) {}
  int value = 0;
  quell::duration d{};
  std::vector<node> kids;

  std::string describe() const {
    static const char* names[] = {"ready",  "sleep",    "never",   "throws", "race",        "join",  "scope",
                                  "hook",   "shield",   "deadline", "cleanup", "any_of", "join_settled"};
    std::string s = names[k];
    if (d != quell::duration{})
      s += "(" + std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + "ms)";
    if (!kids.empty()) {
      s += "[";
      for (std::size_t i = 0; i < kids.size(); ++i) s += (i ? ", " : "") + kids[i].describe();
      s += "]";
    }
    return s;
  }
};

// `next()` yields the choices (a seeded generator, or the fuzzer's bytes).
node generate(const std::function<unsigned()>& rng, int depth) {
  auto ms = [&](unsigned max) { return std::chrono::milliseconds(1 + rng() % max); };
  const int leafy = depth >= 4 ? 4 : 13;
  node n{static_cast<node::kind>(rng() % static_cast<unsigned>(leafy))};
  switch (n.k) {
    case node::ready:
      n.value = static_cast<int>(rng() % 10);
      break;
    case node::sleep:
    case node::throws:
      n.d = ms(8);
      break;
    case node::never:
      break;
    case node::race:
    case node::join:
    case node::scope:
    case node::any_of:
    case node::join_settled:
      n.kids = {generate(rng, depth + 1), generate(rng, depth + 1)};
      break;
    case node::hook:
    case node::shield:
    case node::deadline:
    case node::cleanup:
      n.d = ms(6);
      n.kids = {generate(rng, depth + 1)};
      break;
  }
  return n;
}

// What the oracle sees of one run: how every node ended and when every hook ran.
struct outcome {
  bool started = false;
  enum how_t { none, returned, threw, cancelled } how = none;
  int value = 0;
  std::string what;  // the exception's message: every "throws" leaf throws its own
};
struct hook_run {
  bool ran = false, by_exception = false;
  std::string what;                // the exception that triggered it
  std::uint64_t start = 0, end = 0;  // positions in the run's sequence of events
};

struct run_state {
  ledger book;
  int next_id = 0;
  std::uint64_t events = 0;
  std::map<const node*, outcome> out;  // std::map: references stay valid while it grows
  std::map<const node*, hook_run> hooks;
  std::vector<std::string> violations;
  bool root_saw_value = false;
};

task<int> build(const node& n, run_state& st);

task<int> build_body(const node& n, run_state& st) {
  switch (n.k) {
    case node::ready:
      co_return n.value;
    case node::sleep:
      co_await quell::sleep_for(n.d);
      co_return n.value;
    case node::never:
      co_await quell::pending();
      co_return 0;
    case node::throws:
      co_await quell::sleep_for(n.d);
      throw std::runtime_error("leaf " + std::to_string(reinterpret_cast<std::uintptr_t>(&n)) + " failed");
    case node::race:
      co_return co_await quell::race(build(n.kids[0], st), build(n.kids[1], st));
    case node::join: {
      int a = 0, b = 0;
      std::tie(a, b) = co_await quell::join(build(n.kids[0], st), build(n.kids[1], st));
      co_return a + b;
    }
    case node::any_of: {
      auto [a, b] = co_await quell::any_of(build(n.kids[0], st), build(n.kids[1], st));
      co_return a.value_or(0) + b.value_or(0);
    }
    case node::join_settled: {
      auto [a, b] = co_await quell::join_settled(build(n.kids[0], st), build(n.kids[1], st));
      co_return (a.has_value() ? a.value() : 0) + (b.has_value() ? b.value() : 0);
    }
    case node::scope:
      co_return co_await quell::with_scope([&](quell::scope& s) -> task<int> {
        auto h = s.spawn(build(n.kids[0], st));
        int b = co_await build(n.kids[1], st);
        co_return b + co_await h;
      });
    case node::hook: {
      const std::string id = "hook " + std::to_string(st.next_id++);
      auto h = [&st, id, self = &n]() -> task<> {  // named: g++ 12 (docs/decisions.md)
        ledger::hold running(st.book, id);         // a second run would be reported
        hook_run& me = st.hooks[self];
        const outcome& op = st.out[&self->kids[0]];
        me.ran = true;
        me.start = ++st.events;
        if (!op.started) st.violations.push_back(id + " ran although its operation never started");
        if (op.how == outcome::returned) st.violations.push_back(id + " ran after its operation returned a value");
        me.by_exception = op.how == outcome::threw;
        me.what = op.what;
        struct end_mark {
          hook_run& h;
          run_state& s;
          ~end_mark() { h.end = ++s.events; }
        } mark{me, st};
        co_await quell::sleep_for(self->d);
      };
      co_return co_await quell::on_cancel(build(n.kids[0], st), h);
    }
    case node::shield:
      co_return co_await quell::shield(build(n.kids[0], st), n.d);  // bounded: "never" must end
    case node::deadline:
      try {
        co_return co_await quell::timeout(n.d, build(n.kids[0], st));
      } catch (const quell::timed_out&) {
        co_return -1;
      }
    case node::cleanup: {
      const std::string id = "cleanup " + std::to_string(st.next_id++);
      st.book.acquire(id + " registered");
      auto c = [&st, id]() -> task<> {
        st.book.release(id + " registered");  // started exactly once
        ledger::hold running(st.book, id);    // and its frame ended
        co_await quell::sleep_for(1ms);
      };
      co_await quell::defer(c);
      co_return co_await build(n.kids[0], st);
    }
  }
  co_return 0;
}


// Every node runs inside this wrapper, which records how it ended (three outcomes, exactly one).
task<int> build(const node& n, run_state& st) {
  outcome& r = st.out[&n];
  r.started = true;
  struct end_mark {
    outcome& r;
    ~end_mark() {
      if (r.how == outcome::none) r.how = outcome::cancelled;  // ended without value or exception
    }
  } mark{r};
  try {
    const int v = co_await build_body(n, st);
    r.how = outcome::returned;
    r.value = v;
    co_return v;
  } catch (const std::exception& e) {
    r.how = outcome::threw;
    r.what = e.what();
    throw;
  }
}

bool cancel_source(const node& n) {
  return n.k == node::race || n.k == node::join || n.k == node::scope || n.k == node::deadline ||
         n.k == node::any_of;  // join_settled cancels nothing of its own
}

// The model's rules that a finished run must show (docs/model.md, "Completion wins" and on_cancel):
//  - every started node ended exactly one way;
//  - completion wins: a value that reached on_cancel, shield, defer or a deadline is delivered by
//    it, join delivers when both branches returned, race delivers one of the returned values when
//    no branch threw, any_of delivers every returned value when no branch threw, join_settled
//    never throws and delivers every returned value once a branch returned or threw, and the
//    root sees the tree's value;
//  - a hook runs when its started operation throws or is cancelled, and never for an operation
//    that never started or already returned a value;
//  - outside-in: a hook reached by a cancel that can only have come through an enclosing hook's
//    operation starts after that enclosing hook finished;
//  - inside-out: hooks run by the same exception run innermost first.
void verify_node(const node& n, run_state& st, std::vector<std::string>& bad) {
  const outcome& me = st.out[&n];
  const std::string name = n.describe();
  if (me.started && me.how == outcome::none) bad.push_back(name + " started and never ended");
  auto kid = [&](std::size_t i) -> const outcome& { return st.out[&n.kids[i]]; };
  switch (n.k) {
    case node::hook:
    case node::shield:
    case node::cleanup:
    case node::deadline:
      if (kid(0).how == outcome::returned && (me.how != outcome::returned || me.value != kid(0).value))
        bad.push_back(name + ": its operation returned " + std::to_string(kid(0).value) +
                      " but the value was not delivered (completion wins)");
      break;
    case node::join:
      if (kid(0).how == outcome::returned && kid(1).how == outcome::returned &&
          (me.how != outcome::returned || me.value != kid(0).value + kid(1).value))
        bad.push_back(name + ": both branches returned but join did not deliver their sum");
      break;
    case node::race:
      if ((kid(0).how == outcome::returned || kid(1).how == outcome::returned) &&
          kid(0).how != outcome::threw && kid(1).how != outcome::threw) {
        const bool one_of = (kid(0).how == outcome::returned && me.value == kid(0).value) ||
                            (kid(1).how == outcome::returned && me.value == kid(1).value);
        if (me.how != outcome::returned || !one_of)
          bad.push_back(name + ": a branch returned and none threw, but race did not deliver a returned value");
      }
      break;
    case node::any_of:
    case node::join_settled: {
      const bool threw = kid(0).how == outcome::threw || kid(1).how == outcome::threw;
      const bool returned = kid(0).how == outcome::returned || kid(1).how == outcome::returned;
      const int sum = (kid(0).how == outcome::returned ? kid(0).value : 0) +
                      (kid(1).how == outcome::returned ? kid(1).value : 0);
      if (n.k == node::join_settled && me.how == outcome::threw) bad.push_back(name + " threw");
      const bool must_deliver = n.k == node::any_of ? returned && !threw : returned || threw;
      if (must_deliver && (me.how != outcome::returned || me.value != sum))
        bad.push_back(name + ": every returned value (sum " + std::to_string(sum) + ") was not delivered");
      break;
    }
    default:
      break;
  }
  if (n.k == node::hook && kid(0).started && (kid(0).how == outcome::threw || kid(0).how == outcome::cancelled) &&
      !st.hooks[&n].ran)
    bad.push_back(name + ": its operation " + (kid(0).how == outcome::threw ? "threw" : "was cancelled") +
                  " but the hook never ran");
  if (n.k == node::hook && st.hooks[&n].ran) {
    const hook_run& outer = st.hooks[&n];
    // Hooks below this one that only a cancel passing through this hook's operation can reach.
    std::function<void(const node&)> walk = [&](const node& d) {
      if (cancel_source(d)) return;
      if (d.k == node::hook) {
        const hook_run& inner = st.hooks[&d];
        if (inner.ran && !inner.by_exception && (outer.by_exception || inner.start < outer.end))
          bad.push_back("outside-in: in " + name + " the inner " + d.describe() +
                        " ran for a cancel before the outer hook had finished");
        if (inner.ran && inner.by_exception && outer.by_exception && inner.what == outer.what &&
            inner.end > outer.start)
          bad.push_back("inside-out: in " + name + " the outer hook started before the inner " + d.describe() +
                        " had finished with the same exception");
      }
      for (const node& k : d.kids) walk(k);
    };
    for (const node& k : n.kids) walk(k);
  }
  for (const node& k : n.kids) verify_node(k, st, bad);
}

void verify(const node& tree, run_state& st) {
  std::vector<std::string> bad = st.violations;
  verify_node(tree, st, bad);
  if (st.out[&tree].how == outcome::returned && !st.root_saw_value)
    bad.push_back("the tree returned a value but its caller never saw it (completion wins)");
  if (bad.empty()) return;
  std::string all;
  for (const auto& b : bad) all += (all.empty() ? "" : "; ") + b;
  throw std::logic_error(all);
}

// Sweeps `tree` (graceful and forced, at every suspension point); throws sweep_failure.
quell::testing::sweep_report sweep_tree(const node& tree) {
  std::unique_ptr<run_state> st;
  return quell::testing::cancel_sweep(
      [&](quell::virtual_clock&) -> task<> {
        st = std::make_unique<run_state>();
        return [](const node& t, run_state& s) -> task<> {
          try {
            auto r = co_await quell::move_on_after(100ms, build(t, s));  // "never" leaves end here
            s.root_saw_value = r.has_value();
          } catch (const std::runtime_error&) {
            // a leaf failed: an allowed outcome
          }
        }(tree, *st);
      },
      [&](const quell::testing::sweep_point&) {
        st->book.expect_balanced();
        verify(tree, *st);
      });
}

bool sweep_fails(const node& tree) {
  try {
    sweep_tree(tree);
    return false;
  } catch (const quell::testing::sweep_failure&) {
    return true;
  }
}

// A smaller tree that still fails `fails`: repeatedly replaces a subtree by one of its children
// or by a ready leaf while the predicate keeps holding.
node shrink_with(node tree, const std::function<bool(const node&)>& fails) {
  bool smaller = true;
  while (smaller) {
    smaller = false;
    std::vector<node*> all;
    std::function<void(node&)> collect = [&](node& n) {
      all.push_back(&n);
      for (node& k : n.kids) collect(k);
    };
    collect(tree);
    for (node* n : all) {
      std::vector<node> candidates(n->kids.begin(), n->kids.end());
      if (n->k != node::ready) candidates.push_back(node{node::ready});
      for (node& c : candidates) {
        node saved = std::move(*n);  // moved, not copied: `all` points into its children
        *n = c;
        if (fails(tree)) {
          smaller = true;
          break;
        }
        *n = std::move(saved);
      }
      if (smaller) break;
    }
  }
  return tree;
}

// The same for the sweep's own failures.
node shrink(node tree) { return shrink_with(std::move(tree), &sweep_fails); }

}  // namespace
}  // namespace quell::test::trees
