// quell_gateway: the gateway (gateway.hpp) as a program, and its demo.
//
//   quell_gateway [--listen=127.0.0.1:8080] [--permits=4] [--backend=embedded | postgres://...]
//                 [--pool=8] [--cancel-timeout=1] [--grace=5] [--ignore-cancels] [--trace]
//                 [--max-waiting=64] [--max-wait=30] [--max-seconds=60] [--max-connections=10000]
//                 [--idle-timeout=60] [--header-timeout=10] [--body-timeout=30] [--max-body-memory=64]
//                 [--cores=N] [--backend-pool=per-core|shared] [--tls-cert=FILE --tls-key=FILE]
//   quell_gateway --demo
//
// --cores (default: every CPU the process may use) runs the HTTP server on that many cores of a
// quell::runtime, one SO_REUSEPORT listener per core, with one permit pool for all of them.
// --backend-pool=per-core (the default) gives each core its own backend connections (--pool of
// them per core); shared keeps one pool on core 0, which the other cores' requests reach through
// quell::on (their cancels follow them there).
// The embedded backend is a job service on a loopback port in the same process (job_service.hpp).
// SIGINT/SIGTERM start a graceful shutdown (stop accepting, let requests finish for --grace
// seconds, then cancel them and wait for their backend cancels; exit status 0); a second signal
// forces it (requests and their cleanup cancelled at once, unconfirmed backend connections closed;
// exit status 128 + the first signal's number: 130 for SIGINT); a third exits at once.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "gateway.hpp"
#include "job_backend.hpp"
#include "job_service.hpp"
#include "quell/http.hpp"
#include "quell/quell.hpp"
#ifdef GATEWAY_HAVE_PG
#include "pg_backend.hpp"
#endif

using namespace std::chrono_literals;
namespace http = quell::http;
using quell::task;

namespace {

struct config {
  std::string listen = "127.0.0.1:8080";
  std::size_t permits = 4;
  std::string backend = "embedded";
  std::size_t pool = 8;
  double cancel_timeout = 1;
  double grace = 5;
  bool ignore_cancels = false;
  bool trace = false;
  bool demo = false;
  std::size_t max_waiting = 64;
  double max_wait = 30;
  double max_seconds = 60;
  std::size_t max_connections = 10000;
  double idle_timeout = 60, header_timeout = 10, body_timeout = 30;
  double max_body_memory_mib = 64;
  unsigned cores = 0;                     // 0: every CPU the process may use
  std::string backend_pool = "per-core";  // or "shared"
  std::string tls_cert, tls_key;          // both: serve HTTPS (PEM chain, leaf first; its key)
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "quell_gateway: %s\n"
               "usage: quell_gateway [--listen=HOST:PORT] [--permits=K] [--backend=embedded|postgres://...]\n"
               "                     [--pool=N] [--cancel-timeout=SECONDS] [--grace=SECONDS] [--ignore-cancels]\n"
               "                     [--max-waiting=N] [--max-wait=SECONDS] [--max-seconds=SECONDS]\n"
               "                     [--max-connections=N] [--idle-timeout=SECONDS] [--header-timeout=SECONDS]\n"
               "                     [--body-timeout=SECONDS] [--max-body-memory=MIB] [--cores=N]\n"
               "                     [--backend-pool=per-core|shared] [--tls-cert=FILE --tls-key=FILE] [--trace] | --demo\n",
               why.c_str());
  std::exit(2);
}

double number(const std::string& key, const std::string& v, double lo, double hi) {
  double d = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
  if (ec != std::errc() || end != v.data() + v.size() || d < lo || d > hi)
    usage(key + " wants a number between " + std::to_string(lo) + " and " + std::to_string(hi) + ", not '" + v + "'");
  return d;
}

config parse(int argc, char** argv) {
  config c;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto eq = a.find('=');
    std::string key = a.substr(0, eq), val = eq == std::string::npos ? "" : a.substr(eq + 1);
    if (key == "--listen")
      c.listen = val;
    else if (key == "--permits")
      c.permits = static_cast<std::size_t>(number(key, val, 1, 100000));
    else if (key == "--backend")
      c.backend = val;
    else if (key == "--pool")
      c.pool = static_cast<std::size_t>(number(key, val, 1, 10000));
    else if (key == "--cancel-timeout")
      c.cancel_timeout = number(key, val, 0.001, 3600);
    else if (key == "--grace")
      c.grace = number(key, val, 0, 3600);
    else if (key == "--ignore-cancels")
      c.ignore_cancels = true;
    else if (key == "--trace")
      c.trace = true;
    else if (key == "--demo")
      c.demo = true;
    else if (key == "--max-waiting")
      c.max_waiting = static_cast<std::size_t>(number(key, val, 0, 1000000));
    else if (key == "--max-wait")
      c.max_wait = number(key, val, 0, 3600);
    else if (key == "--max-seconds")
      c.max_seconds = number(key, val, 0, 3600);
    else if (key == "--max-connections")
      c.max_connections = static_cast<std::size_t>(number(key, val, 1, 10000000));
    else if (key == "--idle-timeout")
      c.idle_timeout = number(key, val, 0.001, 86400);
    else if (key == "--header-timeout")
      c.header_timeout = number(key, val, 0.001, 3600);
    else if (key == "--body-timeout")
      c.body_timeout = number(key, val, 0.001, 3600);
    else if (key == "--max-body-memory")
      c.max_body_memory_mib = number(key, val, 1, 1024 * 1024);
    else if (key == "--cores")
      c.cores = static_cast<unsigned>(number(key, val, 1, 4096));
    else if (key == "--tls-cert")
      c.tls_cert = val;
    else if (key == "--tls-key")
      c.tls_key = val;
    else if (key == "--backend-pool") {
      if (val != "per-core" && val != "shared") usage("--backend-pool wants 'per-core' or 'shared', not '" + val + "'");
      c.backend_pool = val;
    } else
      usage("unknown option '" + a + "'");
  }
  if (c.tls_cert.empty() != c.tls_key.empty()) usage("--tls-cert and --tls-key go together");
  // Checked here, on the main thread before any core starts: usage() exits the process.
  const bool postgres = c.backend.rfind("postgres://", 0) == 0 || c.backend.rfind("postgresql://", 0) == 0 ||
                        c.backend.find('=') != std::string::npos;
  if (c.backend != "embedded" && !postgres)
    usage("--backend wants 'embedded' or a postgres:// URI, not '" + c.backend + "'");
#ifndef GATEWAY_HAVE_PG
  if (postgres) usage("this build has no PostgreSQL support (libpq-dev was missing)");
#endif
  return c;
}

quell::address parse_listen(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) usage("--listen wants HOST:PORT, not '" + s + "'");
  std::string host = s.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const double port = number("--listen port", s.substr(colon + 1), 0, 65535);
  try {
    return quell::address::parse(host, static_cast<std::uint16_t>(port));
  } catch (const std::invalid_argument&) {
    usage("--listen wants a numeric address, not '" + host + "'");
  }
}

quell::duration seconds(double s) {
  return std::chrono::duration_cast<quell::duration>(std::chrono::duration<double>(s));
}

// The backend a config names: the embedded job service (started by the caller) or PostgreSQL.
std::unique_ptr<gateway::backend> make_backend(const config& c, gateway::job_service* svc) {
  if (svc) {
    gateway::job_backend_options o;
    o.service = svc->local_address();
    o.pool_size = c.pool;
    o.cancel_timeout = seconds(c.cancel_timeout);
    o.label = "embedded job service";
    return std::make_unique<gateway::job_backend>(o);
  }
#ifdef GATEWAY_HAVE_PG
  return std::make_unique<gateway::pg_backend>(c.backend, c.pool, seconds(c.cancel_timeout));
#else
  throw std::logic_error("no PostgreSQL support");  // parse() refused the option already
#endif
}

// What the signals did to a run: 0 while none came; the first signal's number once a second one
// forced the shutdown (the exit status is then 128 + it, the shell's convention).
struct shutdown_state {
  int forced_by = 0;
};

// Waits for SIGINT/SIGTERM: the first starts the server's graceful shutdown; the second forces it
// (every request is cancelled, and so is its cleanup: a backend cancel still waiting for its
// acknowledgement is abandoned and its connection closed); the third exits at once.
task<void> watch_signals(quell::signal_set& sigs, http::server& srv, gateway::app& app,
                         quell::spawn_handle<void>& server_task, quell::duration grace, shutdown_state& state) {
  const int first = co_await sigs.wait();
  const char* name = first == SIGINT ? "SIGINT" : "SIGTERM";
  std::printf(
      "%s: graceful shutdown (no new connections; %.1f s for requests in flight; "
      "requests waiting for a permit are answered 503)\n",
      name, std::chrono::duration<double>(grace).count());
  std::fflush(stdout);
  app.stop_admitting();
  srv.shutdown(grace);
  co_await sigs.wait();
  std::printf(
      "second signal: forced shutdown: cancelling every request and its cleanup now "
      "(a third signal exits at once)\n");
  std::fflush(stdout);
  state.forced_by = first;
  server_task.force_cancel(quell::cancel_reason(quell::cancel_kind::signal, std::string(name) + " again"));
  co_await sigs.wait();
  std::printf("third signal: exiting now\n");
  std::fflush(stdout);
  std::_Exit(128 + first);
}

// Runs on core 0 of the runtime; the HTTP server serves on every core.
task<int> serve(const config& c, quell::signal_set& sigs) {
  const quell::address where = parse_listen(c.listen);
  std::optional<gateway::job_service> svc;
  if (c.backend == "embedded") {
    svc.emplace(gateway::job_service::bind());
    svc->set_ignore_cancels(c.ignore_cancels);
  }
  // The backends: one per core (core i's requests use backends[i], whose connections are then
  // I/O of core i's ring), or one that the other cores reach through on(). They connect lazily
  // and are destroyed at the end of this function, once every core's part of the run (every
  // request, every cancel still waiting for its acknowledgement) has ended: nothing of theirs is
  // in flight any more, whichever way the run ended.
  const unsigned cores = quell::core_count();
  const bool per_core = c.backend_pool == "per-core" && cores > 1;
  std::vector<std::unique_ptr<gateway::backend>> backends;
  for (unsigned i = 0; i < (per_core ? cores : 1u); ++i) backends.push_back(make_backend(c, svc ? &*svc : nullptr));
  std::function<void(const std::string&)> trace;
  if (c.trace)
    trace = [](const std::string& line) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    };
  gateway::app_options ao;
  ao.permits = c.permits;
  ao.max_waiting = c.max_waiting;
  ao.max_wait = seconds(c.max_wait);
  ao.max_seconds = c.max_seconds;
  ao.trace = trace;
  ao.backend_core = quell::this_core();
  http::server_options so;
  so.max_connections = c.max_connections;
  so.idle_timeout = seconds(c.idle_timeout);
  so.header_timeout = seconds(c.header_timeout);
  so.body_timeout = seconds(c.body_timeout);
  so.max_buffered_body_bytes = static_cast<std::size_t>(c.max_body_memory_mib * 1024 * 1024);
  // With one core, no SO_REUSEPORT: a second gateway started on the same port then fails to bind
  // instead of quietly taking a share of the connections (as it would beside reuse_port ones).
  so.every_core = cores > 1;
  if (!c.tls_cert.empty()) {
    quell::tls_options t;
    t.cert_chain_file = c.tls_cert;
    t.private_key_file = c.tls_key;
    t.verify_peer = false;  // clients are not asked for certificates
    so.tls = quell::tls_context::server(t);
  }
  std::optional<gateway::app> app;
  std::optional<http::server> srv;
  std::string final_stats;

  quell::spawn_handle<void> server_task;
  shutdown_state state;
  quell::event server_ended;
  auto run_server = [&]() -> task<void> {
    struct set_at_end {
      quell::event& e;
      ~set_at_end() { e.set(); }
    } ended{server_ended};
    co_await srv->run();
  };
  auto all = [&](quell::scope& s) -> task<void> {
    if (svc) s.spawn([&] { return svc->serve(); });
    std::vector<gateway::backend*> used;
    for (auto& b : backends) used.push_back(b.get());
    app.emplace(std::move(used), ao);
    srv.emplace(where, app->handler(), so);
    std::printf("quell gateway on %s://%s: %u cores, %zu permits, backend: %s%s\n", c.tls_cert.empty() ? "http" : "https",
                srv->local_address().to_string().c_str(), cores, c.permits, backends[0]->describe().c_str(),
                per_core    ? " (one per core)"
                : cores > 1 ? " (one, shared by the cores)"
                            : "");
    std::fflush(stdout);
    server_task = s.spawn(run_server);
    s.spawn(watch_signals(sigs, *srv, *app, server_task, seconds(c.grace), state));
    // Not `co_await server_task`: after a forced shutdown the server ends cancelled, which is how
    // this program is meant to end, not a cancellation to pass up.
    co_await server_ended.wait();
    final_stats = app->stats_json();
    s.cancel(quell::cancel_reason(quell::cancel_kind::shutdown));  // the job service, the signal watcher
  };
  co_await quell::with_scope(all);
  if (app) {
    std::printf("stopped%s: %s\n", state.forced_by ? " (forced)" : "", final_stats.c_str());
    std::fflush(stdout);
  }
  co_return state.forced_by ? 128 + state.forced_by : 0;
}

// ---- the demo: the gateway and a scripted client on real sockets, in one process ----

class demo {
 public:
  explicit demo(quell::signal_set& sigs) : sigs_(sigs) {}

  // Two cores: the server on both, the job service and its (shared) backend on core 0.
  int run() {
    auto body = [this]() -> task<void> { co_await script(); };
    quell::runtime rt{2};
    rt.run(body());
    return 0;
  }

 private:
  void say(const std::string& line) {
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::printf("[%5.2f s] %s\n", t, line.c_str());
    std::fflush(stdout);
  }

  // Prints the part of a task tree (its text form) from the first task whose line contains `what`
  // down to the end of that task's subtree.
  static void print_subtree(const std::string& tree, const std::string& what) {
    std::size_t at = tree.find(what);
    if (at == std::string::npos) {
      std::printf("%s", tree.c_str());
      return;
    }
    at = tree.rfind('\n', at) + 1;
    const std::size_t indent = tree.find('-', at) - at;
    std::size_t end = tree.find('\n', at);
    while (end != std::string::npos && end + 1 < tree.size()) {
      const std::size_t next = end + 1;
      const std::size_t dash = tree.find_first_not_of(' ', next);
      if (dash - next <= indent && tree[dash] == '-') break;  // a sibling or an ancestor's sibling
      end = tree.find('\n', next);
    }
    const std::string part = tree.substr(at, end == std::string::npos ? std::string::npos : end - at);
    std::size_t line = 0;  // each line without the subtree's own indentation
    while (line < part.size()) {
      std::size_t nl = part.find('\n', line);
      if (nl == std::string::npos) nl = part.size();
      std::printf("  %s\n",
                  part.substr(line + std::min(indent, nl - line), nl - line - std::min(indent, nl - line)).c_str());
      line = nl + 1;
    }
  }

  // Waits until the gateway has no request left on any core (the demo's way to let a trace finish).
  task<void> settle() { co_await app_->idle(); }

  task<void> show(http::client& c, const std::string& target) {
    auto r = co_await c.get(target);
    std::string body = r.body;
    if (!body.empty() && body.back() == '\n') body.pop_back();
    say("client: " + std::to_string(r.status) + " " + body);
  }

  task<void> script() {
    svc_.emplace(gateway::job_service::bind());
    gateway::job_backend_options o;
    o.service = svc_->local_address();
    o.pool_size = 2;
    o.cancel_timeout = 1s;
    o.label = "embedded job service";
    backend_.emplace(o);
    app_.emplace(*backend_, 1, [this](const std::string& line) { say("gateway: " + line); });
    http::server_options so;
    so.every_core = true;
    srv_.emplace(quell::address::parse("127.0.0.1", 0), app_->handler(), so);
    const quell::address at = srv_->local_address();
    std::printf(
        "quell gateway demo: http://%s on 2 cores, 1 permit for both, backend: %s (on core 0), "
        "cancel timeout 1 s\n\n",
        at.to_string().c_str(), backend_->describe().c_str());

    auto all = [&](quell::scope& s) -> task<void> {
      s.spawn([&] { return svc_->serve(); });
      server_task_ = s.spawn(srv_->run());
      s.spawn(watch_signals(sigs_, *srv_, *app_, server_task_, 5s, state_));

      say("== 1. a normal request");
      {
        auto c = co_await http::client::connect(at);
        co_await show(c, "/report?seconds=0.3");
        co_await c.close();
      }

      std::printf("\n");
      say("== 2. the client disconnects mid-request: cancel sent -> ack -> permit released");
      {
        auto c = co_await http::client::connect(at);
        auto r = co_await quell::move_on_after(400ms, c.get("/report?seconds=5"));
        say(r ? "client: got an answer?" : "client: gives up after 0.4 s and closes the connection");
        co_await c.close();
        co_await settle();
        auto s2 = co_await http::client::connect(at);
        co_await show(s2, "/stats");
        co_await s2.close();
      }

      std::printf("\n");
      say("== 3. a request cut by its deadline (timeout=0.5): the job is cancelled, then 504");
      {
        auto c = co_await http::client::connect(at);
        co_await show(c, "/report?seconds=5&timeout=0.5");
        co_await c.close();
      }

      std::printf("\n");
      say("== 4. a backend that ignores cancels: the cancel times out after 1 s, the backend");
      say("      connection is closed, and the permit still comes back");
      {
        svc_->set_ignore_cancels(true);
        auto c = co_await http::client::connect(at);
        auto r = co_await quell::move_on_after(300ms, c.get("/report?seconds=5"));
        say(r ? "client: got an answer?" : "client: gives up after 0.3 s");
        co_await c.close();
        co_await quell::sleep_for(200ms);
        say("client: GET /debug/tasks while that backend cancel is in flight (the request's part):");
        {
          auto d = co_await http::client::connect(at);
          auto tree = co_await d.get("/debug/tasks");
          co_await d.close();
          print_subtree(tree.body, "report (");
        }
        co_await settle();
        svc_->set_ignore_cancels(false);
        say("backend connections closed instead of reused: " + std::to_string(backend_->connections_closed()));
        auto s2 = co_await http::client::connect(at);
        co_await show(s2, "/stats");
        co_await s2.close();
      }

      std::printf("\n");
      say("== 5. two cores, one permit: a client served on core 0 holds the permit and disconnects;");
      say("      a client served on core 1 waits for it and gets it only after the backend confirmed");
      {
        auto first = co_await gateway::connection_on(at, 0);
        auto second = co_await gateway::connection_on(at, 1);
        auto gives_up = [&]() -> task<void> {
          auto r = co_await quell::move_on_after(400ms, first.get("/report?seconds=5"));
          say(r ? "client on core 0: got an answer?" : "client on core 0: gives up after 0.4 s and closes");
          co_await first.close();
        };
        auto waits = [&]() -> task<void> {
          co_await quell::sleep_for(100ms);  // the first holds the only permit by now
          co_await show(second, "/report?seconds=0.2");
          co_await second.close();
        };
        co_await quell::join(gives_up(), waits());
        co_await settle();
      }

      std::printf("\n");
      say("== 6. graceful shutdown on SIGINT while a request runs");
      {
        auto c = co_await http::client::connect(at);
        auto slow = s.spawn(c.get("/report?seconds=1"));
        co_await quell::sleep_for(200ms);
        say("demo: kill(getpid(), SIGINT)");
        ::kill(::getpid(), SIGINT);
        http::client_response r = co_await slow;
        say("client: " + std::to_string(r.status) + (r.keep_alive ? " (keep-alive)" : " (Connection: close)"));
        co_await c.close();
        co_await server_task_;
        say("server stopped: " + app_->stats_json());
      }
      s.cancel(quell::cancel_reason(quell::cancel_kind::shutdown));  // the job service, the signal watcher
    };
    co_await quell::with_scope(all);
    say("job service stopped: jobs running " + std::to_string(svc_->jobs_running()) + ", connections " +
        std::to_string(svc_->connections()));
  }

  quell::signal_set& sigs_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::optional<gateway::job_service> svc_;
  std::optional<gateway::job_backend> backend_;
  std::optional<gateway::app> app_;
  std::optional<http::server> srv_;
  quell::spawn_handle<void> server_task_;
  shutdown_state state_;
};

}  // namespace

int main(int argc, char** argv) {
  const config c = parse(argc, argv);
  try {
    quell::signal_set sigs{SIGINT, SIGTERM};  // before any thread starts, so they inherit the mask
    if (c.demo) return demo(sigs).run();
    quell::runtime rt{c.cores};
    return rt.run(serve(c, sigs));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quell_gateway: %s\n", e.what());
    return 1;
  }
}
