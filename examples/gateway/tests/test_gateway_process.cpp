// quell_gateway as a process, the way an operator meets it: started, sent a request, sent signals;
// its output lines, exit status and how long it takes to go are checked. The binary's path comes
// from CMake (QUELL_GATEWAY_BIN).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "support/tls_certs.hpp"

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

class gateway_process {
 public:
  explicit gateway_process(std::vector<std::string> args) {
    int out[2];
    if (::pipe(out) != 0) std::abort();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::close(out[0]);
      ::close(out[1]);
      std::vector<char*> argv;
      std::string bin = QUELL_GATEWAY_BIN;
      argv.push_back(bin.data());
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(bin.c_str(), argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    out_ = out[0];
  }
  ~gateway_process() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_);
  }

  // Everything printed so far, once `marker` appeared (or the time ran out: then without it).
  const std::string& read_until(const std::string& marker, std::chrono::milliseconds limit = 20s,
                                std::size_t from = 0) {
    const auto end = steady::now() + limit;
    while (output_.find(marker, from) == std::string::npos && steady::now() < end) {
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::read(out_, buf, sizeof buf);
      if (n <= 0) break;
      output_.append(buf, static_cast<std::size_t>(n));
    }
    return output_;
  }

  // The exit status, or -1 if the process is still running after `limit`.
  int wait(std::chrono::milliseconds limit) {
    const auto end = steady::now() + limit;
    for (;;) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        read_until("\x01", 200ms);  // what it printed last
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (steady::now() >= end) return -1;
      ::usleep(10000);
    }
  }

  void signal(int signo) { ::kill(pid_, signo); }

  // The port from "quell gateway on http://127.0.0.1:PORT" (https:// with --tls-cert).
  int port(const std::string& scheme = "http") {
    const std::string prefix = "quell gateway on " + scheme + "://";
    auto at = read_until(prefix).find(prefix);
    if (at == std::string::npos) return -1;
    auto eol = read_until("\n", 5s, at).find('\n', at);
    auto colon = output_.find(':', at + prefix.size());
    if (eol == std::string::npos || colon > eol) return -1;
    return std::atoi(output_.c_str() + colon + 1);
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  bool exited_ = false;
  std::string output_;
};

// A plain blocking client socket with a request written on it (kept open: the request runs).
int send_request(int port, const std::string& request) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return -1;
  if (::write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) return -1;
  return fd;
}

}  // namespace

TEST(GatewayProcess, ASecondSigintForcesTheShutdownPastABackendThatNeverAcknowledges) {
  // The backend ignores cancels and the gateway would wait an hour for each acknowledgement, and
  // the grace period is an hour too: only a forced shutdown can end this quickly.
  gateway_process g(
      {"--listen=127.0.0.1:0", "--permits=2", "--ignore-cancels", "--cancel-timeout=3600", "--grace=3600", "--trace"});
  const int port = g.port();
  ASSERT_GT(port, 0) << g.read_until("", 0ms);
  const int fd = send_request(port, "GET /report?seconds=50 HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_GE(fd, 0);
  ASSERT_NE(g.read_until("permit taken").find("permit taken"), std::string::npos);
  g.signal(SIGINT);
  ASSERT_NE(g.read_until("graceful shutdown").find("graceful shutdown"), std::string::npos);
  EXPECT_EQ(g.wait(300ms), -1);  // graceful: still waiting for the request
  g.signal(SIGINT);
  const int status = g.wait(20s);  // a bound no graceful path could meet (an hour)
  const std::string& out = g.read_until("", 0ms);
  EXPECT_EQ(status, 128 + SIGINT) << out;
  EXPECT_NE(out.find("forced shutdown"), std::string::npos) << out;
  EXPECT_NE(out.find("stopped (forced): {"), std::string::npos) << out;
  EXPECT_NE(out.find("\"in_flight\":0"), std::string::npos) << out;
  EXPECT_NE(out.find("\"permits_available\":2"), std::string::npos) << out;
  ::close(fd);
}

TEST(GatewayProcess, OneSigintLetsTheRequestEndWithinTheGraceAndExitsZero) {
  gateway_process g({"--listen=127.0.0.1:0", "--grace=0.2", "--cancel-timeout=5", "--trace"});
  const int port = g.port();
  ASSERT_GT(port, 0);
  const int fd = send_request(port, "GET /report?seconds=50 HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_GE(fd, 0);
  ASSERT_NE(g.read_until("permit taken").find("permit taken"), std::string::npos);
  g.signal(SIGTERM);
  const int status = g.wait(20s);
  const std::string& out = g.read_until("", 0ms);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("stopped: {"), std::string::npos) << out;
  EXPECT_NE(out.find("\"cancels_acknowledged\":1"), std::string::npos) << out;
  ::close(fd);
}

TEST(GatewayProcess, WithACertificateAndItsKeyItServesHttpsThatCurlVerifies) {
  if (std::system("command -v curl >/dev/null 2>&1") != 0) GTEST_SKIP() << "curl is not installed";
  const auto& certs = quell::test::test_certs();
  gateway_process g({"--listen=127.0.0.1:0", "--cores=1", "--tls-cert=" + certs.path("leaf.pem"),
                     "--tls-key=" + certs.path("leaf.key")});
  const int port = g.port("https");
  ASSERT_GT(port, 0) << g.read_until("", 0ms);
  const std::string p = std::to_string(port);
  const std::string cmd = "curl -sS --cacert " + certs.path("ca.pem") + " --resolve localhost:" + p +
                          ":127.0.0.1 'https://localhost:" + p + "/report?seconds=0' 2>&1";
  std::string out;
  if (FILE* f = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    while (std::size_t n = std::fread(buf, 1, sizeof buf, f)) out.append(buf, n);
    EXPECT_EQ(::pclose(f), 0) << out;
  }
  EXPECT_EQ(out, "{\"result\":\"report after 0 ms\"}\n");
  g.signal(SIGTERM);
  EXPECT_EQ(g.wait(20s), 0) << g.read_until("", 0ms);
}
