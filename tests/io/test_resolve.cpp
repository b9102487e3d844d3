// resolve() against a dnsmasq the tests start (A, AAAA, NXDOMAIN, refusal, a name that never
// answers, cancellation in flight and in the completion window, /etc/hosts, numeric hosts), and
// Happy Eyeballs on loopback (tcp_stream::connect_any, connect(host, port)): a blackholed address
// loses to a working one after the stagger on the virtual clock, a failure starts the next attempt
// at once, every error is reported, and a cancel closes every attempt.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "quell/quell.hpp"
#include "quell/testing.hpp"
#include "support/dnsmasq.hpp"
#include "support/net_client.hpp"

using namespace std::chrono_literals;
using quell::address;
using quell::address_family;
using quell::resolve_errc;
using quell::task;
using quell::tcp_stream;

namespace {

const char* const hosts_file =
    "127.0.0.1 ready.test\n"
    "127.0.0.2 four.test\n"
    "::1 six.test\n"
    "127.0.0.1 both.test\n"
    "::1 both.test\n"
    "127.0.0.3 many.test\n"
    "127.0.0.4 many.test\n";

std::vector<std::string> strings(const std::vector<address>& v) {
  std::vector<std::string> out;
  for (const address& a : v) out.push_back(a.to_string());
  std::sort(out.begin(), out.end());
  return out;
}

const quell::detail::resolve_stats& stats() { return quell::detail::resolve_stats_for_testing(); }

class ResolveDns : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string why;
    server_ = quell::test::dnsmasq::start(hosts_file, why).release();
    if (!server_) why_ = new std::string(why);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete why_;
    why_ = nullptr;
  }
  void SetUp() override {
    if (!server_) GTEST_SKIP() << *why_;
  }
  static quell::resolve_options with_server() {
    quell::resolve_options o;
    o.servers = {address::parse("127.0.0.1", server_->port())};
    return o;
  }
  // What resolve threw: its code and message (code 0: it did not throw).
  static std::pair<std::error_code, std::string> error_of(std::string host, quell::resolve_options o,
                                                          std::string service = "80") {
    try {
      quell::block_on(quell::resolve(host, service, o));
    } catch (const std::system_error& e) {
      return {e.code(), e.what()};
    }
    return {};
  }

  static quell::test::dnsmasq* server_;
  static std::string* why_;
};
quell::test::dnsmasq* ResolveDns::server_ = nullptr;
std::string* ResolveDns::why_ = nullptr;

}  // namespace

TEST_F(ResolveDns, AnARecordIsFoundWithThePortOfTheService) {
  EXPECT_EQ(strings(quell::block_on(quell::resolve("four.test", "80", with_server()))),
            (std::vector<std::string>{"127.0.0.2:80"}));
  EXPECT_EQ(strings(quell::block_on(quell::resolve("many.test", "5432", with_server()))),
            (std::vector<std::string>{"127.0.0.3:5432", "127.0.0.4:5432"}));
}

TEST_F(ResolveDns, AnAaaaRecordIsFound) {
  EXPECT_EQ(strings(quell::block_on(quell::resolve("six.test", "443", with_server()))),
            (std::vector<std::string>{"[::1]:443"}));
}

TEST_F(ResolveDns, BothFamiliesAreFoundAndTheFamilyOptionKeepsOne) {
  EXPECT_EQ(strings(quell::block_on(quell::resolve("both.test", "80", with_server()))),
            (std::vector<std::string>{"127.0.0.1:80", "[::1]:80"}));
  auto o = with_server();
  o.family = address_family::ipv4;
  EXPECT_EQ(strings(quell::block_on(quell::resolve("both.test", "80", o))), (std::vector<std::string>{"127.0.0.1:80"}));
  o.family = address_family::ipv6;
  EXPECT_EQ(strings(quell::block_on(quell::resolve("both.test", "80", o))), (std::vector<std::string>{"[::1]:80"}));
}

TEST_F(ResolveDns, NxdomainIsNotFound) {
  const auto [code, what] = error_of("nosuch.invalid", with_server());
  EXPECT_EQ(code, resolve_errc::not_found);
  EXPECT_EQ(what, "resolve nosuch.invalid: not found");
  EXPECT_EQ(error_of("nosuch.test", with_server()).second, "resolve nosuch.test: not found");
}

TEST_F(ResolveDns, ANameWithoutAnAddressOfTheFamilyAskedForIsNoAddress) {
  auto o = with_server();
  o.family = address_family::ipv6;
  const auto [code, what] = error_of("four.test", o);
  EXPECT_EQ(code, resolve_errc::no_address);
  EXPECT_EQ(what, "resolve four.test: no address");
}

TEST_F(ResolveDns, ARefusalIsReported) {
  auto o = with_server();
  o.hosts_file = false;
  const auto [code, what] = error_of("example.com", o);
  EXPECT_EQ(code, resolve_errc::refused);
  EXPECT_EQ(what, "resolve example.com: server refused");
}

TEST_F(ResolveDns, ANameThatNeverAnswersTimesOut) {
  auto o = with_server();
  o.timeout = 100ms;
  o.tries = 2;
  const auto started = std::chrono::steady_clock::now();
  const auto [code, what] = error_of("slow.test", o);
  EXPECT_EQ(code, resolve_errc::timed_out);
  EXPECT_EQ(what, "resolve slow.test: timed out");
  EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);  // a hang guard, not a timing
  EXPECT_EQ(stats().channels_open, 0u);
}

TEST_F(ResolveDns, AnUnknownServiceIsReported) {
  EXPECT_EQ(error_of("four.test", with_server(), "no-such-service").first, resolve_errc::bad_service);
}

TEST_F(ResolveDns, CancelledInFlightTheQueryIsCancelledAndTheChannelDestroyedBeforeItEnds) {
  auto o = with_server();
  o.timeout = 10s;
  auto body = [&]() -> task<> {
    co_await quell::resolve("four.test", "80", with_server());  // the executor's ring exists from here on
    const auto before = stats();
    const std::size_t fds = quell::test::open_fds();
    // The lookup of slow.test waits on its socket; the sleep wins and cancels it.
    auto r = co_await quell::race(
        [&]() -> task<int> {
          co_await quell::resolve("slow.test", "80", o);
          co_return 1;
        }(),
        [&]() -> task<int> {
          co_await quell::sleep_for(50ms);
          co_return 2;
        }());
    EXPECT_EQ(r, 2);
    // By the time race returned, c-ares had called back and let go of everything.
    EXPECT_EQ(stats().queries, before.queries + 1);
    EXPECT_EQ(stats().callbacks, before.callbacks + 1);
    EXPECT_EQ(stats().channels_open, 0u);
    EXPECT_EQ(quell::test::open_fds(), fds);
  };
  quell::block_on(body());
}

// Every suspension point and completion window of a lookup that reaches the server (both
// families: two queries): the query is always released, its callback runs exactly once, and an
// answer that arrived before the cancel landed is delivered.
TEST_F(ResolveDns, ACancelAtEveryPointReleasesTheQueryAndAnAnswerThatArrivedIsDelivered) {
  const auto o = with_server();
  auto before = stats();
  std::size_t delivered_in_window = 0;
  std::size_t cancelled = 0;
  std::vector<address> got;
  quell::testing::sweep_options so;
  so.io_grace = 2s;  // dnsmasq is real: let its answers arrive before virtual time moves
  const auto report = quell::testing::cancel_sweep(
      [&](quell::virtual_clock&) -> task<> {
        got.clear();
        before = stats();
        return [](std::vector<address>& out, quell::resolve_options opts) -> task<> {
          out = co_await quell::resolve("both.test", "80", opts);
        }(got, o);
      },
      [&](const quell::testing::sweep_point& p) {
        if (stats().channels_open != 0) throw std::logic_error("a channel is still open");
        if (stats().callbacks - before.callbacks != stats().queries - before.queries)
          throw std::logic_error("a query was not called back exactly once");
        if (p.outcome == quell::testing::sweep_point::ended::value) {
          if (strings(got) != std::vector<std::string>{"127.0.0.1:80", "[::1]:80"})
            throw std::logic_error("wrong addresses");
          if (p.window && p.at > 0) ++delivered_in_window;
        } else if (p.outcome == quell::testing::sweep_point::ended::cancelled) {
          ++cancelled;
        } else {
          std::rethrow_exception(p.error);
        }
      },
      so);
  EXPECT_GT(report.points, 2u);
  EXPECT_GT(cancelled, 0u);
  EXPECT_GT(delivered_in_window, 0u);  // the window of the last answer: completion wins
}

TEST(Resolve, LocalhostComesFromEtcHostsWithoutAQuery) {
  quell::resolve_options o;
  // A server that would answer nothing: the name must be found before any query.
  o.servers = {address::parse("127.0.0.1", 9)};
  o.timeout = 100ms;
  o.tries = 1;
  const auto before = stats();
  const auto got = quell::block_on(quell::resolve("localhost", "80", o));
  ASSERT_FALSE(got.empty());
  for (const address& a : got) {
    EXPECT_TRUE(a.to_string() == "127.0.0.1:80" || a.to_string() == "[::1]:80") << a.to_string();
  }
  EXPECT_EQ(stats().channels_opened, before.channels_opened + 1);
  EXPECT_EQ(stats().callbacks, before.callbacks + 1);
  EXPECT_EQ(stats().channels_open, 0u);
}

TEST(Resolve, NumericHostsNeedNoQueryAndNoChannel) {
  const auto before = stats();
  EXPECT_EQ(strings(quell::block_on(quell::resolve("127.0.0.1", "8080"))),
            (std::vector<std::string>{"127.0.0.1:8080"}));
  EXPECT_EQ(strings(quell::block_on(quell::resolve("::1", "53"))), (std::vector<std::string>{"[::1]:53"}));
  EXPECT_EQ(strings(quell::block_on(quell::resolve("[::1]", ""))), (std::vector<std::string>{"[::1]:0"}));
  EXPECT_EQ(stats().channels_opened, before.channels_opened);
  quell::resolve_options o;
  o.family = address_family::ipv6;
  try {
    quell::block_on(quell::resolve("127.0.0.1", "80", o));
    ADD_FAILURE() << "an IPv4 literal resolved for IPv6";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), resolve_errc::no_address);
    EXPECT_STREQ(e.what(), "resolve 127.0.0.1: no address");
  }
}

TEST(Resolve, ResolveCopiesItsArgumentsWhenCalled) {
  auto t = [] {
    std::string host = "127.0.0.1";
    std::string port = "99";
    return quell::resolve(host, port);  // the strings die here; the task runs later
  }();
  EXPECT_EQ(strings(quell::block_on(std::move(t))), (std::vector<std::string>{"127.0.0.1:99"}));
}

// ---- Happy Eyeballs -------------------------------------------------------------------------

namespace {

// A TCP port on `ip` that refuses connections: bound, never listening.
struct refusing {
  int fd = -1;
  address addr;
  explicit refusing(const char* ip, std::uint16_t port = 0) {
    addr = address::parse(ip, port);
    fd = ::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(::bind(fd, addr.data(), addr.size()), 0);
    socklen_t len = sizeof(sockaddr_storage);
    ::getsockname(fd, addr.data(), &len);
    *addr.size_ptr() = len;
  }
  ~refusing() { ::close(fd); }
};

// A listener that drops SYNs: backlog 0 and one connection it never accepts fill its queue, and
// Linux then drops the SYNs of further connects (they stay "in progress").
struct blackhole {
  int listener = -1, filler = -1;
  address addr;
  explicit blackhole(const char* ip) {
    addr = address::parse(ip, 0);
    listener = ::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(::bind(listener, addr.data(), addr.size()), 0);
    EXPECT_EQ(::listen(listener, 0), 0);
    socklen_t len = sizeof(sockaddr_storage);
    ::getsockname(listener, addr.data(), &len);
    *addr.size_ptr() = len;
    filler = ::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(::connect(filler, addr.data(), addr.size()), 0);
  }
  ~blackhole() {
    ::close(filler);
    ::close(listener);
  }
};

std::chrono::milliseconds since(quell::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(quell::now() - t0);
}

}  // namespace

TEST(HappyEyeballs, AddressesAreInterleavedByFamilyStartingWithTheFirstOnesFamily) {
  const std::vector<address> in = {address::parse("::1", 1), address::parse("::2", 2), address::parse("::3", 3),
                                   address::parse("10.0.0.1", 4), address::parse("10.0.0.2", 5)};
  std::vector<std::string> order;
  for (const address& a : quell::detail::happy_eyeballs_order(in)) order.push_back(a.to_string());
  EXPECT_EQ(order, (std::vector<std::string>{"[::1]:1", "10.0.0.1:4", "[::2]:2", "10.0.0.2:5", "[::3]:3"}));
  const std::vector<address> v4_first = {address::parse("10.0.0.1", 1), address::parse("::1", 2),
                                         address::parse("::2", 3)};
  order.clear();
  for (const address& a : quell::detail::happy_eyeballs_order(v4_first)) order.push_back(a.to_string());
  EXPECT_EQ(order, (std::vector<std::string>{"10.0.0.1:1", "[::1]:2", "[::2]:3"}));
}

TEST(HappyEyeballs, ABlackholedAddressLosesToAWorkingOneAfterTheStaggerAndIsClosed) {
  blackhole hole("::1");
  auto listener = quell::tcp_listener::bind(address::parse("127.0.0.1", 0));
  const address peers[] = {hole.addr, listener.local_address()};
  quell::virtual_clock clock;
  std::size_t fds = 0;
  auto body = [&]() -> task<> {
    co_await quell::wait_writable(hole.filler);  // the executor's ring exists from here on
    fds = quell::test::open_fds();
    const auto t0 = quell::now();
    tcp_stream s = co_await tcp_stream::connect_any(peers);
    // The first attempt hung; the second started 250 ms (virtual) after it and connected at once.
    EXPECT_EQ(since(t0), 250ms);
    EXPECT_EQ(s.peer_address().to_string(), listener.local_address().to_string());
    // The blackholed attempt was cancelled and its socket closed: only the winner is left.
    EXPECT_EQ(quell::test::open_fds(), fds + 1);
    tcp_stream accepted = co_await listener.accept();
    co_await accepted.close();
    co_await s.close();
    co_await listener.close();
  };
  quell::executor{body(), clock}.run();
}

TEST(HappyEyeballs, AFailedAttemptStartsTheNextAtOnce) {
  refusing refused("::1");
  auto listener = quell::tcp_listener::bind(address::parse("127.0.0.1", 0));
  const address peers[] = {refused.addr, listener.local_address()};
  quell::virtual_clock clock;
  auto body = [&]() -> task<> {
    const auto t0 = quell::now();
    tcp_stream s = co_await tcp_stream::connect_any(peers);
    EXPECT_EQ(since(t0), 0ms);
    EXPECT_EQ(s.peer_address().to_string(), listener.local_address().to_string());
    co_await s.close();
    co_await listener.close();
  };
  quell::executor{body(), clock}.run();
}

TEST(HappyEyeballs, WhenEveryAttemptFailsTheErrorListsEachAddressAndError) {
  refusing a("::1"), b("127.0.0.1"), c("::1");
  const address peers[] = {a.addr, c.addr, b.addr};
  try {
    quell::block_on(tcp_stream::connect_any(peers));
    ADD_FAILURE() << "connected";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::connection_refused);
    EXPECT_EQ(std::string(e.what()), "connect: " + a.addr.to_string() + ": Connection refused; " + b.addr.to_string() +
                                         ": Connection refused; " + c.addr.to_string() + ": Connection refused");
  }
  const std::vector<address> none;
  EXPECT_THROW(quell::block_on(tcp_stream::connect_any(none)), std::invalid_argument);
}

TEST(HappyEyeballs, CancelledMidWayEveryAttemptIsClosed) {
  blackhole h6("::1"), h4("127.0.0.1"), h6b("::1");
  const address peers[] = {h6.addr, h4.addr, h6b.addr};
  quell::virtual_clock clock;
  std::size_t fds = 0;
  auto body = [&]() -> task<> {
    co_await quell::wait_writable(h6.filler);  // the executor's ring exists from here on
    fds = quell::test::open_fds();
    const auto t0 = quell::now();
    auto r = co_await quell::race(
        [&]() -> task<int> {
          co_await tcp_stream::connect_any(peers);
          co_return 1;
        }(),
        [&]() -> task<int> {
          co_await quell::sleep_for(600ms);  // all three attempts under way (0, 250, 500 ms)
          EXPECT_EQ(quell::test::open_fds(), fds + 3);
          co_return 2;
        }());
    EXPECT_EQ(r, 2);
    EXPECT_EQ(since(t0), 600ms);
    EXPECT_EQ(quell::test::open_fds(), fds);
  };
  quell::executor{body(), clock}.run();
}

// Every suspension point and completion window of a race between a blackhole and a working
// address: whatever the cancel meets, no socket is left open.
TEST(HappyEyeballs, ACancelAtEveryPointLeavesNoSocketOpen) {
  blackhole hole("::1");
  auto listener = quell::tcp_listener::bind(address::parse("127.0.0.1", 0), quell::listen_options{512, false, 0});
  const address peers[] = {hole.addr, listener.local_address()};
  ::fcntl(listener.native_handle(), F_SETFL, O_NONBLOCK);  // the check drains it without blocking
  std::size_t fds = 0;
  std::size_t connected = 0;
  quell::testing::sweep_options so;
  quell::testing::cancel_sweep(
      [&](quell::virtual_clock&) -> task<> {
        return [](std::span<const address> p, std::size_t& n) -> task<> {
          tcp_stream s = co_await tcp_stream::connect_any(p);
          ++n;
          co_await s.close();
        }(peers, connected);
      },
      [&](const quell::testing::sweep_point& p) {
        if (p.outcome == quell::testing::sweep_point::ended::error) std::rethrow_exception(p.error);
        // Connections the listener's backlog holds were made by winners: drop them.
        for (;;) {
          const int fd = ::accept4(listener.native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          ::close(fd);
        }
        if (p.at == 0) fds = quell::test::open_fds();  // the reference run sets the count
        if (quell::test::open_fds() != fds) throw std::logic_error("a socket was left open");
      },
      so);
  EXPECT_GT(connected, 0u);
}

TEST_F(ResolveDns, ConnectToAHostNameResolvesAndRacesItsAddresses) {
  // both.test is ::1 and 127.0.0.1; only the IPv4 one listens on the port.
  auto listener = quell::tcp_listener::bind(address::parse("127.0.0.1", 0));
  const std::uint16_t port = listener.local_address().port();
  refusing v6_taken("::1", port);  // ::1:port refuses
  quell::connect_options o;
  o.resolve = with_server();
  auto body = [&]() -> task<> {
    tcp_stream s = co_await tcp_stream::connect("both.test", port, o);
    EXPECT_EQ(s.peer_address().to_string(), "127.0.0.1:" + std::to_string(port));
    co_await s.close();
    co_await listener.close();
  };
  quell::block_on(body());

  // Nothing listens on either address of both.test: both errors, under the name.
  refusing r("127.0.0.1");
  const std::uint16_t closed = r.addr.port();
  refusing r6("::1", closed);
  try {
    quell::block_on(tcp_stream::connect("both.test", closed, o));
    ADD_FAILURE() << "connected";
  } catch (const std::system_error& e) {
    const std::string what = e.what();
    const std::string p = std::to_string(closed);
    EXPECT_EQ(what.rfind("connect both.test:" + p + ": ", 0), 0u) << what;
    EXPECT_NE(what.find("[::1]:" + p + ": Connection refused"), std::string::npos) << what;
    EXPECT_NE(what.find("127.0.0.1:" + p + ": Connection refused"), std::string::npos) << what;
  }
  // A name that does not resolve: resolve's error.
  try {
    quell::block_on(tcp_stream::connect("nosuch.test", 80, o));
    ADD_FAILURE() << "connected";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), resolve_errc::not_found);
  }
}
