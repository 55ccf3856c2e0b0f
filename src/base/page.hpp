// The page size and the roundings every folder needs. minicriu runs on x86_64
// with 4 KiB base pages; the dump records sysconf(_SC_PAGESIZE) in the
// inventory and a restore on a machine with another page size is refused
// (validate.cc), so a constant is exact wherever images or VMAs are measured.
#pragma once

#include <cstdint>

namespace minicriu {

inline constexpr uint64_t kPageSize = 4096;

constexpr uint64_t page_up(uint64_t v) { return (v + kPageSize - 1) & ~(kPageSize - 1); }
constexpr uint64_t page_down(uint64_t v) { return v & ~(kPageSize - 1); }
constexpr bool page_aligned(uint64_t v) { return (v & (kPageSize - 1)) == 0; }

}  // namespace minicriu
