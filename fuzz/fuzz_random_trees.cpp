// libFuzzer target: the fuzzer's bytes choose a combinator tree (tests/support/random_tree.hpp),
// which is swept by cancel_sweep, gracefully and forcibly at every suspension point, against the
// same oracle as tests/core/test_random_trees.cpp. A failure prints the tree and a shrunk tree that
// still fails, then aborts so libFuzzer keeps the input.
//
//   cmake -B build/fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DQUELL_BUILD_FUZZ=ON \
//         -DQUELL_SANITIZE=address,undefined && cmake --build build/fuzz --target quell_fuzz_trees
//   build/fuzz/fuzz/quell_fuzz_trees -max_total_time=600      # a longer local run
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "support/random_tree.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace quell::test::trees;
  std::size_t at = 0;
  const node tree = generate([&]() -> unsigned { return at < size ? data[at++] : 0u; }, 0);
  try {
    sweep_tree(tree);
  } catch (const quell::testing::sweep_failure& e) {
    std::fprintf(stderr, "tree: %s\n%s\nshrunk to: %s\n", tree.describe().c_str(), e.what(),
                 shrink(tree).describe().c_str());
    std::abort();
  }
  return 0;
}
