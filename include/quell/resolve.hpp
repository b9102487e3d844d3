// Name resolution without blocking the executor: resolve(host, service), on c-ares.
//
//   std::vector<quell::address> peers = co_await quell::resolve("db.internal", "5432");
//   quell::tcp_stream s = co_await quell::tcp_stream::connect("db.internal", 5432);  // resolve + Happy Eyeballs
//
// resolve(host, service, options) is a task: lazy, like every task, and it copies `host` and
// `service` when it is called, so the caller's strings may die before it runs. It yields every
// address of `host` (IPv4 and IPv6 unless options.family says one of them), each with the port of
// `service` (a number, or a name from /etc/services; empty: port 0), without duplicates, in the
// order c-ares gives them (sorted by RFC 6724, the destination address selection getaddrinfo
// uses: on a host with IPv6 connectivity, IPv6 first). It never yields an empty list.
//   - A numeric host ("127.0.0.1", "::1", "[::1]") with a numeric or empty service is answered at
//     once: no query, no c-ares channel.
//   - Otherwise /etc/hosts is read first (c-ares' default "fb" order: files, then DNS; "localhost"
//     is found there), then the servers of options.servers, or those of /etc/resolv.conf. Its
//     `search` domains and `options timeout: attempts:` apply as they do to getaddrinfo.
//   - Errors are std::system_error with a code of resolve_category() (quell::resolve_errc) and
//     the name in the message: "resolve nosuch.invalid: not found" (NXDOMAIN), "resolve x.test:
//     no address" (the name exists, without an address of the family asked for), "resolve
//     x.test: timed out", "resolve x.test: server refused", "... server failure", "... invalid name",
//     "... unknown service".
//
// How it runs. Each call opens its own c-ares channel (no state shared between calls or
// executors; docs/decisions.md, "DNS: one c-ares channel per call"), starts one ares_getaddrinfo
// and drives it on the executor's thread: it waits, in a scope, on quell::wait_for_events for each
// socket c-ares asks about (ARES_OPT_SOCK_STATE_CB) and on a quell timer for ares_timeout(); the
// first one to fire cancels the others, and only once every wait has ended does it call
// ares_process_fd. So c-ares never closes or reuses a socket while a wait on it is in the kernel,
// and the per-try timeouts run on the executor's clock (c-ares itself measures them on the steady
// clock: on a virtual clock a timer that fires early just makes c-ares say "not yet").
//
// Cancellation, and each race with completion:
//   - Cancelled while waiting: the waits on c-ares' sockets are cancelled and awaited, then the
//     query is cancelled (ares_cancel: c-ares calls back, synchronously, with ARES_ECANCELLED) and
//     the channel destroyed (its sockets closed), all before resolve ends cancelled. Nothing of it
//     outlives the call, and no thread is involved.
//   - An answer that arrived before the cancel landed (a socket became readable, its wait
//     completed, and the cancel reached the task before it resumed): it is processed, and if it
//     completes the query the addresses are delivered (completion wins); the caller's
//     cancellation stays requested and takes effect at its next suspension point.
//   - Cancelled before it started: nothing is opened.
//   - Forced cancellation is the same: every step above is synchronous once the waits have ended.
// An overall bound is the caller's: wrap it in quell::timeout (deadline.hpp); options.timeout and
// options.tries are c-ares' per-server, per-try settings.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "quell/clock.hpp"
#include "quell/net.hpp"
#include "quell/task.hpp"

namespace quell {

enum class address_family : std::uint8_t { any, ipv4, ipv6 };

struct resolve_options {
  // DNS servers to ask, in order (port 0: 53). Empty: those of /etc/resolv.conf.
  std::vector<address> servers;
  // Per try and server (c-ares doubles it on each round of tries). Zero: /etc/resolv.conf's
  // `options timeout:`, else c-ares' default (5 s).
  std::chrono::milliseconds timeout{0};
  // Rounds over the servers. Zero: /etc/resolv.conf's `options attempts:`, else c-ares' (4).
  int tries = 0;
  address_family family = address_family::any;
  // false: skip /etc/hosts and ask the DNS servers only.
  bool hosts_file = true;
};

// What a failed resolve reports (the codes of resolve_category()).
enum class resolve_errc {
  not_found = 1,   // NXDOMAIN: no such name
  no_address,      // the name exists but has no address (of the family asked for)
  timed_out,       // no server answered within the tries
  refused,         // the servers refused the query (or the connection: c-ares 1.18 says the same)
  server_failure,  // SERVFAIL, or an answer c-ares could not use
  bad_name,        // not a valid host name
  bad_service,     // a service name /etc/services does not know
  other,           // anything else c-ares reports (the message says what)
};

const std::error_category& resolve_category() noexcept;
inline std::error_code make_error_code(resolve_errc e) noexcept { return {static_cast<int>(e), resolve_category()}; }

task<std::vector<address>> resolve(std::string_view host, std::string_view service, resolve_options options = {});

// tcp_stream::connect(host, port, options) and tcp_stream::connect_any(peers, options) (net.hpp):
// Happy Eyeballs (RFC 8305) over the addresses of a name, or over a given list.
//   - Order: the addresses are interleaved by family, starting with the family of the first one
//     (the resolver's preference: IPv6 first where it is usable), each family in its given order:
//     [v6a, v6b, v4a, v4b] is tried as v6a, v4a, v6b, v4b.
//   - Attempt k+1 starts attempt_delay (250 ms, RFC 8305's recommended value) after attempt k
//     started, on the executor's clock, or at once when attempt k fails, whichever comes first.
//     Earlier attempts keep going meanwhile.
//   - The first attempt to connect wins: every other attempt is cancelled and awaited (their
//     sockets are closed when connect returns), and the winner is returned. Two that connect in
//     the same turn: the first one reaped wins, the other is closed.
//   - None connects: std::system_error with the first attempt's error code and every attempt's
//     address and error, in the order they were started: "connect db.test:5432: [::1]:5432:
//     Connection refused; 127.0.0.1:5432: Connection refused" (connect_any: "connect: ...").
//     A name that does not resolve: resolve's error, unchanged. An empty list: std::invalid_argument.
//   - Cancelled: every attempt under way is cancelled and awaited, its socket closed, and connect
//     ends cancelled. If an attempt had connected before the cancel reached it, the connection is
//     delivered (completion wins) and the cancellation stays requested.
// Bound the whole of it with quell::timeout: a peer that drops SYNs is retried by the kernel for
// minutes.
struct connect_options {
  duration attempt_delay = std::chrono::milliseconds(250);
  resolve_options resolve;  // connect(host, port) only
};

namespace detail {
// Counters for tests: what resolve did on this thread.
struct resolve_stats {
  std::uint64_t channels_opened = 0;
  std::uint64_t channels_open = 0;  // open now
  std::uint64_t queries = 0;        // ares_getaddrinfo calls
  std::uint64_t callbacks = 0;      // their completion callbacks (exactly one per query)
};
const resolve_stats& resolve_stats_for_testing() noexcept;
// The order Happy Eyeballs tries `peers` in (see above).
std::vector<address> happy_eyeballs_order(std::span<const address> peers);
}  // namespace detail

}  // namespace quell

template <>
struct std::is_error_code_enum<quell::resolve_errc> : std::true_type {};
