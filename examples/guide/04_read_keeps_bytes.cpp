// docs/guide/04-io-and-testing.md: a cancelled read keeps the bytes it received.
#include <string>
#include <utility>

#include "guide.hpp"

// [guide:read-keeps-bytes]
quell::task<> read_with_a_deadline() {
  auto listener = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
  auto connect = quell::tcp_stream::connect(listener.local_address());
  auto [server, client] = co_await quell::join(listener.accept(), std::move(connect));

  co_await client.write_all("hel");  // three of the five bytes the server wants
  char buf[5];
  auto got = co_await quell::move_on_after(50ms, server.read_exact(buf));
  if (!got) note("read_exact gave up, " + std::to_string(server.buffered()) + " bytes kept in the stream");

  co_await client.write_all("lo");
  co_await server.read_exact(buf);
  note("the next read_exact got \"" + std::string(buf, sizeof buf) + "\"");

  co_await client.close();
  co_await server.close();
  co_await listener.close();
}

int main() {
  quell::virtual_clock clock;
  clock.set_io_grace(10ms);  // real sockets: give the kernel this much real time before time jumps
  quell::executor{read_with_a_deadline(), clock}.run();
}
// [/guide:read-keeps-bytes]
