#include "restorer/machine.hpp"

#include <unistd.h>

#include "arch/x86_64/cpu.hpp"

namespace minicriu {

SpecialMappings find_special_mappings(const std::vector<proc::MapsEntry>& maps) {
  SpecialMappings s;
  for (auto& m : maps) {
    if (m.path == "[vdso]") s.vdso = m, s.has_vdso = true;
    else if (m.path == "[vvar]") s.vvar = m, s.has_vvar = true;
    else if (m.path == "[vvar_vclock]") s.vvar_vclock = m, s.has_vvar_vclock = true;
  }
  return s;
}

Result<MachineInfo> probe_machine() {
  MachineInfo m;
  m.page_size = static_cast<uint32_t>(::sysconf(_SC_PAGESIZE));
  m.xcr0 = arch::read_xcr0();
  ASSIGN_OR_RETURN(m.xsave_size, arch::xsave_area_size());
  ASSIGN_OR_RETURN(auto text, proc::read_file("/proc/self/maps"));
  ASSIGN_OR_RETURN(auto maps, proc::parse_maps(text));
  SpecialMappings s = find_special_mappings(maps);
  if (s.has_vdso) m.vdso_size = s.vdso.end - s.vdso.start;
  if (s.has_vvar) m.vvar_size = s.vvar.end - s.vvar.start;
  if (s.has_vvar_vclock) m.vvar_vclock_size = s.vvar_vclock.end - s.vvar_vclock.start;
  return m;
}

}  // namespace minicriu
