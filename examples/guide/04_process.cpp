// docs/guide/04-io-and-testing.md: cancelling a child process's wait() stops the child (SIGTERM),
// waits for its exit, and keeps the exit status and everything the child wrote.
#include <string>

#include "guide.hpp"

// Reads the child's stdout until it closes it.
quell::task<std::string> read_all(quell::pipe_stream& out) {
  std::string all;
  char buf[256];
  while (std::size_t n = co_await out.read_some(buf)) all.append(buf, n);
  if (!all.empty() && all.back() == '\n') all.pop_back();
  co_return all;
}

// [guide:process]
quell::task<> run_worker() {
  // A worker that flushes its state when asked to stop (SIGTERM), then exits.
  quell::spawn_options options;
  options.program = "sh";
  options.args = {"-c", "trap 'echo flushed; exit 0' TERM; echo ready; while :; do sleep 0.01; done"};
  options.std_out = quell::stdio::pipe;
  auto worker = quell::process::spawn(options);
  char buf[6];
  co_await worker.std_out().read_exact(buf);  // "ready\n"
  note("the worker is " + std::string(buf, 5));

  // Give it 100 ms. Then the deadline cancels wait(): SIGTERM, and wait() waits for the exit.
  auto status = co_await quell::move_on_after(100ms, worker.wait());
  if (!status) note("wait() was cancelled; the worker " + worker.exit_status()->to_string());
  note("it wrote: " + co_await read_all(worker.std_out()));
}
// [/guide:process]

int main() {
  quell::virtual_clock clock;
  clock.set_io_grace(50ms);  // real time for the child to answer before virtual time jumps
  quell::executor{run_worker(), clock}.run();
}
