// docs/guide/04-io-and-testing.md: connecting to a host name resolves it without blocking and
// tries its addresses the Happy Eyeballs way; one that refuses does not delay the next.
#include <sys/socket.h>

#include <string>
#include <utility>

#include "guide.hpp"

quell::task<> serve_one(quell::tcp_listener& listener) {
  quell::tcp_stream conn = co_await listener.accept();
  co_await conn.write_all("hello from the server\n");
  co_await conn.close();
}

// [guide:connect-by-name]
quell::task<> fetch_greeting(std::uint16_t port) {
  // "localhost" comes from /etc/hosts: 127.0.0.1, and ::1 where the host has IPv6. Only the IPv4
  // address listens; an attempt that is refused starts the next one at once.
  quell::tcp_stream conn = co_await quell::timeout(5s, quell::tcp_stream::connect("localhost", port));
  const bool v6 = conn.peer_address().family() == AF_INET6;
  note(std::string("connected over ") + (v6 ? "IPv6" : "IPv4"));
  char buf[22];
  co_await conn.read_exact(buf);
  note("read: " + std::string(buf, sizeof buf - 1));
  co_await conn.close();
}
// [/guide:connect-by-name]

quell::task<> both() {
  auto listener = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
  co_await quell::join(serve_one(listener), fetch_greeting(listener.local_address().port()));
  co_await listener.close();
}

int main() {
  quell::virtual_clock clock;
  clock.set_io_grace(50ms);  // real sockets: give the kernel this much real time before time jumps
  quell::executor{both(), clock}.run();
}
