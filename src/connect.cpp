// tcp_stream::connect(host, port) and connect_any: Happy Eyeballs (RFC 8305) on a scope (see
// include/quell/resolve.hpp for the contract).
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "quell/event.hpp"
#include "quell/net.hpp"
#include "quell/race.hpp"
#include "quell/resolve.hpp"
#include "quell/scope.hpp"
#include "quell/this_task.hpp"
#include "quell/time.hpp"

namespace quell {

namespace {

// Every attempt failed: the first attempt's error code, and a message that lists them all (a
// plain system_error would append the first error's text once more).
class connect_error final : public std::system_error {
 public:
  connect_error(std::error_code ec, std::string what)
      : std::system_error(ec), what_(std::make_shared<const std::string>(std::move(what))) {}
  const char* what() const noexcept override { return what_->c_str(); }

 private:
  std::shared_ptr<const std::string> what_;
};

struct attempts {
  std::vector<address> order;
  std::unique_ptr<event[]> started, failed;  // per attempt
  std::vector<std::error_code> errors;       // per attempt; set when it failed
  std::vector<bool> tried;
  std::optional<tcp_stream> winner;
  duration delay{};
};

// Attempt i waits until attempt i-1 has started and then either failed or had `delay` to try.
task<> attempt(attempts& st, scope& s, std::size_t i) {
  if (i > 0) {
    co_await st.started[i - 1].wait();
    co_await race(sleep_for(st.delay), st.failed[i - 1].wait());
  }
  st.tried[i] = true;
  st.started[i].set();
  try {
    tcp_stream c = co_await tcp_stream::connect(st.order[i]);
    if (!st.winner) {
      st.winner.emplace(std::move(c));
      s.cancel(cancel_reason(cancel_kind::race_decided));  // the others: cancelled, and awaited by the scope
    }
    // Otherwise a second connection in the same turn: `c` closes it as this frame ends.
  } catch (const std::system_error& e) {
    st.errors[i] = e.code();
    st.failed[i].set();
  }
}

task<> spawn_all(attempts& st, scope& s) {
  for (std::size_t i = 0; i < st.order.size(); ++i) s.spawn(attempt(st, s, i));
  co_return;
}

task<tcp_stream> happy_eyeballs(std::vector<address> peers, std::string label, duration delay) {
  if (peers.empty()) throw std::invalid_argument("quell: " + label + ": no address to connect to");
  attempts st;
  st.order = detail::happy_eyeballs_order(peers);
  const std::size_t n = st.order.size();
  st.started = std::make_unique<event[]>(n);
  st.failed = std::make_unique<event[]>(n);
  st.errors.resize(n);
  st.tried.assign(n, false);
  st.delay = delay;
  // The body only spawns: the scope ends when every attempt has (a winner cancels the rest; a
  // cancel of this task cancels them all), so a connection made before a cancel landed is seen.
  co_await with_scope([&st](scope& s) { return spawn_all(st, s); });
  if (st.winner) co_return std::move(*st.winner);
  if (this_task::cancel_requested()) co_await this_task::checkpoint();  // ends cancelled here
  std::string what = label;
  std::error_code first;
  bool any = false;
  for (std::size_t i = 0; i < n; ++i) {
    if (!st.tried[i]) continue;
    what += any ? "; " : ": ";
    what += st.order[i].to_string() + ": " + st.errors[i].message();
    if (!any) first = st.errors[i];
    any = true;
  }
  throw connect_error(first, std::move(what));
}

task<tcp_stream> connect_host(std::string host, std::uint16_t port, connect_options options) {
  std::vector<address> peers = co_await resolve(host, std::to_string(port), options.resolve);
  const bool v6 = host.find(':') != std::string::npos && host.front() != '[';
  std::string label = "connect " + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
  co_return co_await happy_eyeballs(std::move(peers), std::move(label), options.attempt_delay);
}

}  // namespace

namespace detail {
std::vector<address> happy_eyeballs_order(std::span<const address> peers) {
  std::vector<address> out;
  if (peers.empty()) return out;
  const int first = peers[0].family();
  std::vector<address> a, b;
  for (const address& p : peers) (p.family() == first ? a : b).push_back(p);
  out.reserve(peers.size());
  for (std::size_t i = 0; i < a.size() || i < b.size(); ++i) {
    if (i < a.size()) out.push_back(a[i]);
    if (i < b.size()) out.push_back(b[i]);
  }
  return out;
}
}  // namespace detail

task<tcp_stream> tcp_stream::connect(std::string_view host, std::uint16_t port) {
  return connect_host(std::string(host), port, connect_options{});
}
task<tcp_stream> tcp_stream::connect(std::string_view host, std::uint16_t port, const connect_options& options) {
  return connect_host(std::string(host), port, options);
}
task<tcp_stream> tcp_stream::connect_any(std::span<const address> peers) {
  return happy_eyeballs(std::vector<address>(peers.begin(), peers.end()), "connect", connect_options{}.attempt_delay);
}
task<tcp_stream> tcp_stream::connect_any(std::span<const address> peers, const connect_options& options) {
  return happy_eyeballs(std::vector<address>(peers.begin(), peers.end()), "connect", options.attempt_delay);
}

}  // namespace quell
