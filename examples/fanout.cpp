// One request fans out to every core and is cancelled as one tree.
//
// A search request asks every core to search its shard (on_each_core) within a budget. Shard i
// needs 10 + 100 * i ms; the budget is 50 ms, so the shards of cores 1 and up are still running
// when it is spent. The deadline cancels the request, the request's cancel travels to every core,
// each shard there runs its asynchronous cleanup (it tells its index server to stop: 5 ms), and
// only when the last of those cleanups has finished does the request resume, on core 0.
//
//   quell_example_fanout [cores]     (default: one per CPU, at least 2)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "quell/quell.hpp"

using namespace std::chrono_literals;
using quell::task;

namespace {

std::mutex out_m;
const auto t_start = std::chrono::steady_clock::now();

void say(const std::string& line) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t_start).count();
  std::lock_guard<std::mutex> lock(out_m);
  std::printf("%4lld ms  core %u: %s\n", static_cast<long long>(ms), quell::this_core(), line.c_str());
  std::fflush(stdout);
}

// One shard's search, on the core it was sent to.
task<int> search_shard() {
  const unsigned shard = quell::this_core();
  auto tell_index_server_to_stop = [shard]() -> task<> {
    const auto why = quell::this_task::cancel_reason();
    say("shard " + std::to_string(shard) + " cancelled (" + (why ? why->describe() : std::string("?")) +
        "): telling its index server to stop");
    co_await quell::sleep_for(5ms);  // the stop request and its acknowledgement
    say("shard " + std::to_string(shard) + " index server acknowledged: cleanup done");
  };
  say("shard " + std::to_string(shard) + " searching");
  co_await quell::on_cancel(quell::sleep_for(10ms + shard * 100ms), tell_index_server_to_stop());
  const int matches = 10 + static_cast<int>(shard);
  say("shard " + std::to_string(shard) + " finished: " + std::to_string(matches) + " matches");
  co_return matches;
}

task<int> request(quell::duration budget) {
  say("request: searching " + std::to_string(quell::core_count()) + " shards, one per core, budget " +
      std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(budget).count()) + " ms");
  auto fan_out = [] { return quell::on_each_core(search_shard); };
  std::optional<std::vector<int>> all = co_await quell::move_on_after(budget, fan_out());
  if (all) {
    say("request: every shard answered");
    co_return 0;
  }
  say("request: resumed after the budget, once every shard on every core had ended and cleaned up");
  co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
  unsigned cores = argc > 1 ? static_cast<unsigned>(std::atoi(argv[1])) : std::thread::hardware_concurrency();
  if (cores < 2) cores = 2;
  quell::runtime rt{cores};
  return rt.run(request(50ms));
}
