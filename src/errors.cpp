#include "quell/errors.hpp"

#include <deque>
#include <mutex>
#include <typeinfo>
#include <utility>

namespace quell {

namespace {
struct attachment {
  std::exception_ptr primary;  // keeps the primary alive, so its identity cannot be reused
  std::vector<std::exception_ptr> extra;
};
constexpr std::size_t max_primaries = 256;

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::deque<attachment>& registry() {
  static std::deque<attachment> r;
  return r;
}
}  // namespace

void attach_error(const std::exception_ptr& primary, std::exception_ptr extra) {
  if (!primary || !extra || primary == extra) return;
  std::lock_guard<std::mutex> lock(registry_mutex());
  auto& r = registry();
  for (attachment& a : r) {
    if (a.primary == primary) {
      a.extra.push_back(std::move(extra));
      return;
    }
  }
  if (r.size() == max_primaries) r.pop_front();
  r.push_back(attachment{primary, {std::move(extra)}});
}

std::vector<std::exception_ptr> attached_errors(const std::exception_ptr& primary) {
  if (!primary) return {};
  std::lock_guard<std::mutex> lock(registry_mutex());
  for (const attachment& a : registry()) {
    if (a.primary == primary) return a.extra;
  }
  return {};
}

std::vector<std::exception_ptr> attached_errors() { return attached_errors(std::current_exception()); }

std::string describe(const std::exception_ptr& e) {
  if (!e) return "no exception";
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

}  // namespace quell
