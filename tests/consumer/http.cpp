#include <cstdio>
#include <quell/http.hpp>
#include <quell/quell.hpp>

quell::task<int> exchange() {
  quell::http::server srv{quell::address::parse("127.0.0.1", 0),
                          [](quell::http::request& r) -> quell::task<quell::http::response> {
                            co_return quell::http::response::text(200, "hello " + std::string(r.path()));
                          }};
  int status = 0;
  auto both = [&](quell::scope& s) -> quell::task<void> {
    s.spawn(srv.run());
    auto c = co_await quell::http::client::connect(srv.local_address());
    auto r = co_await c.get("/consumer");
    std::printf("consumer_http: %d %s\n", r.status, r.body.c_str());
    status = r.body == "hello /consumer" ? r.status : 0;
    co_await c.close();
    srv.shutdown(std::chrono::seconds(0));
  };
  co_await quell::with_scope(both);
  co_return status;
}

int main() { return quell::block_on(exchange()) == 200 ? 0 : 1; }
