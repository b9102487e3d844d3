// docs/guide/05-coming-from-asio.md: `read || timer` as race, and as a deadline.
#include <optional>
#include <string>
#include <tuple>
#include <variant>

#include "guide.hpp"

// [guide:read-or-timeout]
quell::task<> wait_for_a_request(quell::tcp_stream& conn) {
  char buf[64];
  // Asio: co_await (conn.async_read_some(buffer(buf)) || timer.async_wait())
  // r is a std::variant<std::size_t, std::monostate>: the index says which branch won.
  auto r = co_await quell::race(conn.read_some(buf), quell::sleep_for(200ms));
  if (r.index() == 1) note("race: the timer won, the read was cancelled and waited for");

  // The same with a deadline: std::nullopt when the time is up.
  std::optional<std::size_t> n = co_await quell::move_on_after(200ms, conn.read_some(buf));
  if (n) note("move_on_after: read \"" + std::string(buf, *n) + "\"");
}
// [/guide:read-or-timeout]

quell::task<> talk_late(quell::tcp_stream& conn) {
  co_await quell::sleep_for(300ms);
  co_await conn.write_all("GET /");
}

quell::task<> quiet_then_talk() {
  auto listener = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
  auto connect = quell::tcp_stream::connect(listener.local_address());
  auto conns = co_await quell::join(listener.accept(), std::move(connect));
  quell::tcp_stream& server = std::get<0>(conns);
  quell::tcp_stream& client = std::get<1>(conns);
  co_await quell::join(wait_for_a_request(server), talk_late(client));
  co_await client.close();
  co_await server.close();
  co_await listener.close();
}

int main() {
  quell::virtual_clock clock;
  clock.set_io_grace(10ms);
  quell::executor{quiet_then_talk(), clock}.run();
}
