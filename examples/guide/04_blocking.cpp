// docs/guide/04-io-and-testing.md: code that blocks runs on run_blocking's pool and is cancelled
// through its stop token; the caller waits for it, and what it returned anyway is delivered.
#include <atomic>
#include <chrono>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "guide.hpp"

std::atomic<bool> scan_over{false};

// A row from a library that blocks (a legacy client, a compression library).
std::string read_one_row() {
  std::this_thread::sleep_for(1ms);
  return "row";
}

// [guide:blocking]
// Runs on a pool thread. It looks at its stop token between rows, and returns what it has read
// when asked to stop.
std::vector<std::string> scan_archive(std::stop_token stop) {
  std::vector<std::string> rows;
  while (!stop.stop_requested()) rows.push_back(read_one_row());
  scan_over = true;
  return rows;
}

quell::task<> export_rows() {
  auto rows = co_await quell::move_on_after(100ms, quell::run_blocking(scan_archive));
  // The deadline asked the scan to stop; the caller waited for it to return.
  note(std::string("the scan is over: ") + (scan_over ? "yes" : "no"));
  // It returned rows anyway: completion wins, they are delivered, not dropped.
  note(std::string("rows delivered: ") + (rows ? "yes" : "no"));
}
// [/guide:blocking]

int main() {
  quell::virtual_clock clock;
  clock.set_io_grace(50ms);  // real time for the pool thread to start before virtual time jumps
  quell::executor{export_rows(), clock}.run();
}
