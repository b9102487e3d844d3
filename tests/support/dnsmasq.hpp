// A throw-away DNS server for the resolver tests: dnsmasq on a free loopback port, answering from
// a hosts file the test writes, authoritative (NXDOMAIN) for .test and .invalid, refusing other
// names, and forwarding slow.test to a UDP socket that never answers. Stopped (SIGTERM, then
// reaped) when destroyed.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace quell::test {

class dnsmasq {
 public:
  // Where dnsmasq is, or "" if it is not installed.
  static std::string binary() {
    for (const char* p : {"/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq", "/usr/local/sbin/dnsmasq"}) {
      if (::access(p, X_OK) == 0) return p;
    }
    return "";
  }

  // Starts it with `hosts` (lines of an /etc/hosts file). On failure returns null and says why.
  static std::unique_ptr<dnsmasq> start(const std::string& hosts, std::string& why) {
    const std::string bin = binary();
    if (bin.empty()) {
      why = "dnsmasq is not installed (Debian: apt-get install dnsmasq-base; scripts/install-deps does it)";
      return nullptr;
    }
    auto d = std::unique_ptr<dnsmasq>(new dnsmasq());
    char dir_template[] = "/tmp/quell-dnsmasq-XXXXXX";
    if (!::mkdtemp(dir_template)) {
      why = "mkdtemp failed";
      return nullptr;
    }
    d->dir_ = dir_template;
    ::chmod(dir_template, 0755);  // dnsmasq may read the file as another user
    std::ofstream(d->dir_ + "/hosts") << hosts;
    // The upstream of slow.test: a bound UDP socket nobody reads.
    d->silent_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (::bind(d->silent_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
        ::getsockname(d->silent_, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
      why = "cannot bind the silent upstream socket";
      return nullptr;
    }
    const int silent_port = ntohs(sa.sin_port);
    for (int attempt = 0; attempt < 5; ++attempt) {
      d->port_ = free_port();
      if (d->port_ == 0) continue;
      if (d->launch(bin, silent_port) && d->wait_until_answering()) return d;
      d->stop();
    }
    why = "dnsmasq did not start or answer; its log: " + d->log();
    return nullptr;
  }

  ~dnsmasq() {
    stop();
    if (silent_ >= 0) ::close(silent_);
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

  std::uint16_t port() const noexcept { return port_; }
  std::string log() const {
    std::ifstream in(dir_ + "/log");
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }

 private:
  dnsmasq() = default;

  // A port free for both UDP and TCP on 127.0.0.1 (dnsmasq listens on both).
  static std::uint16_t free_port() {
    const int u = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    const int t = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    std::uint16_t port = 0;
    if (::bind(u, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
        ::getsockname(u, reinterpret_cast<sockaddr*>(&sa), &len) == 0 &&
        ::bind(t, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0)
      port = ntohs(sa.sin_port);
    ::close(u);
    ::close(t);
    return port;
  }

  bool launch(const std::string& bin, int silent_port) {
    const passwd* pw = ::getpwuid(::geteuid());
    std::vector<std::string> args = {bin,
                                     "--keep-in-foreground",
                                     "--port=" + std::to_string(port_),
                                     "--listen-address=127.0.0.1",
                                     "--bind-interfaces",
                                     "--no-resolv",
                                     "--no-hosts",
                                     "--no-negcache",
                                     "--cache-size=0",
                                     "--conf-file=/dev/null",
                                     "--pid-file=",
                                     "--log-facility=-",
                                     "--addn-hosts=" + dir_ + "/hosts",
                                     "--local=/test/",
                                     "--local=/invalid/",
                                     "--server=/slow.test/127.0.0.1#" + std::to_string(silent_port)};
    if (pw) args.push_back(std::string("--user=") + pw->pw_name);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string log_path = dir_ + "/log";
    pid_ = ::fork();
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    return true;
  }

  // Sends a query for ready.test until dnsmasq answers (at most 5 s), or it exits.
  bool wait_until_answering() {
    const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port_);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const unsigned char query[] = {0x12, 0x34, 0x01, 0x00, 0, 1,   0,   0,   0,   0, 0, 0, 5, 'r',
                                   'e',  'a',  'd',  'y',  4, 't', 'e', 's', 't', 0, 0, 1, 0, 1};
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    bool ok = false;
    while (!ok && std::chrono::steady_clock::now() < until) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      ::sendto(s, query, sizeof query, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
      pollfd p{s, POLLIN, 0};
      if (::poll(&p, 1, 100) == 1) {
        unsigned char buf[512];
        ok = ::recv(s, buf, sizeof buf, 0) > 0;
      }
    }
    ::close(s);
    return ok;
  }

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  std::string dir_;
  int silent_ = -1;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace quell::test
