#pragma once
// Tests that run a piece of the runtime in a forked child (signals, run_main's exit status, a
// seccomp filter) and talk to it over a pipe.

#include <sys/wait.h>
#include <unistd.h>

#include <string>

namespace quell::test {

// Runs `child` in a forked process and returns its exit status (or -signal).
template <class F>
int in_child(F&& child) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int rc = 99;
    try {
      rc = child();
    } catch (...) {
      rc = 98;
    }
    ::_exit(rc);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

// Reads `fd` byte by byte until `marker` has been read (or the pipe ends); everything read.
[[maybe_unused]] inline std::string read_until(int fd, const std::string& marker) {
  std::string got;
  char c;
  while (got.find(marker) == std::string::npos && ::read(fd, &c, 1) == 1) got += c;
  return got;
}

// Writes a line to the parent; a short write only makes the parent's read_until wait, which the
// test's timeout reports.
[[maybe_unused]] inline void say(int fd, const char* s) {
  [[maybe_unused]] auto n = ::write(fd, s, std::char_traits<char>::length(s));
}

}  // namespace quell::test
