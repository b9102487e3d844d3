// Randomized combinator trees: a seeded generator builds trees of race / join / with_scope /
// on_cancel / shield / timeout / defer over leaves (ready, timer, never, throws after a while),
// and each tree is swept by cancel_sweep: cancelled gracefully and forcibly at every suspension
// point. The oracle (verify() in support/random_tree.hpp) checks after every run: the executor
// finished with no task left (nothing unowned, nothing stuck); every node ended exactly one way;
// every hook and async cleanup that started ran exactly once and its frame ended; a hook ran
// exactly when its started operation threw or was cancelled, outside-in for cancels and
// inside-out for exceptions; completion wins (a returned value is delivered through on_cancel,
// shield, defer, deadlines, join and race, up to the caller). A failing seed prints its tree,
// shrunk to a small one that still fails. fuzz/fuzz_random_trees.cpp runs the same oracle under
// libFuzzer.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>

#include "support/random_tree.hpp"

using namespace quell::test::trees;

TEST(RandomTrees, EveryTreeCancelledAtEverySuspensionPointKeepsTheModelsRules) {
  constexpr int seeds = 10000;
  std::uint64_t runs = 0, points = 0, windows = 0;
  for (int seed = 1; seed <= seeds; ++seed) {
    std::mt19937 rng(static_cast<unsigned>(seed));
    const node tree = generate([&] { return static_cast<unsigned>(rng()); }, 0);
    try {
      auto report = sweep_tree(tree);
      runs += report.runs;
      points += report.points;
      windows += report.completions;
    } catch (const quell::testing::sweep_failure& e) {
      ADD_FAILURE() << "seed " << seed << ", tree " << tree.describe() << "\n"
                    << e.what() << "\nshrunk to: " << shrink(tree).describe();
      break;
    }
  }
  std::printf("[ trees    ] %d seeds, %llu suspension points, %llu completion windows, %llu runs\n", seeds,
              static_cast<unsigned long long>(points), static_cast<unsigned long long>(windows),
              static_cast<unsigned long long>(runs));
}

TEST(RandomTrees, TheShrinkerKeepsAFailureAndDropsWhatDoesNotMatter) {
  // A stand-in failure: any tree holding a "throws" leaf under a "hook" fails this predicate.
  std::function<bool(const node&)> bad = [&](const node& n) {
    if (n.k == node::hook && !n.kids.empty() && n.kids[0].k == node::throws) return true;
    for (const node& k : n.kids)
      if (bad(k)) return true;
    return false;
  };
  node tree{node::join};
  tree.kids = {node{node::race}, node{node::cleanup}};
  tree.kids[0].kids = {node{node::sleep}, node{node::ready}};
  node h{node::hook};
  h.kids = {node{node::throws}};
  tree.kids[1].kids = {h};
  const node small = shrink_with(tree, bad);
  EXPECT_EQ(small.describe(), "hook[throws]");
}

// The oracle itself can fail: runs recorded by hand that break each ordering rule are reported.
TEST(RandomTrees, TheOracleReportsAnInnerHookThatRanBeforeTheOuterHookFinished) {
  node tree{node::hook};
  tree.kids = {node{node::hook}};
  tree.kids[0].kids = {node{node::never}};
  run_state st;
  for (const node* n : {&tree, &tree.kids[0], &tree.kids[0].kids[0]})
    st.out[n] = outcome{true, outcome::cancelled, 0, ""};
  st.hooks[&tree] = hook_run{true, false, "", 2, 4};           // the outer hook ran from 2 to 4
  st.hooks[&tree.kids[0]] = hook_run{true, false, "", 3, 5};   // the inner one started at 3
  EXPECT_THROW(verify(tree, st), std::logic_error);
  st.hooks[&tree.kids[0]] = hook_run{true, false, "", 5, 6};   // outside-in: fine
  EXPECT_NO_THROW(verify(tree, st));
}

TEST(RandomTrees, TheOracleReportsAnOuterHookThatRanBeforeTheInnerHookForTheSameException) {
  node tree{node::hook};
  tree.kids = {node{node::hook}};
  tree.kids[0].kids = {node{node::throws}};
  run_state st;
  for (const node* n : {&tree, &tree.kids[0], &tree.kids[0].kids[0]})
    st.out[n] = outcome{true, outcome::threw, 0, "leaf failed"};
  st.hooks[&tree] = hook_run{true, true, "leaf failed", 2, 4};
  st.hooks[&tree.kids[0]] = hook_run{true, true, "leaf failed", 3, 5};
  EXPECT_THROW(verify(tree, st), std::logic_error);
  st.hooks[&tree.kids[0]] = hook_run{true, true, "leaf failed", 1, 2};  // inside-out: fine
  EXPECT_NO_THROW(verify(tree, st));
}

TEST(RandomTrees, TheOracleReportsAValueThatWasNotDelivered) {
  node tree{node::shield};
  tree.kids = {node{node::sleep}};
  run_state st;
  st.out[&tree] = outcome{true, outcome::cancelled, 0, ""};
  st.out[&tree.kids[0]] = outcome{true, outcome::returned, 7, ""};
  EXPECT_THROW(verify(tree, st), std::logic_error);
  st.out[&tree] = outcome{true, outcome::returned, 7, ""};
  st.root_saw_value = true;
  EXPECT_NO_THROW(verify(tree, st));
}
