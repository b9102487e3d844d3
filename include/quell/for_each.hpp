// for_each(range, limit, fn): bounded parallelism over a range.
//
//   co_await quell::for_each(urls, 8, [&](const std::string& url) -> quell::task<> {
//     co_await fetch(url);
//   });
//
// Calls fn(item) for each item of `range`, in order, and awaits the operation it returns, with
// at most `limit` of them in flight at once: an item starts only when an earlier one has ended
// (its async cleanup included). `range` is taken by value (move it in) and lives until for_each
// ends, so fn receives a reference to the element itself; `fn` is kept alive as long as that.
//
// Races, and how each ends:
//   - An operation throws: no new item starts; the ones in flight are cancelled (graceful, reason
//     sibling_failed) and awaited; then for_each rethrows the first exception, later ones
//     attached (quell/errors.hpp). It is a scope underneath (quell/scope.hpp).
//   - for_each itself is cancelled: every operation in flight is cancelled and awaited, no new item
//     starts, and for_each ends cancelled. An item whose start was already granted when the cancel
//     arrived is not started either (its slot goes back; quell/semaphore.hpp).
//   - An operation that ends cancelled on its own is not an error: the others go on.
//   - limit == 0 is a std::invalid_argument (nothing could ever start).
#pragma once

#include <cstddef>
#include <iterator>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "quell/scope.hpp"
#include "quell/semaphore.hpp"
#include "quell/task.hpp"

namespace quell {

namespace detail {
// One item: holds its slot until the operation, and the frame around it, have ended. `Item` is a
// reference to the range's element when the range has elements to refer to, else a copy (a
// view that makes its elements on the fly).
template <class Item, class Fn>
task<> for_each_item(Fn& fn, Item item, permit slot) {
  co_await fn(item);
  slot.release();
}
}  // namespace detail

template <class Range, class Fn>
task<> for_each(Range range, std::size_t limit, Fn fn) {
  if (limit == 0) throw std::invalid_argument("quell::for_each: a limit of 0 would never start an item");
  // Not std::ranges::range_reference_t: clang 14 rejects libstdc++ 12's range concepts.
  using ref = decltype(*std::begin(std::declval<Range&>()));
  using item_t = std::conditional_t<std::is_lvalue_reference_v<ref>, ref, std::remove_cvref_t<ref>>;
  semaphore slots{limit};
  auto body = [&](scope& s) -> task<> {
    for (auto&& item : range) {
      permit slot = co_await slots.acquire();
      s.spawn(detail::for_each_item<item_t>(fn, static_cast<ref>(item), std::move(slot)));
    }
  };
  co_await with_scope(body);
}

}  // namespace quell
