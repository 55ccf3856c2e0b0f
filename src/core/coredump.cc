// `minicriu coredump`: an ELF core file per process of a checkpoint
// (core.PID), as the kernel would have written one at the dump, for gdb and
// other debuggers: the notes (core_notes.hpp), then one PT_LOAD per VMA with
// its memory as ProcessMemory reads it. What cannot be read (a mapped file
// that changed since the dump, the kernel's vvar pages) is a PT_LOAD without
// data (p_filesz 0), as the kernel marks what it leaves out, and named in the
// result. Never-touched and zero pages are holes of a sparse file. The ELF
// header and program headers are libelf's; the notes and the memory are
// written after them at the offsets laid out here.
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "arch/x86_64/core_regs.hpp"
#include "base/log.hpp"
#include "base/page.hpp"
#include "base/unique_fd.hpp"
#include "core/core_notes.hpp"
#include "core/inspect.hpp"
#include "core/process_memory.hpp"

namespace minicriu {

namespace {

struct Segment {
  uint64_t vaddr = 0, memsz = 0, filesz = 0, offset = 0;
  uint32_t flags = 0;
  // Memory that is zeros but where the images hold pages (anonymous memory):
  // only those pages are read, the rest stays a hole without being looked at
  // (a reservation of terabytes costs nothing).
  bool sparse = false;
};

uint32_t segment_flags(uint32_t prot) {
  return ((prot & PROT_READ) ? PF_R : 0) | ((prot & PROT_WRITE) ? PF_W : 0) | ((prot & PROT_EXEC) ? PF_X : 0);
}

// The PT_LOADs of a process, in address order: the readable parts of each
// VMA with data, the rest without. Memory nobody may read (PROT_NONE: guard
// pages, reservations) or that was marked MADV_DONTDUMP is left without data
// too.
std::vector<Segment> plan_loads(const ProcessMemory& memory, std::vector<std::string>& left_out) {
  std::vector<Segment> loads;
  std::set<std::string> said;
  for (auto& r : memory.regions()) {
    const img::Vma& v = *r.vma;
    uint32_t flags = segment_flags(v.prot());
    ProcessMemory::Ranges ranges;
    // MADV_DONTDUMP memory has no data in the kernel's core files either
    // (vma_dump_size() of fs/coredump.c).
    if ((v.prot() & PROT_READ) && !(v.advice() & img::ADVICE_DONTDUMP)) ranges = memory.readable_ranges(r);
    uint64_t at = v.start();
    auto add = [&](uint64_t start, uint64_t end, bool data) {
      if (start < end)
        loads.push_back({start, end - start, data ? end - start : 0, 0, flags,
                         data && r.source == ProcessMemory::Source::zeros});
    };
    for (auto& [start, end] : ranges) {
      add(at, start, false);
      add(start, end, true);
      at = end;
    }
    add(at, v.end(), false);
    // Files and shared memory the images lack are worth a word; the
    // kernel's own pages and inaccessible memory are not.
    bool partial = ranges.empty() || ranges.front().first != v.start() || ranges.back().second != v.end();
    if (partial && (v.prot() & PROT_READ) && !(v.advice() & img::ADVICE_DONTDUMP) && r.source != ProcessMemory::Source::zeros && !r.note.empty() &&
        v.kind() != img::VMA_VVAR && v.kind() != img::VMA_VVAR_VCLOCK && v.kind() != img::VMA_VSYSCALL &&
        said.insert(r.note).second)
      left_out.push_back(r.note);
  }
  return loads;
}

// A core file being written: it takes its name only once complete.
class CoreFileWriter {
 public:
  explicit CoreFileWriter(std::string path) : path_(std::move(path)), part_(path_ + ".part") {}
  ~CoreFileWriter() {
    if (fd_) ::unlink(part_.c_str());
  }
  CoreFileWriter(const CoreFileWriter&) = delete;
  CoreFileWriter& operator=(const CoreFileWriter&) = delete;

  [[nodiscard]] Status open() {
    fd_.reset(::open(part_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd_) return failf_errno("cannot create {}", part_);
    return {};
  }
  int fd() const { return fd_.get(); }

  [[nodiscard]] Status write_at(const void* data, size_t size, uint64_t offset) {
    auto* p = static_cast<const char*>(data);
    while (size) {
      ssize_t n = ::pwrite(fd_.get(), p, size, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return failf_errno("writing {}", part_);
      p += n, size -= static_cast<size_t>(n), offset += static_cast<uint64_t>(n);
    }
    return {};
  }

  [[nodiscard]] Status commit(uint64_t size) {
    if (::ftruncate(fd_.get(), static_cast<off_t>(size)) != 0 || ::fsync(fd_.get()) != 0)
      return failf_errno("writing {}", part_);
    if (::rename(part_.c_str(), path_.c_str()) != 0) return failf_errno("cannot rename {} to {}", part_, path_);
    fd_.reset();
    return {};
  }

 private:
  std::string path_, part_;
  UniqueFd fd_;
};

// The ELF header and the program headers, through libelf.
Status write_headers(int fd, const std::vector<Segment>& loads, uint64_t notes_offset, uint64_t notes_size) {
  struct ElfGuard {
    Elf* e;
    ~ElfGuard() {
      if (e) elf_end(e);
    }
  } elf{elf_version(EV_CURRENT) != EV_NONE ? elf_begin(fd, ELF_C_WRITE, nullptr) : nullptr};
  if (!elf.e) return failf("libelf: {}", elf_errmsg(-1));
  // Our offsets: the segments' data is written after libelf is done.
  elf_flagelf(elf.e, ELF_C_SET, ELF_F_LAYOUT);
  if (!gelf_newehdr(elf.e, ELFCLASS64)) return failf("libelf: {}", elf_errmsg(-1));
  GElf_Ehdr eh;
  gelf_getehdr(elf.e, &eh);
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_OSABI] = ELFOSABI_NONE;
  eh.e_type = ET_CORE;
  eh.e_machine = arch::kElfMachine;
  eh.e_version = EV_CURRENT;
  eh.e_phoff = sizeof(Elf64_Ehdr);
  eh.e_ehsize = sizeof(Elf64_Ehdr);
  eh.e_phentsize = sizeof(Elf64_Phdr);
  if (!gelf_update_ehdr(elf.e, &eh)) return failf("libelf: {}", elf_errmsg(-1));
  if (!gelf_newphdr(elf.e, loads.size() + 1)) return failf("libelf: {}", elf_errmsg(-1));
  GElf_Phdr note{};
  note.p_type = PT_NOTE;
  note.p_offset = notes_offset;
  note.p_filesz = notes_size;
  note.p_align = 4;
  gelf_update_phdr(elf.e, 0, &note);
  for (size_t i = 0; i < loads.size(); i++) {
    GElf_Phdr ph{};
    ph.p_type = PT_LOAD;
    ph.p_flags = loads[i].flags;
    ph.p_offset = loads[i].offset;
    ph.p_vaddr = loads[i].vaddr;
    ph.p_filesz = loads[i].filesz;
    ph.p_memsz = loads[i].memsz;
    ph.p_align = kPageSize;
    gelf_update_phdr(elf.e, static_cast<int>(i + 1), &ph);
  }
  if (elf_update(elf.e, ELF_C_WRITE) < 0) return failf("libelf: {}", elf_errmsg(-1));
  return {};
}

bool all_zero(const uint8_t* p, size_t n) {
  return std::all_of(p, p + n, [](uint8_t b) { return b == 0; });
}

// A segment's memory, chunk by chunk; zero pages stay holes. A page that
// cannot be read after all (a file shrank meanwhile) stays a hole too, counted.
Status write_range(CoreFileWriter& out, const ProcessMemory& memory, const Segment& s, uint64_t from, uint64_t to,
                   uint64_t& unreadable) {
  std::vector<uint8_t> buf(static_cast<size_t>(std::min<uint64_t>(1 << 20, to - from)));
  for (uint64_t done = from; done < to;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), to - done));
    std::span<uint8_t> chunk(buf.data(), n);
    bool whole = memory.read(s.vaddr + done, chunk);
    for (size_t page = 0; page < n; page += kPageSize) {
      size_t len = std::min<size_t>(kPageSize, n - page);
      if (!whole && !memory.read(s.vaddr + done + page, chunk.subspan(page, len))) {
        unreadable++;
        continue;
      }
      if (!all_zero(buf.data() + page, len)) TRY(out.write_at(buf.data() + page, len, s.offset + done + page));
    }
    done += n;
  }
  return {};
}

Status write_memory(CoreFileWriter& out, const ProcessMemory& memory, const Segment& s, uint64_t& unreadable) {
  if (!s.sparse) return write_range(out, memory, s, 0, s.filesz, unreadable);
  for (auto& [start, end] : memory.image_ranges(s.vaddr, s.vaddr + s.filesz))
    TRY(write_range(out, memory, s, start - s.vaddr, end - s.vaddr, unreadable));
  return {};
}

Result<CoreFile> write_core(const CoredumpOptions& options, const ProcessMemory& memory, const Logger& log) {
  const ProcessImages& p = memory.process();
  CoreFile core;
  core.pid = static_cast<pid_t>(p.entry.pid());
  core.path = fmt::format("{}/core.{}", options.output_dir.empty() ? "." : options.output_dir, core.pid);
  std::vector<Segment> loads = plan_loads(memory, core.left_out);
  if (loads.size() + 1 >= PN_XNUM) return failf("{} mappings are more than an ELF core can list", loads.size());
  std::vector<uint8_t> notes = core_notes(p, memory);
  uint64_t notes_offset = sizeof(Elf64_Ehdr) + (loads.size() + 1) * sizeof(Elf64_Phdr);
  uint64_t at = page_up(notes_offset + notes.size());
  for (auto& s : loads) {
    s.offset = at;
    at += s.filesz;
  }
  CoreFileWriter out(core.path);
  TRY(out.open());
  TRY(write_headers(out.fd(), loads, notes_offset, notes.size()));
  TRY(out.write_at(notes.data(), notes.size(), notes_offset));
  uint64_t unreadable = 0;
  for (auto& s : loads)
    if (s.filesz) TRY(write_memory(out, memory, s, unreadable));
  if (unreadable)
    core.left_out.push_back(fmt::format("{} page(s) could not be read and are zeros in the core", unreadable));
  TRY(out.commit(at));
  core.bytes = at;
  core.segments = static_cast<uint32_t>(loads.size());
  log.info("pid {}: {} written, {} segment(s), {} bytes", core.pid, core.path, core.segments, core.bytes);
  return core;
}

}  // namespace

Result<std::vector<CoreFile>> coredump(const CoredumpOptions& options) {
  Logger log(options.log);
  ASSIGN_OR_RETURN(auto inspected, InspectedCheckpoint::load(options.images_dir, log));
  std::string dir = options.output_dir.empty() ? "." : options.output_dir;
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return failf_errno("the output directory {} is not a directory", dir);
  std::vector<CoreFile> cores;
  for (auto& p : inspected->checkpoint.processes) {
    if (p.entry.zombie()) {
      log.info("pid {}: a zombie has no memory: no core file", p.entry.pid());
      continue;
    }
    auto ctx = fmt::format("pid {}", p.entry.pid());
    ASSIGN_OR_RETURN(auto memory, with_context(ProcessMemory::open(inspected->checkpoint, p, inspected->kinds), ctx));
    ASSIGN_OR_RETURN(CoreFile core, with_context(write_core(options, *memory, log), ctx));
    cores.push_back(std::move(core));
  }
  return cores;
}

}  // namespace minicriu
