// quell::file (file.hpp): open, write, read, fsync and close through io_uring; a clear error for a
// missing path; an open cancelled in the turn it was started never runs.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstddef>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "quell/quell.hpp"
#include "support/log.hpp"

using namespace std::chrono_literals;
using quell::executor;
using quell::race;
using quell::sleep_for;
using quell::task;

TEST(Files, WriteReadFsyncAndCloseThroughIoUring) {
  const std::string path = "/tmp/quell-file-" + std::to_string(::getpid());
  auto body = [&]() -> task<std::string> {
    quell::file f = co_await quell::file::open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    EXPECT_EQ(co_await f.write_at("hello, ", 0), 7u);
    EXPECT_EQ(co_await f.write_at("file", 7), 4u);
    co_await f.fsync();
    std::string buf(64, '\0');
    const std::size_t n = co_await f.read_at(buf, 0);
    co_await f.close();
    EXPECT_FALSE(f.is_open());
    co_return buf.substr(0, n);
  };
  EXPECT_EQ(quell::block_on(body()), "hello, file");
  ::unlink(path.c_str());
}

TEST(Files, OpeningAMissingFileNamesThePathAndErrno) {
  auto body = [&]() -> task<> { co_await quell::file::open("/nonexistent/quell/x"); };
  try {
    quell::block_on(body());
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), ENOENT);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/quell/x"), std::string::npos);
  }
}

TEST(Files, AnOpenCancelledInTheSameTurnNeverRunsAndLeaksNoDescriptor) {
  auto body = [&]() -> task<int> {
    auto r = co_await race(
        [&]() -> task<int> {
          quell::file f = co_await quell::file::open("/dev/null");
          co_return 1;
        }(),
        quell::ready(2));
    co_return r;
  };
  const int probe = ::dup(0);
  ::close(probe);
  EXPECT_EQ(quell::block_on(body()), 2);
  const int after = ::dup(0);
  ::close(after);
  EXPECT_EQ(after, probe);  // the lowest free descriptor did not move
}
