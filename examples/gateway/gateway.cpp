#include "gateway.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <optional>
#include <stdexcept>

#include "quell/deadline.hpp"
#include "quell/on_cancel.hpp"
#include "quell/race.hpp"
#include "quell/runtime.hpp"
#include "quell/this_task.hpp"

namespace gateway {
namespace http = quell::http;
using quell::task;

namespace {

std::string json_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

// "2", "0.5": seconds in [0, max]; nullopt for anything else.
std::optional<double> parse_seconds(const std::optional<std::string>& s, double max) {
  if (!s || s->empty()) return std::nullopt;
  double v = 0;
  auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), v);
  if (ec != std::errc() || end != s->data() + s->size() || !(v >= 0 && v <= max)) return std::nullopt;
  return v;
}

std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

app::app(backend& b, app_options options) : app(std::vector<backend*>{&b}, std::move(options)) {}

app::app(std::vector<backend*> per_core, app_options options)
    : backends_(std::move(per_core)),
      options_(std::move(options)),
      permits_total_(options_.permits),
      permits_(options_.permits) {
  if (backends_.empty()) throw std::invalid_argument("gateway::app: no backend");
  for (backend* b : backends_) {
    if (!b) throw std::invalid_argument("gateway::app: a null backend");
  }
  if (!options_.log)
    options_.log = [](const std::string& line) { std::fprintf(stderr, "gateway: %s\n", line.c_str()); };
}

backend& app::backend_for(unsigned core) const {
  if (backends_.size() == 1) return *backends_[0];
  if (core >= backends_.size()) {
    throw std::logic_error("gateway::app: a request on core " + std::to_string(core) + " but backends for " +
                           std::to_string(backends_.size()) + " cores");
  }
  return *backends_[core];
}

// The job runs where its backend lives: here with one backend per core, else on the shared
// backend's core, where quell::on carries this request's cancel (and its reason) and brings the
// result back only after the backend let go of the job.
task<std::string> app::run_job(std::chrono::milliseconds work) {
  const unsigned here = quell::this_core();
  if (backends_.size() > 1 || here == options_.backend_core) co_return co_await backend_for(here).run(work);
  backend& shared = *backends_[0];
  auto call = [&shared, work] { return shared.run(work); };
  co_return co_await quell::on(options_.backend_core, call);
}

// With several cores, each line says whose it is.
void app::trace(const std::string& line) const {
  if (!trace_) return;
  if (quell::core_count() > 1) {
    trace_("[core " + std::to_string(quell::this_core()) + "] " + line);
  } else {
    trace_(line);
  }
}

gateway_stats app::stats() const noexcept {
  auto get = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  return {get(stats_.in_flight),
          get(stats_.reports_done),
          get(stats_.reports_cancelled),
          get(stats_.reports_timed_out),
          get(stats_.reports_failed),
          get(stats_.reports_refused),
          get(stats_.waiting)};
}

void app::enter() {
  std::lock_guard<std::mutex> lock(idle_m_);
  if (stats_.in_flight.fetch_add(1, std::memory_order_relaxed) == 0) idle_ = std::make_shared<quell::shared_event>();
}

void app::leave() noexcept {
  std::shared_ptr<quell::shared_event> ended;
  {
    std::lock_guard<std::mutex> lock(idle_m_);
    if (stats_.in_flight.fetch_sub(1, std::memory_order_relaxed) == 1) ended = idle_;
  }
  if (ended) ended->set();  // after the lock: set() sends the waiters' wake-ups
}

task<void> app::idle() {
  std::shared_ptr<quell::shared_event> period;
  {
    std::lock_guard<std::mutex> lock(idle_m_);
    if (stats_.in_flight.load(std::memory_order_relaxed) == 0) co_return;
    period = idle_;
  }
  co_await period->wait();
}

app::app(backend& b, std::size_t permits, std::function<void(const std::string&)> trace)
    : app(b, [&] {
        app_options o;
        o.permits = permits;
        o.max_seconds = 3600;
        o.trace = std::move(trace);
        return o;
      }()) {}

http::server::handler app::handler() {
  return [this](http::request& r) { return route(r); };
}

std::string app::stats_json() const {
  backend_stats b;
  for (const backend* each : backends_) {
    const backend_stats one = each->stats();
    b.cancels_sent += one.cancels_sent;
    b.cancels_acknowledged += one.cancels_acknowledged;
    b.cancels_timed_out += one.cancels_timed_out;
  }
  const gateway_stats st = stats();
  std::string s = "{";
  s += "\"in_flight\":" + std::to_string(st.in_flight);
  s += ",\"permits\":" + std::to_string(permits_total_);
  s += ",\"permits_available\":" + std::to_string(permits_.available());
  s += ",\"reports_done\":" + std::to_string(st.reports_done);
  s += ",\"reports_cancelled\":" + std::to_string(st.reports_cancelled);
  s += ",\"reports_timed_out\":" + std::to_string(st.reports_timed_out);
  s += ",\"reports_failed\":" + std::to_string(st.reports_failed);
  s += ",\"reports_refused\":" + std::to_string(st.reports_refused);
  s += ",\"waiting\":" + std::to_string(st.waiting);
  s += ",\"cancels_sent\":" + std::to_string(b.cancels_sent);
  s += ",\"cancels_acknowledged\":" + std::to_string(b.cancels_acknowledged);
  s += ",\"cancels_timed_out\":" + std::to_string(b.cancels_timed_out);
  std::string described = backends_[0]->describe();
  if (backends_.size() > 1) described = std::to_string(backends_.size()) + " x " + described + " (one per core)";
  s += ",\"backend\":\"" + json_escape(described) + "\"";
  s += "}";
  return s;
}

task<http::response> app::route(http::request& req) {
  http::response r = co_await answer(req);
  r.headers.push_back({"X-Core", std::to_string(quell::this_core())});  // which core served it
  co_return r;
}

task<http::response> app::answer(http::request& req) {
  const std::string_view path = req.path();
  if (path != "/stats" && path != "/report" && path != "/hello" && path != "/debug/tasks" && path != "/metrics")
    co_return http::response::text(404, "not found\n");
  if (req.method != "GET" && req.method != "HEAD") {
    auto r = http::response::text(405, "only GET\n");
    r.headers.push_back({"Allow", "GET, HEAD"});
    co_return r;
  }
  if (path == "/stats") co_return http::response::json(200, stats_json() + "\n");
  if (path == "/hello") co_return http::response::text(200, "hello\n");  // the benchmark's trivial endpoint
  if (path == "/debug/tasks") {
    // Every core's live tasks, with where each cancellation stands (quell/task_tree.hpp).
    const quell::task_tree tree = co_await quell::current_task_tree();
    if (const auto format = req.query_param("format"); format && *format == "json")
      co_return http::response::json(200, tree.to_json() + "\n");
    co_return http::response::text(200, tree.to_string());
  }
  if (path == "/metrics") {
    const std::vector<quell::executor_metrics> cores = co_await quell::current_metrics();
    http::response r{200, {{"Content-Type", "text/plain; version=0.0.4"}}, quell::to_prometheus(cores)};
    co_return r;
  }
  co_return co_await report(req);
}

task<http::response> app::report(http::request& req) {
  const std::string max = number_text(options_.max_seconds);
  const auto seconds = parse_seconds(req.query_param("seconds"), options_.max_seconds);
  if (!seconds) co_return http::response::text(400, "seconds= must be a number of seconds between 0 and " + max + "\n");
  std::optional<double> deadline;
  if (req.query_param("timeout")) {
    deadline = parse_seconds(req.query_param("timeout"), 3600);
    if (!deadline) co_return http::response::text(400, "timeout= must be a number of seconds between 0 and 3600\n");
  }
  const std::uint64_t id = next_id_.fetch_add(1, std::memory_order_relaxed);
  const std::string tag = "#" + std::to_string(id);
  auto refuse = [&](const char* why, bool retry) {
    ++stats_.reports_refused;
    trace(tag + " answered 503: " + why);
    auto r = http::response::json(503, std::string("{\"error\":\"") + why + "\",\"request\":\"" + tag + "\"}\n");
    if (retry) r.headers.push_back({"Retry-After", "1"});
    r.headers.push_back({"X-Request-Id", std::to_string(id)});
    return r;
  };
  if (closing_.is_set()) co_return refuse("the gateway is shutting down", false);

  // Declared before the permit, so destroyed after it: when this guard speaks, the permit is
  // already back. It also covers a handler that ends cancelled, whose code after its last
  // co_await never runs.
  struct accounting {
    app& a;
    const std::string& tag;
    backend& used = a.backend_for(quell::this_core());
    const backend_stats before = used.stats();
    bool answered = false;
    explicit accounting(app& a, const std::string& t) : a(a), tag(t) { a.enter(); }
    ~accounting() {
      if (!answered) {
        ++a.stats_.reports_cancelled;
        // The counters are the backend's, shared by concurrent requests: the trace is for
        // watching one request at a time (the demo).
        const backend_stats now = used.stats();
        std::string what = now.cancels_acknowledged > before.cancels_acknowledged ? "the backend confirmed the cancel"
                           : now.cancels_timed_out > before.cancels_timed_out
                               ? "the backend did not confirm in time: its connection was closed"
                               : "nothing had reached the backend";
        a.trace(tag + " ended cancelled (" + what + "); permit released, " + std::to_string(a.permits_.available()) +
                "/" + std::to_string(a.permits_total_) + " free");
      }
      a.leave();
    }
  } acct(*this, tag);

  trace(tag + " GET " + req.target + " from " + req.peer.to_string() + ": waiting for a permit");
  std::optional<quell::shared_permit> taken;
  {
    // Counted first, then compared: requests on several cores never pass the limit together.
    struct waiting {
      counters& s;
      bool over = false;
      waiting(counters& s, std::size_t max) : s(s) { over = s.waiting.fetch_add(1) >= max; }
      ~waiting() { --s.waiting; }
    } counted(stats_, options_.max_waiting);
    if (counted.over) {
      acct.answered = true;
      co_return refuse("too many requests are waiting for a permit", true);
    }
    auto got = co_await quell::move_on_after(options_.max_wait, quell::race(permits_.acquire(), closing_.wait()));
    if (got && got->index() == 0) taken = std::get<0>(std::move(*got));
    if (!taken) {
      acct.answered = true;
      co_return refuse(got ? "the gateway is shutting down" : "waited too long for a permit", got.has_value() == false);
    }
  }
  quell::shared_permit permit = std::move(*taken);
  trace(tag + " permit taken (" + std::to_string(permits_.available()) + "/" + std::to_string(permits_total_) +
        " free); job of " + *req.query_param("seconds") + " s sent to the backend");

  const auto work = std::chrono::milliseconds(std::llround(*seconds * 1000));
  auto on_stop = [this, &tag] {
    // on_cancel's hook also runs when the backend throws; there is no cancel to report then.
    if (auto why = quell::this_task::cancel_reason())
      trace(tag + " cancelled (" + why->describe() +
            "): telling the backend to stop, holding the permit until it confirms");
  };
  int status = 200;
  std::string body;
  try {
    std::string result;
    if (deadline) {
      const auto limit = std::chrono::duration_cast<quell::duration>(std::chrono::duration<double>(*deadline));
      result = co_await quell::timeout(limit, quell::on_cancel(run_job(work), on_stop));
    } else {
      result = co_await quell::on_cancel(run_job(work), on_stop);
    }
    ++stats_.reports_done;
    body = "{\"result\":\"" + json_escape(result) + "\"}\n";
  } catch (const quell::timed_out&) {
    ++stats_.reports_timed_out;
    status = 504;
    body = "{\"error\":\"deadline exceeded; the backend job was cancelled\"}\n";
  } catch (const std::exception& e) {
    ++stats_.reports_failed;
    status = 502;
    // The backend's message can name its address and port: it goes to the log, not the client.
    options_.log(tag + " " + req.target + ": backend error: " + e.what());
    body = "{\"error\":\"the backend failed; see the gateway's log\",\"request\":\"" + tag + "\"}\n";
  }
  acct.answered = true;
  permit.release();
  trace(tag + " answered " + std::to_string(status) + "; permit released (" + std::to_string(permits_.available()) +
        "/" + std::to_string(permits_total_) + " free)");
  auto response = http::response::json(status, std::move(body));
  response.headers.push_back({"X-Request-Id", std::to_string(id)});
  co_return response;
}

task<http::client> connection_on(quell::address at, unsigned core) {
  for (int i = 0; i < 256; ++i) {
    auto c = co_await http::client::connect(at);
    auto r = co_await c.get("/hello");
    if (r.header("x-core") == std::to_string(core)) co_return c;
    co_await c.close();
  }
  throw std::runtime_error("gateway::connection_on: no connection reached core " + std::to_string(core));
}

}  // namespace gateway
