// Time helpers shared by the steps that measure or convert durations.
#pragma once

#include <chrono>
#include <cstdint>

namespace minicriu {

constexpr uint64_t kNsPerSec = 1'000'000'000;

// Nanoseconds from t to now, on the monotonic clock.
inline uint64_t ns_since(std::chrono::steady_clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t).count());
}

}  // namespace minicriu
