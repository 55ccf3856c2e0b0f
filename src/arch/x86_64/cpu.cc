#include "arch/x86_64/cpu.hpp"

#include <cpuid.h>

namespace minicriu::arch {

uint64_t read_xcr0() {
  uint32_t lo, hi;
  asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

Result<uint32_t> xsave_area_size() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(0xd, 0, &a, &b, &c, &d)) return fail("CPUID leaf 0xD (xsave) is missing");
  return b;
}

}  // namespace minicriu::arch
