// docs/guide/04-io-and-testing.md: testing your own code with cancel_sweep.
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>

#include "guide.hpp"
#include "quell/testing.hpp"

// [guide:code-under-test]
class connection_pool {
 public:
  int take() { return ++in_use_; }
  void give_back(int) { --in_use_; }
  int in_use() const { return in_use_; }

 private:
  int in_use_ = 0;
};

// Version 1: gives the connection back as plain code after the query.
quell::task<> query_v1(connection_pool& pool) {
  int c = pool.take();
  co_await quell::sleep_for(10ms);  // the query
  pool.give_back(c);
}

// Version 2: gives it back in a cleanup, on every exit.
quell::task<> query_v2(connection_pool& pool) {
  int c = pool.take();
  auto give_back = [&pool, c] { pool.give_back(c); };
  co_await quell::defer(give_back);
  co_await quell::sleep_for(10ms);  // the query
}
// [/guide:code-under-test]

// [guide:sweep]
using query_fn = quell::task<> (*)(connection_pool&);

quell::task<> two_queries(connection_pool& pool, query_fn query) {
  co_await quell::join(query(pool), query(pool));  // two at once, on one pool
}

void sweep(const char* name, query_fn query) {
  std::unique_ptr<connection_pool> pool;
  auto make = [&](quell::virtual_clock&) {
    pool = std::make_unique<connection_pool>();  // a fresh pool for every run
    return two_queries(*pool, query);
  };
  auto check = [&](const quell::testing::sweep_point&) {
    if (pool->in_use() != 0) throw std::logic_error(std::to_string(pool->in_use()) + " connection(s) not given back");
  };
  try {
    quell::testing::sweep_report r = quell::testing::cancel_sweep(make, check);
    std::cout << name << ": passed (" << r.points << " suspension points, " << r.completions << " completion windows, "
              << r.runs << " runs)\n";
  } catch (const quell::testing::sweep_failure& e) {
    std::cout << name << ": failed: " << e.what() << "\n";
  }
}

int main() {
  sweep("query_v1", query_v1);
  sweep("query_v2", query_v2);
}
// [/guide:sweep]
