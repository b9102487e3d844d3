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
