// resolve(): c-ares driven by quell's readiness leaves and timers (see include/quell/resolve.hpp).
#include "quell/resolve.hpp"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <utility>

#include "quell/readiness.hpp"
#include "quell/scope.hpp"
#include "quell/time.hpp"

namespace quell {

namespace {

thread_local detail::resolve_stats stats;

class resolve_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "quell.resolve"; }
  std::string message(int c) const override {
    switch (static_cast<resolve_errc>(c)) {
      case resolve_errc::not_found:
        return "not found";
      case resolve_errc::no_address:
        return "no address";
      case resolve_errc::timed_out:
        return "timed out";
      case resolve_errc::refused:
        return "server refused";
      case resolve_errc::server_failure:
        return "server failure";
      case resolve_errc::bad_name:
        return "invalid name";
      case resolve_errc::bad_service:
        return "unknown service";
      case resolve_errc::other:
        break;
    }
    return "DNS error";
  }
};

resolve_errc errc_of(int status) noexcept {
  switch (status) {
    case ARES_ENOTFOUND:
      return resolve_errc::not_found;
    case ARES_ENODATA:
      return resolve_errc::no_address;
    case ARES_ETIMEOUT:
      return resolve_errc::timed_out;
    case ARES_EREFUSED:
    case ARES_ECONNREFUSED:  // c-ares 1.18 reports an answer REFUSED by every server so too
      return resolve_errc::refused;
    case ARES_ESERVFAIL:
    case ARES_EFORMERR:
    case ARES_EBADRESP:
    case ARES_ENOTIMP:
      return resolve_errc::server_failure;
    case ARES_EBADNAME:
    case ARES_ENONAME:
      return resolve_errc::bad_name;
    case ARES_ESERVICE:
      return resolve_errc::bad_service;
    default:
      return resolve_errc::other;
  }
}

[[noreturn]] void fail(const std::string& host, int status) {
  const resolve_errc e = errc_of(status);
  std::string what = "resolve " + host;
  if (e == resolve_errc::other) what += std::string(": ") + ares_strerror(status);
  throw std::system_error(make_error_code(e), what);
}

void init_library() {
  // ares_library_init is not thread-safe in c-ares before 1.23: once per process. On Linux it
  // allocates nothing, so it is never undone.
  static const int rc = ares_library_init(ARES_LIB_INIT_ALL);
  if (rc != ARES_SUCCESS) throw std::runtime_error(std::string("quell: ares_library_init: ") + ares_strerror(rc));
}

void add_unique(std::vector<address>& out, const sockaddr* sa, socklen_t len) {
  address a = address::from(sa, len);
  for (const address& b : out) {
    if (b.size() == a.size() && std::memcmp(b.data(), a.data(), a.size()) == 0) return;
  }
  out.push_back(a);
}

bool family_ok(int family, address_family want) noexcept {
  return want == address_family::any || (want == address_family::ipv4 && family == AF_INET) ||
         (want == address_family::ipv6 && family == AF_INET6);
}

// A numeric host with a numeric (or no) service needs no query.
std::optional<address> numeric(const std::string& host, const std::string& service, address_family want) {
  std::uint32_t port = 0;
  if (!service.empty()) {
    if (service.size() > 5 || !std::all_of(service.begin(), service.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return std::nullopt;
    port = static_cast<std::uint32_t>(std::stoul(service));
    if (port > 65535) return std::nullopt;  // c-ares reports it
  }
  std::optional<address> a;
  try {
    a = address::parse(host, static_cast<std::uint16_t>(port));
  } catch (const std::invalid_argument&) {
    return std::nullopt;
  }
  if (!family_ok(a->family(), want)) fail(host, ARES_ENODATA);
  return a;
}

// One ares_getaddrinfo on a channel of its own. The destructor cancels the query (the callback
// runs, synchronously) and destroys the channel, closing its sockets: it runs only once no wait on
// those sockets is in flight (the waits live in a scope that has ended by then).
struct query {
  struct sock {
    ares_socket_t fd;
    bool read, write;
  };

  ares_channel ch = nullptr;
  std::vector<sock> socks;  // what c-ares wants to hear about, kept by on_sock_state
  bool done = false;
  int status = ARES_SUCCESS;
  std::vector<address> result;
  address_family family = address_family::any;

  query() = default;
  query(const query&) = delete;
  query& operator=(const query&) = delete;
  ~query() {
    if (!ch) return;
    ares_cancel(ch);  // a pending query calls back now, with ARES_ECANCELLED
    ares_destroy(ch);
    --stats.channels_open;
  }

  static void on_sock_state(void* data, ares_socket_t fd, int readable, int writable) noexcept {
    auto* q = static_cast<query*>(data);
    auto it = std::find_if(q->socks.begin(), q->socks.end(), [fd](const sock& s) { return s.fd == fd; });
    if (!readable && !writable) {
      if (it != q->socks.end()) q->socks.erase(it);
      return;
    }
    if (it == q->socks.end()) {
      q->socks.push_back({fd, readable != 0, writable != 0});
    } else {
      it->read = readable != 0;
      it->write = writable != 0;
    }
  }

  static void on_done(void* arg, int status, int, ares_addrinfo* res) noexcept {
    auto* q = static_cast<query*>(arg);
    ++stats.callbacks;
    q->done = true;
    q->status = status;
    if (status == ARES_SUCCESS && res) {
      try {
        for (ares_addrinfo_node* n = res->nodes; n; n = n->ai_next) {
          if (family_ok(n->ai_family, q->family)) add_unique(q->result, n->ai_addr, n->ai_addrlen);
        }
        if (q->result.empty()) q->status = ARES_ENODATA;
      } catch (...) {
        q->status = ARES_ENOMEM;
      }
    }
    if (res) ares_freeaddrinfo(res);
  }
};

void open_channel(query& q, const std::string& host, const resolve_options& options) {
  init_library();
  ares_options o{};
  int mask = ARES_OPT_SOCK_STATE_CB;
  o.sock_state_cb = &query::on_sock_state;
  o.sock_state_cb_data = &q;
  if (options.timeout.count() > 0) {
    mask |= ARES_OPT_TIMEOUTMS;
    o.timeout = static_cast<int>(options.timeout.count());
  }
  if (options.tries > 0) {
    mask |= ARES_OPT_TRIES;
    o.tries = options.tries;
  }
  char dns_only[] = "b";
  if (!options.hosts_file) {
    mask |= ARES_OPT_LOOKUPS;
    o.lookups = dns_only;
  }
  const int rc = ares_init_options(&q.ch, &o, mask);
  if (rc != ARES_SUCCESS) {
    q.ch = nullptr;
    fail(host, rc);
  }
  ++stats.channels_opened;
  ++stats.channels_open;
  if (options.servers.empty()) return;
  std::vector<ares_addr_port_node> nodes(options.servers.size());
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    const address& a = options.servers[i];
    ares_addr_port_node& n = nodes[i];
    n.next = i + 1 < nodes.size() ? &nodes[i + 1] : nullptr;
    n.family = a.family();
    if (a.family() == AF_INET) {
      std::memcpy(&n.addr.addr4, &reinterpret_cast<const sockaddr_in*>(a.data())->sin_addr, sizeof(in_addr));
    } else if (a.family() == AF_INET6) {
      std::memcpy(&n.addr.addr6, &reinterpret_cast<const sockaddr_in6*>(a.data())->sin6_addr, sizeof(in6_addr));
    } else {
      throw std::invalid_argument("quell: resolve " + host + ": a DNS server must be an IPv4 or IPv6 address, not " +
                                  a.to_string());
    }
    n.udp_port = n.tcp_port = a.port() ? a.port() : 53;
  }
  const int src = ares_set_servers_ports(q.ch, nodes.data());
  if (src != ARES_SUCCESS) fail(host, src);
}

// One child of the wait step: a socket of c-ares became ready.
task<> watch(scope& s, ares_socket_t fd, unsigned events, std::vector<std::pair<ares_socket_t, unsigned>>& fired) {
  const unsigned ready = co_await wait_for_events(fd, events);
  fired.emplace_back(fd, ready);
  s.cancel();
}

// The other: c-ares' next timeout came.
task<> alarm(scope& s, duration d, bool& fired) {
  co_await sleep_for(d);
  fired = true;
  s.cancel();
}

task<> arm(scope& s, const std::vector<query::sock>& want, duration timeout, bool has_timeout,
           std::vector<std::pair<ares_socket_t, unsigned>>& fired, bool& timer) {
  for (const query::sock& w : want) {
    s.spawn(watch(s, w.fd, (w.read ? POLLIN : 0u) | (w.write ? POLLOUT : 0u), fired));
  }
  if (has_timeout) s.spawn(alarm(s, timeout, timer));
  co_return;
}

task<std::vector<address>> resolve_impl(std::string host, std::string service, resolve_options options) {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.find('\0') != std::string::npos || service.find('\0') != std::string::npos) fail(host, ARES_EBADNAME);
  if (std::optional<address> a = numeric(host, service, options.family)) co_return std::vector<address>{*a};

  query q;
  q.family = options.family;
  open_channel(q, host, options);
  ares_addrinfo_hints hints{};
  hints.ai_family = options.family == address_family::ipv4   ? AF_INET
                    : options.family == address_family::ipv6 ? AF_INET6
                                                             : AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;  // one entry per address (the port applies to any protocol)
  ++stats.queries;
  ares_getaddrinfo(q.ch, host.c_str(), service.empty() ? nullptr : service.c_str(), &hints, &query::on_done, &q);

  // Until c-ares has called back: wait for any of its sockets or its next timeout, then let it
  // process what happened. Only here, with no wait in flight, does c-ares run (and may close or
  // open sockets).
  while (!q.done) {
    const std::vector<query::sock> want = q.socks;
    timeval tv{};
    const timeval* next = ares_timeout(q.ch, nullptr, &tv);
    if (want.empty() && !next) fail(host, ARES_ESERVFAIL);  // c-ares waits for nothing: it will not call back
    const duration timeout = next ? std::chrono::duration_cast<duration>(std::chrono::seconds(next->tv_sec) +
                                                                         std::chrono::microseconds(next->tv_usec))
                                  : duration::zero();
    std::vector<std::pair<ares_socket_t, unsigned>> fired;
    bool timer = false;
    // A scope's cancellation ends only when every wait has: a cancel lands here and resolve ends
    // at the next co_await (or delivers, if what fired completed the query).
    co_await with_scope([&](scope& s) { return arm(s, want, timeout, next != nullptr, fired, timer); });
    for (const auto& [fd, ev] : fired) {
      const bool in = (ev & (POLLIN | POLLERR | POLLHUP)) != 0;
      const bool out = (ev & (POLLOUT | POLLERR | POLLHUP)) != 0;
      ares_process_fd(q.ch, in ? fd : ARES_SOCKET_BAD, out ? fd : ARES_SOCKET_BAD);
    }
    if (fired.empty()) ares_process_fd(q.ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // timeouts only
  }
  if (q.status != ARES_SUCCESS) fail(host, q.status);
  co_return std::move(q.result);
}

}  // namespace

const std::error_category& resolve_category() noexcept {
  static const resolve_category_impl c;
  return c;
}

task<std::vector<address>> resolve(std::string_view host, std::string_view service, resolve_options options) {
  return resolve_impl(std::string(host), std::string(service), std::move(options));
}

namespace detail {
const resolve_stats& resolve_stats_for_testing() noexcept { return stats; }
}  // namespace detail

}  // namespace quell
