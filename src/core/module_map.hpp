// The ELF files mapped into a process of a checkpoint (its executable, its
// libraries, the vDSO), found from its VMAs and read through its memory as the
// checkpoint has it: where each is loaded, its load bias, and where its
// .eh_frame_hdr lies, for the unwinder; and, through elfutils' libdwfl, the
// function, offset and source line of an address, for people.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/process_memory.hpp"

struct Dwfl;

namespace minicriu {

struct Module {
  std::string name;        // the path mapped, or "[vdso]"
  uint64_t start = 0;      // the lowest and highest address of its VMAs
  uint64_t end = 0;
  uint64_t base = 0;       // where file offset 0 is mapped
  uint64_t bias = 0;       // added to the file's p_vaddr, st_value
  uint64_t eh_frame_hdr = 0;  // its address; 0 if it has none (or it cannot be read)
  // Why its code cannot be read, or named: the binary changed or is gone
  // since the dump. Empty when all is well.
  std::string note;
};

// What an address is, in words: the function and how far into it, the file
// and line where debug information says so.
struct Symbol {
  const Module* module = nullptr;
  std::string function;     // demangled; empty when unknown
  uint64_t function_offset = 0;
  std::string source_file;
  int line = 0;
};

class ModuleMap {
 public:
  ModuleMap(const ModuleMap&) = delete;
  ModuleMap& operator=(const ModuleMap&) = delete;
  ~ModuleMap();

  // Never fails: a module whose headers cannot be read says why in its note.
  static std::unique_ptr<ModuleMap> build(const ProcessMemory& memory);

  const std::vector<Module>& modules() const { return modules_; }
  const Module* at(uint64_t addr) const;
  Symbol symbolize(uint64_t addr) const;

 private:
  ModuleMap() = default;
  void report_to_dwfl(const ProcessMemory& memory);

  std::vector<Module> modules_;
  Dwfl* dwfl_ = nullptr;
};

}  // namespace minicriu
