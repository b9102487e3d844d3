// docs/guide/03-structured-concurrency.md: dropping a running task is a loud error.
//
// The program runs the faulty code in a child process (it ends with std::terminate) and prints
// what the child said on stderr, with the source directory left out.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <string>

#include "guide.hpp"

// [guide:dropped]
quell::task<> forgets_to_join() {
  quell::task_group group;
  group.spawn(quell::sleep_for(1s));
  co_return;  // the group is destroyed here, with its task still running
}
// [/guide:dropped]

int main() {
  int err[2];
  if (::pipe(err) != 0) return 1;
  std::fflush(stdout);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const rlimit no_core{0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    ::dup2(err[1], STDERR_FILENO);
    ::close(err[0]);
    quell::block_on(forgets_to_join());
    ::_exit(0);
  }
  ::close(err[1]);
  std::string said;
  char buf[512];
  for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) > 0;) said.append(buf, static_cast<std::size_t>(n));
  int status = 0;
  ::waitpid(pid, &status, 0);
  // Only the first line (a sanitizer may add its own), without the directory of the source file.
  said = said.substr(0, said.find('\n'));
  if (const auto at = said.find("created at "); at != std::string::npos) {
    const auto file = said.find("03_dropped.cpp", at);
    if (file != std::string::npos) said.erase(at + 11, file - (at + 11));
  }
  const bool aborted = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
  std::printf("the child process %s\n", aborted ? "ended with SIGABRT (std::terminate)" : "did not abort");
  std::printf("%s\n", said.c_str());
  return aborted ? 0 : 1;
}
