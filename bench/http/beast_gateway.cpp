// beast_gateway.cpp: the Boost.Beast / Asio 1.81 peer of the HTTP benchmark (bench/http/run): the
// same two endpoints as quell_gateway, written the way an Asio user would, against Beast's and
// Asio's public API (C++20 awaitables, an io_context per thread, epoll).
//
//   GET /hello                 "hello\n"
//   GET /report?seconds=0      one job on an in-process job service over loopback TCP, in the
//                              line protocol of examples/gateway/job_service.hpp ("SUBMIT <id> 0"
//                              -> "RESULT <id> report after 0 ms"), through a pool of backend
//                              connections (one job per connection at a time), JSON answer.
//
// Keep-alive HTTP/1.1, Content-Length responses, as quell::http. No cancellation machinery: the
// peer measures the cost of the plain path that quell's carries its machinery along.
//
//   beast_gateway <port> [n]    listens on 127.0.0.1:<port> on n threads (default 1), each its own
//                               io_context, SO_REUSEPORT listener and backend pool (the job
//                               service on the first); prints "ready" when it accepts
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;

namespace {

// The job service: reads "SUBMIT <id> <ms>" lines, answers "RESULT <id> report after <ms> ms".
awaitable<void> job_session(tcp::socket s) {
  std::string buf;
  try {
    for (;;) {
      std::size_t n = co_await asio::async_read_until(s, asio::dynamic_buffer(buf), '\n', use_awaitable);
      std::string line = buf.substr(0, n - 1);
      buf.erase(0, n);
      unsigned long long id = 0, ms = 0;
      if (std::sscanf(line.c_str(), "SUBMIT %llu %llu", &id, &ms) != 2) co_return;
      if (ms) {
        asio::steady_timer t(s.get_executor(), std::chrono::milliseconds(ms));
        co_await t.async_wait(use_awaitable);
      }
      std::string reply = "RESULT " + std::to_string(id) + " report after " + std::to_string(ms) + " ms\n";
      co_await asio::async_write(s, asio::buffer(reply), use_awaitable);
    }
  } catch (const std::exception&) {
  }
}

awaitable<void> job_service(tcp::acceptor a) {
  for (;;) {
    tcp::socket s = co_await a.async_accept(use_awaitable);
    s.set_option(tcp::no_delay(true));
    asio::co_spawn(a.get_executor(), job_session(std::move(s)), asio::detached);
  }
}

struct backend_conn {
  explicit backend_conn(tcp::socket s) : sock(std::move(s)) {}
  tcp::socket sock;
  std::string buf;
  unsigned long long next_id = 1;
};

struct backend_pool {
  tcp::endpoint service;
  std::vector<std::unique_ptr<backend_conn>> idle;

  awaitable<std::string> run(unsigned long long ms) {
    std::unique_ptr<backend_conn> c;
    if (!idle.empty()) {
      c = std::move(idle.back());
      idle.pop_back();
    } else {
      tcp::socket s(co_await asio::this_coro::executor);
      co_await s.async_connect(service, use_awaitable);
      s.set_option(tcp::no_delay(true));
      c = std::make_unique<backend_conn>(std::move(s));
    }
    const unsigned long long id = c->next_id++;
    std::string req = "SUBMIT " + std::to_string(id) + " " + std::to_string(ms) + "\n";
    co_await asio::async_write(c->sock, asio::buffer(req), use_awaitable);
    std::size_t n = co_await asio::async_read_until(c->sock, asio::dynamic_buffer(c->buf), '\n', use_awaitable);
    std::string line = c->buf.substr(0, n - 1);
    c->buf.erase(0, n);
    const std::string prefix = "RESULT " + std::to_string(id) + " ";
    if (line.rfind(prefix, 0) != 0) throw std::runtime_error("unexpected reply: " + line);
    idle.push_back(std::move(c));
    co_return line.substr(prefix.size());
  }
};

awaitable<void> http_session(tcp::socket s, backend_pool& jobs) {
  beast::flat_buffer buf;
  try {
    for (;;) {
      http::request<http::string_body> req;
      co_await http::async_read(s, buf, req, use_awaitable);
      http::response<http::string_body> res;
      res.version(req.version());
      res.keep_alive(req.keep_alive());
      const std::string target(req.target());
      if (target == "/hello") {
        res.result(http::status::ok);
        res.set(http::field::content_type, "text/plain; charset=utf-8");
        res.body() = "hello\n";
      } else if (target.rfind("/report?seconds=", 0) == 0) {
        const unsigned long long ms =
            static_cast<unsigned long long>(std::stod(target.substr(16)) * 1000.0 + 0.5);
        std::string result = co_await jobs.run(ms);
        res.result(http::status::ok);
        res.set(http::field::content_type, "application/json");
        res.body() = "{\"result\":\"" + result + "\"}\n";
      } else {
        res.result(http::status::not_found);
        res.body() = "not found\n";
      }
      res.prepare_payload();
      co_await http::async_write(s, res, use_awaitable);
      if (!res.keep_alive()) break;
    }
  } catch (const std::exception&) {
  }
  beast::error_code ec;
  s.shutdown(tcp::socket::shutdown_send, ec);
}

awaitable<void> http_server(tcp::acceptor a, backend_pool& jobs) {
  for (;;) {
    tcp::socket s = co_await a.async_accept(use_awaitable);
    s.set_option(tcp::no_delay(true));
    asio::co_spawn(a.get_executor(), http_session(std::move(s), jobs), asio::detached);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    std::fprintf(stderr, "usage: beast_gateway <port> [threads]\n");
    return 2;
  }
  const int threads = argc == 3 ? std::max(1, std::stoi(argv[2])) : 1;
  const auto port = static_cast<unsigned short>(std::stoi(argv[1]));
  // One io_context per thread (Asio's model for using every core without locks): each with its
  // own SO_REUSEPORT listener and its own backend pool; the job service on the first.
  std::vector<std::unique_ptr<asio::io_context>> ctx;
  for (int i = 0; i < threads; ++i) ctx.push_back(std::make_unique<asio::io_context>(1));
  tcp::acceptor service(*ctx[0], tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const tcp::endpoint service_at = service.local_endpoint();
  asio::co_spawn(*ctx[0], job_service(std::move(service)), asio::detached);
  std::vector<std::unique_ptr<backend_pool>> pools;
  for (int i = 0; i < threads; ++i) {
    pools.push_back(std::make_unique<backend_pool>(backend_pool{service_at, {}}));
    tcp::acceptor front(*ctx[static_cast<std::size_t>(i)]);
    const tcp::endpoint at(asio::ip::make_address("127.0.0.1"), port);
    front.open(at.protocol());
    front.set_option(tcp::acceptor::reuse_address(true));
    if (threads > 1) front.set_option(asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>(true));
    front.bind(at);
    front.listen(asio::socket_base::max_listen_connections);
    asio::co_spawn(*ctx[static_cast<std::size_t>(i)], http_server(std::move(front), *pools.back()), asio::detached);
  }
  std::printf("ready\n");
  std::fflush(stdout);
  std::vector<std::thread> others;
  for (int i = 1; i < threads; ++i) others.emplace_back([&ctx, i] { ctx[static_cast<std::size_t>(i)]->run(); });
  ctx[0]->run();
  for (auto& t : others) t.join();
}
