// A line protocol with a generator: `lines(stream)` yields each line a client sends, and a channel
// carries the replies to a writer task, so reading and writing run side by side on a connection.
//
// The server answers each line with the line in capitals. The program runs it against three
// clients; the last one goes away without reading its answers. That ends only its own
// connection: a write to it that fails cancels the connection's reader wherever it waits (inside
// the generator, whose producer then ends there), and the server goes on.
#include <cctype>
#include <cstdio>
#include <string>
#include <system_error>
#include <vector>

#include "quell/generator.hpp"
#include "quell/quell.hpp"

using namespace std::chrono_literals;
using quell::task;

namespace {

// The lines a stream carries, without their '\n', as they arrive; a last line without one is
// yielded at the end of the stream.
quell::generator<std::string> lines(quell::tcp_stream& s) {
  std::string buf;
  char chunk[512];
  for (;;) {
    for (std::size_t nl; (nl = buf.find('\n')) != std::string::npos;) {
      co_yield buf.substr(0, nl);
      buf.erase(0, nl + 1);
    }
    const std::size_t n = co_await s.read_some(chunk);
    if (n == 0) break;
    buf.append(chunk, n);
  }
  if (!buf.empty()) co_yield buf;
}

task<> serve(quell::tcp_stream conn, int& served) {
  quell::channel<std::string> replies{16};
  auto reader = [&]() -> task<> {
    auto in = lines(conn);
    while (auto line = co_await in.next()) {
      for (char& c : *line) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      co_await replies.send(*line + "\n");
      ++served;
    }
    replies.close();
  };
  auto writer = [&]() -> task<> {
    while (auto r = co_await replies.receive()) co_await conn.write_all(*r);
  };
  try {
    co_await quell::join(reader(), writer());
  } catch (const std::system_error&) {
    // the client went away: this connection ends, the server goes on
  }
  co_await conn.close();
}

task<std::string> client(quell::address server, std::vector<std::string> send, bool hang_up_mid_line) {
  auto c = co_await quell::tcp_stream::connect(server);
  std::string all;
  for (const auto& l : send) all += l + "\n";
  if (hang_up_mid_line) {
    co_await c.write_all(all + "and a half li");
    co_await c.close();  // gone: no end of line, no reading of the answers
    co_return "";
  }
  co_await c.write_all(all);
  c.shutdown();
  std::string got;
  char buf[256];
  for (std::size_t n; (n = co_await c.read_some(buf)) != 0;) got.append(buf, n);
  co_return got;
}

task<int> run() {
  auto l = quell::tcp_listener::bind(quell::address::parse("127.0.0.1", 0));
  int served = 0;
  std::string first, second;
  auto body = [&](quell::scope& s) -> task<> {
    auto acceptor = [&]() -> task<> {
      for (int i = 0; i < 3; ++i) {
        quell::tcp_stream conn = co_await l.accept();
        s.spawn(serve(std::move(conn), served));
      }
    };
    s.spawn(acceptor());
    // Named first: g++ 12 rejects a braced list inside a co_await ("array used as initializer").
    std::vector<std::string> a{"hello", "lines"}, b{"from", "a generator"}, c{"whole"};
    first = co_await client(l.local_address(), a, false);
    second = co_await client(l.local_address(), b, false);
    co_await client(l.local_address(), c, true);
  };
  co_await quell::with_scope(body);
  std::printf("first client got: %s", first.c_str());
  std::printf("second client got: %s", second.c_str());
  std::printf("%d lines served\n", served);
  const bool ok = first == "HELLO\nLINES\n" && second == "FROM\nA GENERATOR\n";
  co_return ok ? 0 : 1;
}

}  // namespace

int main() { return quell::block_on(run()); }
