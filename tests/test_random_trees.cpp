// Randomized combinator trees: a seeded generator builds trees of race / join / with_scope /
// on_cancel / shield / timeout / defer over leaves (ready, timer, never, throws after a while),
// and each tree is swept by cancel_sweep: cancelled gracefully and forcibly at every suspension
// point. The oracle: the executor always finishes with no task left (nothing unowned, nothing
// stuck), every hook and every async cleanup that started ran exactly once and its frame ended,
// and every registered cleanup started. A failing seed prints its tree, shrunk to a small one
// that still fails. fuzz/fuzz_random_trees.cpp runs the same oracle under libFuzzer.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>

#include "support/random_tree.hpp"

using namespace quell::test::trees;

TEST(RandomTrees, EveryTreeCancelledAtEverySuspensionPointKeepsTheModelsRules) {
  constexpr int seeds = 3000;
  std::uint64_t runs = 0, points = 0;
  for (int seed = 1; seed <= seeds; ++seed) {
    std::mt19937 rng(static_cast<unsigned>(seed));
    const node tree = generate([&] { return static_cast<unsigned>(rng()); }, 0);
    try {
      auto report = sweep_tree(tree);
      runs += report.runs;
      points += report.points;
    } catch (const quell::testing::sweep_failure& e) {
      ADD_FAILURE() << "seed " << seed << ", tree " << tree.describe() << "\n"
                    << e.what() << "\nshrunk to: " << shrink(tree).describe();
      break;
    }
  }
  std::printf("[ trees    ] %d seeds, %llu suspension points, %llu runs\n", seeds,
              static_cast<unsigned long long>(points), static_cast<unsigned long long>(runs));
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
