// What of this machine a checkpoint must match to be restorable here: the
// page size, the xsave layout (XCR0 and the size of the area), and the sizes of
// the kernel's special mappings, which restore moves but cannot resize.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "proc/proc_parse.hpp"

namespace minicriu {

struct MachineInfo {
  uint32_t page_size = 0;
  uint64_t xcr0 = 0;
  uint32_t xsave_size = 0;  // CPUID.(EAX=0DH,ECX=0):EBX, the size for XCR0's features
  uint64_t vdso_size = 0;   // 0: this kernel does not map it
  uint64_t vvar_size = 0;
  uint64_t vvar_vclock_size = 0;
};

[[nodiscard]] Result<MachineInfo> probe_machine();

// The kernel's special mappings of a maps listing (ours, or a restored task's).
struct SpecialMappings {
  proc::MapsEntry vdso, vvar, vvar_vclock;
  bool has_vdso = false, has_vvar = false, has_vvar_vclock = false;
};
SpecialMappings find_special_mappings(const std::vector<proc::MapsEntry>& maps);

}  // namespace minicriu
