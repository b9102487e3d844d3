// W5's message, shared by the C++ peers (quell, Asio, the raw liburing loop) so that each one
// spends the same instructions on building and checking it. Written inline in a coroutine, the
// loop below cost quell's and Asio's clients ~900 instructions per round trip instead of ~100:
// every char store may alias the coroutine frame, so `seq` and `id` were reloaded from it at each
// of the 64 steps. A plain function keeps them in registers, as the raw loop always did.
#pragma once

#include <cstddef>
#include <cstdint>

namespace echo_message {

inline constexpr std::size_t size = 64;

// Message `seq` of connection `id`: 64 bytes that differ per connection and per round trip.
inline void fill(void* out, int id, std::uint64_t seq) noexcept {
  auto* m = static_cast<unsigned char*>(out);
  for (std::size_t k = 0; k < size; ++k)
    m[k] = static_cast<unsigned char>(seq * 31 + k * 7 + static_cast<std::uint64_t>(id));
}

}  // namespace echo_message

// W12's 1 MiB chunk: chunk `seq` carries its number in its first and last 8 bytes and a fixed
// pattern in between, so a reader checks order and completeness in three loads, not a megabyte.
namespace bulk_chunk {

inline constexpr std::size_t size = std::size_t{1} << 20;

inline void fill_pattern(unsigned char* c) noexcept {
  for (std::size_t k = 0; k < size; ++k) c[k] = static_cast<unsigned char>(k * 7 % 251);
}
inline void stamp(unsigned char* c, std::uint64_t seq) noexcept {
  for (int b = 0; b < 8; ++b)
    c[b] = c[size - 8 + static_cast<std::size_t>(b)] = static_cast<unsigned char>(seq >> (8 * b));
}
// True if `c` is chunk `seq`, whole (its two stamps and a byte of the pattern in its middle).
inline bool check(const unsigned char* c, std::uint64_t seq) noexcept {
  for (int b = 0; b < 8; ++b) {
    const auto v = static_cast<unsigned char>(seq >> (8 * b));
    if (c[b] != v || c[size - 8 + static_cast<std::size_t>(b)] != v) return false;
  }
  return c[size / 2 + 3] == static_cast<unsigned char>((size / 2 + 3) * 7 % 251);
}

}  // namespace bulk_chunk
