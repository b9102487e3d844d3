// A crawler over a local site: for_each with a limit, under a time budget.
//
// A quell::http server serves a small site: /page/N links to a few other pages; every tenth page
// is slow (2 s). The crawler fetches the site breadth first, one level at a time, each level with
// `for_each(urls, 8, fetch)` (never more than 8 requests in flight), the whole crawl under
// `move_on_after(budget)`. When the budget runs out, the requests still in flight are cancelled:
// each one's connection is closed, the server sees its client go away and cancels the handler,
// and the crawl returns what it has. Nothing is left running: the program checks it.
//
//   quell_example_crawler [budget-ms] [slow-page-ms]      (defaults: 500, 2000)
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "quell/for_each.hpp"
#include "quell/http.hpp"
#include "quell/quell.hpp"

using namespace std::chrono_literals;
using quell::task;

namespace {

constexpr int pages = 200;

// Page n links to 3n+1, 3n+2, 3n+3 (a tree of the site's pages).
std::vector<int> links_of(int n) {
  std::vector<int> out;
  for (int k = 1; k <= 3; ++k) {
    if (3 * n + k < pages) out.push_back(3 * n + k);
  }
  return out;
}

task<quell::http::response> serve_page(quell::http::request& req, std::chrono::milliseconds slow,
                                       int& handlers_cancelled) {
  const std::string_view path = req.path();
  if (path.substr(0, 6) != "/page/") co_return quell::http::response::text(404, "no such page\n");
  const int n = std::atoi(std::string(path.substr(6)).c_str());
  if (n < 0 || n >= pages) co_return quell::http::response::text(404, "no such page\n");
  if (n % 10 == 9) {
    auto count = [&handlers_cancelled] { ++handlers_cancelled; };
    co_await quell::on_cancel(quell::sleep_for(slow), count);  // a slow page
  }
  std::string body;
  for (int l : links_of(n)) body += "/page/" + std::to_string(l) + "\n";
  co_return quell::http::response::text(200, body);
}

struct crawl_stats {
  std::set<int> fetched;
  int in_flight = 0, most_in_flight = 0, cut_short = 0;
};

task<> fetch(quell::address site, int n, std::vector<int>& next, crawl_stats& st) {
  ++st.in_flight;
  st.most_in_flight = std::max(st.most_in_flight, st.in_flight);
  struct leave {
    crawl_stats& s;
    bool done = false;
    ~leave() {
      --s.in_flight;
      if (!done) ++s.cut_short;  // cancelled by the budget
    }
  } l{st};
  auto c = co_await quell::http::client::connect(site);
  auto r = co_await c.get("/page/" + std::to_string(n));
  co_await c.close();
  l.done = true;
  if (r.status != 200) co_return;
  st.fetched.insert(n);
  std::size_t at = 0;
  while ((at = r.body.find("/page/", at)) != std::string::npos) {
    next.push_back(std::atoi(r.body.c_str() + at + 6));
    at += 6;
  }
}

task<int> crawl(std::chrono::milliseconds budget, std::chrono::milliseconds slow) {
  int handlers_cancelled = 0;
  auto handler = [&](quell::http::request& req) { return serve_page(req, slow, handlers_cancelled); };
  quell::http::server srv{quell::address::parse("127.0.0.1", 0), handler};
  const quell::address site = srv.local_address();
  crawl_stats st;
  auto body = [&](quell::scope& s) -> task<> {
    s.spawn(srv.run());
    auto levels = [&]() -> task<> {
      std::vector<int> level{0};
      while (!level.empty()) {
        std::vector<int> next;
        co_await quell::for_each(std::move(level), 8, [&](int n) { return fetch(site, n, next, st); });
        level = std::move(next);
      }
    };
    const bool finished = (co_await quell::move_on_after(budget, levels())).has_value();
    std::printf("crawl %s: %zu of %d pages fetched, at most %d requests in flight, %d cut short by the budget\n",
                finished ? "finished" : "stopped by its budget", st.fetched.size(), pages, st.most_in_flight,
                st.cut_short);
    srv.shutdown(1s);
  };
  co_await quell::with_scope(body);
  std::printf("the server cancelled %d handlers whose client went away; %d requests still running\n",
              handlers_cancelled, st.in_flight);
  if (st.most_in_flight > 8 || st.in_flight != 0 || st.fetched.empty()) co_return 1;
  co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const int budget = argc > 1 ? std::atoi(argv[1]) : 500;
  const int slow = argc > 2 ? std::atoi(argv[2]) : 2000;
  return quell::block_on(crawl(std::chrono::milliseconds(budget), std::chrono::milliseconds(slow)));
}
