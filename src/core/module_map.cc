#include "core/module_map.hpp"

#include <cxxabi.h>
#include <elfutils/libdwfl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <tuple>

#include "base/page.hpp"

namespace minicriu {

namespace {

bool is_module_vma(const img::Vma& v) {
  bool file = v.kind() == img::VMA_FILE_PRIVATE || v.kind() == img::VMA_FILE_SHARED;
  return v.kind() == img::VMA_VDSO || (file && !v.path().empty() && v.path()[0] == '/');
}

// The load bias and .eh_frame_hdr of the ELF file whose offset 0 is mapped
// at m.base, from its headers as they are in the process's memory (for a
// file that changed since the dump, they are not: the note says why).
void read_headers(const ProcessMemory& memory, Module& m) {
  // The program headers follow the ELF header in the first page or pages.
  std::vector<uint8_t> head(16384);
  size_t n = 0;
  for (size_t want : {head.size(), static_cast<size_t>(kPageSize)})
    if (memory.read(m.base, std::span(head).first(want))) {
      n = want;
      break;
    }
  if (n == 0) {
    if (m.note.empty()) m.note = "its ELF header cannot be read from the images";
    return;
  }
  Elf* elf = elf_memory(reinterpret_cast<char*>(head.data()), n);
  GElf_Ehdr eh;
  size_t phnum = 0;
  if (!elf || !gelf_getehdr(elf, &eh) || eh.e_ident[EI_CLASS] != ELFCLASS64 || elf_getphdrnum(elf, &phnum) != 0) {
    if (m.note.empty()) m.note = "not an ELF file of this architecture";
    if (elf) elf_end(elf);
    return;
  }
  bool first_load = true;
  uint64_t eh_vaddr = 0;
  for (size_t i = 0; i < phnum; i++) {
    GElf_Phdr ph;
    if (!gelf_getphdr(elf, static_cast<int>(i), &ph)) break;
    if (ph.p_type == PT_LOAD && first_load) {
      // Offset 0 is at base; the first segment maps from there.
      m.bias = m.base + page_down(ph.p_offset) - page_down(ph.p_vaddr);
      first_load = false;
    } else if (ph.p_type == PT_GNU_EH_FRAME) {
      eh_vaddr = ph.p_vaddr;
    }
  }
  elf_end(elf);
  if (!first_load && eh_vaddr) m.eh_frame_hdr = m.bias + eh_vaddr;
}

std::string demangle(const char* name) {
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = status == 0 && d ? d : name;
  std::free(d);
  return out;
}

const Dwfl_Callbacks kDwflCallbacks = {
    .find_elf = dwfl_build_id_find_elf,
    .find_debuginfo = dwfl_standard_find_debuginfo,
    .section_address = dwfl_offline_section_address,
    .debuginfo_path = nullptr,
};

}  // namespace

ModuleMap::~ModuleMap() {
  if (dwfl_) dwfl_end(dwfl_);
}

std::unique_ptr<ModuleMap> ModuleMap::build(const ProcessMemory& memory) {
  elf_version(EV_CURRENT);
  std::unique_ptr<ModuleMap> map(new ModuleMap);
  // One module per mapped file (path and inode): its VMAs need not touch.
  std::map<std::tuple<std::string, uint64_t, uint64_t>, size_t> index;
  for (auto& r : memory.regions()) {
    const img::Vma& v = *r.vma;
    if (!is_module_vma(v)) continue;
    std::string name = v.kind() == img::VMA_VDSO ? "[vdso]" : v.path();
    auto [it, added] = index.try_emplace({name, v.ino(), v.dev()}, map->modules_.size());
    if (added) {
      Module m;
      m.name = name;
      m.start = v.start();
      m.base = ~uint64_t{0};
      map->modules_.push_back(m);
    }
    Module& m = map->modules_[it->second];
    m.end = v.end();
    if (v.pgoff() == 0 && m.base == ~uint64_t{0}) m.base = v.start();
    if (r.source == ProcessMemory::Source::none && m.note.empty()) m.note = r.note;
  }
  for (auto& m : map->modules_) {
    if (m.base == ~uint64_t{0}) {
      m.base = 0;
      if (m.note.empty()) m.note = "its ELF header is not mapped";
      continue;
    }
    read_headers(memory, m);
  }
  map->report_to_dwfl(memory);
  return map;
}

// Every module whose file is the one of the dump goes to libdwfl, from its
// file (or, for the vDSO, a memfd of this kernel's), at the place it had.
void ModuleMap::report_to_dwfl(const ProcessMemory& memory) {
  dwfl_ = dwfl_begin(&kDwflCallbacks);
  if (!dwfl_) return;
  dwfl_report_begin(dwfl_);
  for (auto& m : modules_) {
    if (!m.note.empty()) continue;
    const ProcessMemory::Region* r = memory.region_at(m.base);
    int fd = -1;
    if (r && r->source == ProcessMemory::Source::file) {
      fd = ::fcntl(r->file, F_DUPFD_CLOEXEC, 0);
    } else if (r && r->source == ProcessMemory::Source::local_vdso) {
      std::vector<uint8_t> bytes(r->vma->end() - r->vma->start());
      fd = ::memfd_create("vdso", MFD_CLOEXEC);
      if (fd >= 0 && (!memory.read(r->vma->start(), bytes) ||
                      ::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size()))) {
        ::close(fd);
        fd = -1;
      }
    }
    if (fd < 0) continue;
    // The fd is libdwfl's from here, on success and failure alike.
    if (!dwfl_report_elf(dwfl_, m.name.c_str(), m.name.c_str(), fd, m.base, false))
      m.note = fmt::format("no symbols ({})", dwfl_errmsg(-1));
  }
  dwfl_report_end(dwfl_, nullptr, nullptr);
}

const Module* ModuleMap::at(uint64_t addr) const {
  for (auto& m : modules_)
    if (addr >= m.start && addr < m.end) return &m;
  return nullptr;
}

Symbol ModuleMap::symbolize(uint64_t addr) const {
  Symbol s;
  s.module = at(addr);
  if (!dwfl_ || !s.module || !s.module->note.empty()) return s;
  Dwfl_Module* mod = dwfl_addrmodule(dwfl_, addr);
  if (!mod) return s;
  GElf_Off off = 0;
  GElf_Sym sym;
  if (const char* name = dwfl_module_addrinfo(mod, addr, &off, &sym, nullptr, nullptr, nullptr)) {
    s.function = demangle(name);
    s.function_offset = off;
  }
  if (Dwfl_Line* line = dwfl_module_getsrc(mod, addr)) {
    int lineno = 0;
    if (const char* file = dwfl_lineinfo(line, nullptr, &lineno, nullptr, nullptr, nullptr)) {
      s.source_file = file;
      s.line = lineno;
    }
  }
  return s;
}

}  // namespace minicriu
