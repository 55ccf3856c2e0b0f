#include "core/core_notes.hpp"

#include <elf.h>
#include <signal.h>
#include <sys/procfs.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "arch/x86_64/core_regs.hpp"
#include "base/page.hpp"

namespace minicriu {

namespace {

class NoteWriter {
 public:
  // A note: its header, its name and its descriptor, each padded to 4 bytes.
  void add(const char* name, uint32_t type, const void* desc, size_t size) {
    Elf64_Nhdr h{};
    h.n_namesz = static_cast<Elf64_Word>(std::strlen(name) + 1);
    h.n_descsz = static_cast<Elf64_Word>(size);
    h.n_type = type;
    append(&h, sizeof h);
    append(name, h.n_namesz);
    append(desc, size);
  }
  std::vector<uint8_t> take() { return std::move(bytes_); }

 private:
  void append(const void* p, size_t n) {
    auto* b = static_cast<const uint8_t*>(p);
    bytes_.insert(bytes_.end(), b, b + n);
    bytes_.resize((bytes_.size() + 3) & ~size_t{3}, 0);
  }
  std::vector<uint8_t> bytes_;
};

// The signals queued for a thread, as a mask: bit (n-1) for signal n.
uint64_t pending_mask(const img::ThreadCore& t) {
  uint64_t mask = 0;
  for (auto& s : t.pending()) {
    int signo = 0;
    if (s.raw().size() >= sizeof signo) std::memcpy(&signo, s.raw().data(), sizeof signo);
    if (signo >= 1 && signo <= 64) mask |= uint64_t{1} << (signo - 1);
  }
  return mask;
}

elf_prstatus prstatus(const ProcessImages& p, const img::ThreadCore& t) {
  elf_prstatus st{};
  st.pr_sigpend = pending_mask(t);
  st.pr_sighold = t.blocked_signals();
  st.pr_pid = static_cast<pid_t>(t.tid());
  st.pr_ppid = static_cast<pid_t>(p.entry.ppid());
  st.pr_pgrp = static_cast<pid_t>(p.entry.pgid());
  st.pr_sid = static_cast<pid_t>(p.entry.sid());
  arch::core_gregs(t.regs(), st.pr_reg);
  st.pr_fpvalid = !arch::extended_register_notes(t).empty();
  return st;
}

// Its command line, as ps shows it: read from the stack where the kernel
// put it, arguments apart by spaces.
elf_prpsinfo prpsinfo(const ProcessImages& p, const ProcessMemory& memory) {
  elf_prpsinfo ps{};
  bool stopped = p.entry.stopped();
  ps.pr_state = stopped ? 3 : 1;
  ps.pr_sname = stopped ? 'T' : 'S';
  const img::Creds& creds = p.core.creds();
  ps.pr_uid = creds.uids_size() ? creds.uids(0) : 0;
  ps.pr_gid = creds.gids_size() ? creds.gids(0) : 0;
  ps.pr_pid = static_cast<int>(p.entry.pid());
  ps.pr_ppid = static_cast<int>(p.entry.ppid());
  ps.pr_pgrp = static_cast<int>(p.entry.pgid());
  ps.pr_sid = static_cast<int>(p.entry.sid());
  std::strncpy(ps.pr_fname, p.core.comm().c_str(), sizeof ps.pr_fname - 1);
  uint64_t len = std::min<uint64_t>(p.mm.arg_end() - std::min(p.mm.arg_start(), p.mm.arg_end()),
                                    sizeof ps.pr_psargs - 1);
  std::span args(reinterpret_cast<uint8_t*>(ps.pr_psargs), len);
  if (len && memory.read(p.mm.arg_start(), args)) {
    std::replace(args.begin(), args.end(), uint8_t{0}, uint8_t{' '});
    while (!args.empty() && args.back() == ' ') args.back() = 0, args = args.first(args.size() - 1);
  } else {
    std::memset(ps.pr_psargs, 0, sizeof ps.pr_psargs);
  }
  return ps;
}

bool maps_a_file(const img::Vma& v) {
  switch (v.kind()) {
    case img::VMA_FILE_PRIVATE:
    case img::VMA_FILE_SHARED:
    case img::VMA_ANON_SHARED:  // shmem files: /dev/zero (deleted)
    case img::VMA_SYSV_SHM:
      return !v.path().empty();
    default:
      return false;
  }
}

// NT_FILE: count, page size, then (start, end, offset in pages) per mapped
// file, then their names, each NUL-terminated.
std::vector<uint8_t> file_note(const img::MmCore& mm) {
  std::vector<uint64_t> words{0, kPageSize};
  std::string names;
  for (auto& v : mm.vmas()) {
    if (!maps_a_file(v)) continue;
    words[0]++;
    words.insert(words.end(), {v.start(), v.end(), v.pgoff() / kPageSize});
    names += v.path();
    names += '\0';
  }
  std::vector<uint8_t> out(words.size() * sizeof(uint64_t));
  std::memcpy(out.data(), words.data(), out.size());
  out.insert(out.end(), names.begin(), names.end());
  return out;
}

}  // namespace

std::vector<uint8_t> core_notes(const ProcessImages& p, const ProcessMemory& memory) {
  NoteWriter w;
  bool first = true;
  for (auto& t : p.core.threads()) {
    elf_prstatus st = prstatus(p, t);
    w.add("CORE", NT_PRSTATUS, &st, sizeof st);
    if (first) {
      elf_prpsinfo ps = prpsinfo(p, memory);
      w.add("CORE", NT_PRPSINFO, &ps, sizeof ps);
      w.add("CORE", NT_AUXV, p.mm.auxv().data(), p.mm.auxv().size());
      auto files = file_note(p.mm);
      w.add("CORE", NT_FILE, files.data(), files.size());
      first = false;
    }
    for (auto& note : arch::extended_register_notes(t)) w.add(note.name, note.type, note.desc.data(), note.desc.size());
  }
  return w.take();
}

}  // namespace minicriu
