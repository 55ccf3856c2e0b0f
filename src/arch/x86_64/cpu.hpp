// What this CPU's xsave feature set is: XCR0 (which state components the
// kernel enabled, the features of an xsave area) and the size of a standard
// xsave area for them. A checkpoint records both; a restore needs them equal.
#pragma once

#include <cstdint>

#include "base/error.hpp"

namespace minicriu::arch {

// XGETBV with ECX = 0. The kernel sets CR4.OSXSAVE on every CPU it runs
// xsave on, which makes the instruction legal in user mode.
uint64_t read_xcr0();

// CPUID.(EAX=0DH,ECX=0):EBX: bytes of an xsave area (standard format) for the
// features XCR0 has enabled now.
[[nodiscard]] Result<uint32_t> xsave_area_size();

}  // namespace minicriu::arch
