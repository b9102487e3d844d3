// Random combinator trees for the sweep (tests/test_random_trees.cpp) and the fuzzer
// (fuzz/fuzz_random_trees.cpp): generate a tree from a stream of choices, build it as a task,
// sweep it, and shrink a failing tree to a small one that still fails.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
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
  enum kind { ready, sleep, never, throws, race, join, scope, hook, shield, deadline, cleanup } k;
  int value = 0;
  quell::duration d{};
  std::vector<node> kids;

  std::string describe() const {
    static const char* names[] = {"ready", "sleep", "never",  "throws",   "race",   "join",
                                  "scope", "hook",  "shield", "deadline", "cleanup"};
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
  const int leafy = depth >= 4 ? 4 : 11;
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

struct run_state {
  ledger book;
  int next_id = 0;
};

task<int> build(const node& n, run_state& st) {
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
      throw std::runtime_error("leaf failed");
    case node::race:
      co_return co_await quell::race(build(n.kids[0], st), build(n.kids[1], st));
    case node::join: {
      int a = 0, b = 0;
      std::tie(a, b) = co_await quell::join(build(n.kids[0], st), build(n.kids[1], st));
      co_return a + b;
    }
    case node::scope:
      co_return co_await quell::with_scope([&](quell::scope& s) -> task<int> {
        auto h = s.spawn(build(n.kids[0], st));
        int b = co_await build(n.kids[1], st);
        co_return b + co_await h;
      });
    case node::hook: {
      const std::string id = "hook " + std::to_string(st.next_id++);
      auto h = [&st, id, d = n.d]() -> task<> {  // named: g++ 12 (docs/decisions.md)
        ledger::hold running(st.book, id);       // a second run would be reported
        co_await quell::sleep_for(d);
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


// Sweeps `tree` (graceful and forced, at every suspension point); throws sweep_failure.
quell::testing::sweep_report sweep_tree(const node& tree) {
  std::unique_ptr<run_state> st;
  return quell::testing::cancel_sweep(
      [&](quell::virtual_clock&) -> task<> {
        st = std::make_unique<run_state>();
        return [](const node& t, run_state& s) -> task<> {
          try {
            co_await quell::move_on_after(100ms, build(t, s));  // "never" leaves end here
          } catch (const std::runtime_error&) {
            // a leaf failed: an allowed outcome
          }
        }(tree, *st);
      },
      [&](const quell::testing::sweep_point&) { st->book.expect_balanced(); });
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
        node saved = *n;
        *n = c;
        if (fails(tree)) {
          smaller = true;
          break;
        }
        *n = saved;
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
