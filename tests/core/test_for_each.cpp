// for_each(range, limit, fn): the limit is never exceeded; the first error and the caller's
// cancel stop new items and wait for those in flight.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "quell/for_each.hpp"
#include "quell/quell.hpp"
#include "quell/testing.hpp"
#include "support/log.hpp"

using namespace std::chrono_literals;
using quell::executor;
using quell::sleep_for;
using quell::task;
using quell::virtual_clock;
using quell::testing::ledger;

namespace {
// A range that makes its values on the fly, like std::views::iota (which clang 14 cannot compile
// against libstdc++ 12).
struct counting {
  struct iterator {
    int i;
    int operator*() const { return i; }
    iterator& operator++() { ++i; return *this; }
    bool operator!=(const iterator& o) const { return i != o.i; }
  };
  int first, last;
  counting(int f, int l) : first(f), last(l) {}
  iterator begin() const { return {first}; }
  iterator end() const { return {last}; }
};
struct boom : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Counts what runs at once.
struct gauge {
  int now = 0, most = 0, started = 0, ended = 0;
  struct in {
    gauge& g;
    explicit in(gauge& x) : g(x) {
      ++g.started;
      g.most = std::max(g.most, ++g.now);
    }
    ~in() {
      --g.now;
      ++g.ended;
    }
  };
};
}  // namespace

TEST(ForEach, NeverMoreThanTheLimitInFlightAndEveryItemRunsOnce) {
  virtual_clock clock;
  gauge g;
  std::vector<int> seen;
  auto body = [&]() -> task<> {
    std::vector<int> items(20);
    for (int i = 0; i < 20; ++i) items[i] = i;
    auto item = [&](int& i) -> task<> {
      gauge::in running(g);
      co_await sleep_for(std::chrono::milliseconds(1 + (i * 7) % 5));
      seen.push_back(i);
    };
    co_await quell::for_each(std::move(items), 3, item);
  };
  executor(body(), clock).run();
  EXPECT_EQ(g.most, 3);
  EXPECT_EQ(g.ended, 20);
  std::sort(seen.begin(), seen.end());
  for (int i = 0; i < 20; ++i) EXPECT_EQ(seen[i], i);
}

TEST(ForEach, TheFirstErrorCancelsTheItemsInFlightWaitsForThemStartsNoNewOneAndIsRethrown) {
  virtual_clock clock;
  gauge g;
  quell::test::log log;
  auto body = [&]() -> task<> {
    // Named first, not written inside the co_await: g++ 12 rejects a braced list there ("array
    // used as initializer") and miscompiles lambdas that copy captures (docs/decisions.md).
    std::vector<int> items{0, 1, 2, 3, 4, 5, 6, 7};
    auto item = [&](int& i) -> task<> {
      gauge::in running(g);
      if (i == 1) {
        co_await sleep_for(2ms);
        throw boom("item 1 failed");
      }
      auto hook = [&log, i] { log.print("item " + std::to_string(i) + " cancelled"); };
      co_await quell::on_cancel(sleep_for(1h), hook);
    };
    try {
      co_await quell::for_each(std::move(items), 3, item);
    } catch (const boom& e) {
      log.print(std::string(e.what()) + " at " + quell::test::at(clock));
    }
  };
  executor(body(), clock).run();
  EXPECT_EQ(g.started, 3);  // 0, 1, 2: no new item after the failure
  EXPECT_EQ(g.ended, 3);
  EXPECT_EQ(log.lines, (std::vector<std::string>{"item 0 cancelled", "item 2 cancelled", "item 1 failed at 2ms"}));
}

TEST(ForEach, CancellingTheCallerCancelsEveryItemInFlightAndStartsNoNewOne) {
  gauge g;
  std::vector<int> cancelled;
  auto body = [&]() -> task<> {
    auto item = [&](int i) -> task<> {
      gauge::in running(g);
      auto hook = [&cancelled, i] { cancelled.push_back(i); };
      co_await quell::on_cancel(quell::pending(), hook);
    };
    co_await quell::for_each(counting(0, 100), 4, item);
  };
  {
    executor ex{body()};
    ex.poll_once();
    EXPECT_EQ(g.now, 4);
    ex.cancel();
    EXPECT_TRUE(ex.done());
  }
  EXPECT_EQ(g.started, 4);
  EXPECT_EQ(g.ended, 4);
  EXPECT_EQ(cancelled, (std::vector<int>{0, 1, 2, 3}));
}

TEST(ForEach, ItemsOfAViewMadeOnTheFlyAreCopiedAndElementsOfAContainerAreReferredTo) {
  int sum = 0;
  std::string joined;
  auto body = [&]() -> task<> {
    auto add = [&](int i) -> task<> {
      co_await quell::yield();
      sum += i;  // this item's own copy: the view made the value and let it go
    };
    co_await quell::for_each(counting(1, 5), 2, add);
    // A container's elements are handed over as references (a std::string& parameter binds to
    // nothing else), valid until for_each ends.
    std::vector<std::string> names{"a", "b", "c"};
    auto shout = [&](std::string& s) -> task<> {
      co_await quell::yield();
      s += "!";
      joined += s;
    };
    co_await quell::for_each(std::move(names), 1, shout);
  };
  quell::block_on(body());
  EXPECT_EQ(sum, 10);
  EXPECT_EQ(joined, "a!b!c!");
}

TEST(ForEach, AnEmptyRangeEndsAtOnceAndALimitOfZeroIsAnInvalidArgument) {
  int calls = 0;
  auto fn = [&](int&) -> task<> {
    ++calls;
    co_return;
  };
  quell::block_on(quell::for_each(std::vector<int>{}, 2, fn));
  EXPECT_EQ(calls, 0);
  EXPECT_THROW(quell::block_on(quell::for_each(std::vector<int>{1}, 0, fn)), std::invalid_argument);
}

TEST(ForEach, CancelledAnywhereEveryItemThatStartedEndsAndNoSlotIsLost) {
  std::unique_ptr<ledger> l;
  std::unique_ptr<gauge> g;
  auto report = quell::testing::cancel_sweep(
      [&](virtual_clock&) -> task<> {
        l = std::make_unique<ledger>();
        g = std::make_unique<gauge>();
        return [](ledger& lg, gauge& gg) -> task<> {
          auto item = [&lg, &gg](int& i) -> task<> {
            gauge::in running(gg);
            ledger::hold h(lg, "item " + std::to_string(i));
            auto hook = [&lg, i]() -> task<> {
              ledger::hold cleanup(lg, "cleanup " + std::to_string(i));
              co_await sleep_for(1ms);
            };
            co_await quell::on_cancel(sleep_for(std::chrono::milliseconds(1 + i)), hook);
          };
          std::vector<int> items{0, 1, 2, 3, 4};
          co_await quell::for_each(std::move(items), 2, item);
        }(*l, *g);
      },
      [&](const quell::testing::sweep_point&) {
        l->expect_balanced();
        if (g->most > 2) throw std::logic_error("more than 2 items in flight");
        if (g->now != 0) throw std::logic_error("an item is still running");
      });
  EXPECT_GT(report.points, 5u);
}
