// A throw-away PostgreSQL cluster for tests: initdb + pg_ctl in a temp dir, on a free loopback
// port, as the postgres user when run as root; created once per test process (a gtest global
// environment) and stopped at the end. Tests skip, saying why, only if the server binaries are
// missing (REQUIRE_SERVER()).
//
// Where the server binaries are looked up: $QUELL_PG_BINDIR, else the newest
// /usr/lib/postgresql/<version>/bin (Debian's postgresql package).
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace quell::test::pg_cluster {
// Internal linkage: each test binary has its own cluster.
namespace {

namespace fs = std::filesystem;

// A loopback port nobody listens on right now.
int free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return -1;
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class cluster final : public ::testing::Environment {
 public:
  static inline std::string skip_reason;
  static inline std::string conninfo;
  static inline bool up = false;

  // The server as an operator would treat it: stopped (fast: sessions are terminated, as in a
  // restart), started again on the same port, or both. Blocking: call them from another thread
  // while an executor runs.
  static bool stop() { return self_ && run(self_->pg_ctl("-m fast -w stop")); }
  static bool start() { return self_ && run(self_->pg_ctl("-w -t 60 start")); }
  static bool restart() { return self_ && run(self_->pg_ctl("-m fast -w -t 60 restart")); }

  void SetUp() override {
    self_ = this;
    const fs::path bin = find_bindir();
    if (bin.empty()) {
      skip_reason =
          "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's postgresql package or set "
          "QUELL_PG_BINDIR";
      return;
    }
    char tmpl[] = "/tmp/quell-pg-XXXXXX";
    if (!::mkdtemp(tmpl)) {
      ADD_FAILURE() << "mkdtemp failed";
      return;
    }
    dir_ = tmpl;
    // initdb refuses to run as root: then the cluster belongs to the postgres user.
    if (::geteuid() == 0) {
      const passwd* pw = ::getpwnam("postgres");
      if (!pw) {
        ADD_FAILURE() << "running as root and there is no postgres user to own the cluster";
        return;
      }
      if (::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
        ADD_FAILURE() << "chown of " << dir_ << " failed";
        return;
      }
      as_ = "runuser -u postgres -- ";
    }
    ::chmod(dir_.c_str(), 0700);
    pg_ctl_ = (bin / "pg_ctl").string();
    const std::string data = (dir_ / "data").string();
    if (!run(as_ + (bin / "initdb").string() + " -D " + data + " -U postgres -A trust -E UTF8 --no-sync >" +
             (dir_ / "initdb.log").string() + " 2>&1")) {
      ADD_FAILURE() << "initdb failed:\n" << read_file(dir_ / "initdb.log");
      return;
    }
    port_ = free_port();
    {
      std::ofstream conf(fs::path(data) / "postgresql.conf", std::ios::app);
      conf << "port = " << port_ << "\n"
           << "listen_addresses = '127.0.0.1'\n"
           << "unix_socket_directories = '" << dir_.string() << "'\n"
           << "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
           // A backend whose client went away (the cancel-timeout test closes one mid-statement)
           // notices within half a second instead of at the end of its statement.
           << "client_connection_check_interval = '500ms'\n";
    }
    if (!run(as_ + pg_ctl_ + " -D " + data + " -l " + (dir_ / "server.log").string() + " -w -t 60 start >/dev/null")) {
      ADD_FAILURE() << "pg_ctl start failed:\n" << read_file(dir_ / "server.log");
      return;
    }
    started_ = true;
    conninfo = "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres dbname=postgres";
    up = true;
  }

  void TearDown() override {
    if (started_) run(as_ + pg_ctl_ + " -D " + (dir_ / "data").string() + " -m immediate -w stop >/dev/null");
    if (!dir_.empty()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }

 private:
  static bool run(const std::string& cmd) { return std::system(cmd.c_str()) == 0; }

  static fs::path find_bindir() {
    if (const char* d = std::getenv("QUELL_PG_BINDIR")) {
      return fs::exists(fs::path(d) / "initdb") && fs::exists(fs::path(d) / "pg_ctl") ? fs::path(d) : fs::path();
    }
    fs::path best;
    int best_version = -1;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/usr/lib/postgresql", ec)) {
      const fs::path b = e.path() / "bin";
      if (!fs::exists(b / "initdb") || !fs::exists(b / "pg_ctl")) continue;
      const int v = std::atoi(e.path().filename().c_str());
      if (v > best_version) {
        best_version = v;
        best = b;
      }
    }
    return best;
  }

  std::string pg_ctl(const std::string& what) const {
    return as_ + pg_ctl_ + " -D " + (dir_ / "data").string() + " -l " + (dir_ / "server.log").string() + " " + what +
           " >/dev/null";
  }

  static inline cluster* self_ = nullptr;
  fs::path dir_;
  std::string as_;
  std::string pg_ctl_;
  int port_ = 0;
  bool started_ = false;
};

#define REQUIRE_SERVER()                                                     \
  do {                                                                       \
    if (!cluster::skip_reason.empty()) GTEST_SKIP() << cluster::skip_reason; \
    ASSERT_TRUE(cluster::up) << "the test cluster did not start";            \
  } while (0)

}  // namespace
}  // namespace quell::test::pg_cluster
