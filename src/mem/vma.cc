#include "mem/vma.hpp"

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cstdlib>

#include "fs/ghost_file.hpp"

namespace minicriu {

namespace {

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

Result<img::VmaKind> classify(pid_t pid, const proc::MapsEntry& m) {
  if (m.path == "[vsyscall]") return img::VMA_VSYSCALL;
  if (m.path == "[vdso]") return img::VMA_VDSO;
  if (m.path == "[vvar]") return img::VMA_VVAR;
  if (m.path == "[vvar_vclock]") return img::VMA_VVAR_VCLOCK;
  auto where = fmt::format("pid {}: mapping {:x}-{:x} ({})", pid, m.start, m.end,
                           m.path.empty() ? "anonymous" : m.path);
  if (m.has_flag("io") || m.has_flag("pf"))
    return failf("{}: device memory (VM_IO/VM_PFNMAP) cannot be checkpointed", where);
  // io_setup's ring ("/[aio] (deleted)", a file of the aio pseudo file
  // system): made again by io_setup, not mapped as a file (src/mem/aio.cc).
  if (starts_with(m.path, "/[aio]")) return img::VMA_AIO_RING;
  if (m.inode == 0 && !m.shared) return img::VMA_ANON_PRIVATE;
  if (m.shared && starts_with(m.path, "/dev/zero")) return img::VMA_ANON_SHARED;
  if (starts_with(m.path, "/SYSV")) {
    // shmat maps a segment from its start; a remapped tail cannot be made again.
    if (m.offset != 0) return failf("{}: part of a System V segment at offset {:#x}", where, m.offset);
    return img::VMA_SYSV_SHM;
  }
  // A memfd is a shmem object: dumped once as such, whoever maps it.
  if (starts_with(m.path, "/memfd:")) return m.shared ? img::VMA_FILE_SHARED : img::VMA_FILE_PRIVATE;
  // A deleted file is reached through /proc/PID/map_files by the dumper.
  if (has_deleted_suffix(m.path)) return m.shared ? img::VMA_FILE_SHARED : img::VMA_FILE_PRIVATE;
  // A packet socket's rings (PACKET_RX_RING/TX_RING): mapped again from
  // the restored socket (src/net/packet_socket.cc, which refuses a mapping
  // of any other socket).
  if (starts_with(m.path, "socket:")) return img::VMA_PACKET_RING;
  if (m.path.empty() || m.path[0] != '/')
    return failf("{}: mapping of an unnamed file is not supported", where);
  // The file must still be the one mapped: restore maps it by path.
  struct stat st;
  if (::stat(m.path.c_str(), &st) != 0 || st.st_ino != m.inode ||
      major(st.st_dev) != m.dev_major || minor(st.st_dev) != m.dev_minor)
    return failf("{}: the mapped file was replaced or moved since it was mapped", where);
  return m.shared ? img::VMA_FILE_SHARED : img::VMA_FILE_PRIVATE;
}

// VmFlags (fs/proc/task_mmu.c, show_smap_vma_flags) that madvise, mlock,
// mseal or mmap set and the restorer sets again (the blob, once the VMA is
// at its address).
struct AdviceFlag {
  const char* mnemonic;
  img::VmaAdvice bit;
};
constexpr AdviceFlag kAdviceFlags[] = {
    {"dc", img::ADVICE_DONTFORK},   {"wf", img::ADVICE_WIPEONFORK}, {"dd", img::ADVICE_DONTDUMP},
    {"hg", img::ADVICE_HUGEPAGE},   {"nh", img::ADVICE_NOHUGEPAGE}, {"mg", img::ADVICE_MERGEABLE},
    {"sr", img::ADVICE_SEQUENTIAL}, {"rr", img::ADVICE_RANDOM},     {"lo", img::ADVICE_LOCKED},
    {"lf", img::ADVICE_LOCKONFAULT}, {"sl", img::ADVICE_SEALED},    {"nr", img::ADVICE_NORESERVE},
};

// VmFlags of state this version does not carry: the mapping is refused
// rather than restored without it.
struct RefusedFlag {
  const char* mnemonic;
  const char* what;
};
constexpr RefusedFlag kRefusedFlags[] = {
    {"um", "registered with a userfaultfd (missing pages); unregister it before the dump"},
    {"uw", "registered with a userfaultfd (write-protect); unregister it before the dump"},
    {"ui", "registered with a userfaultfd (minor faults); unregister it before the dump"},
    {"ss", "a shadow stack (CET): shadow stacks cannot be restored yet"},
    {"dp", "droppable memory (MAP_DROPPABLE): it cannot be restored yet"},
    {"ht", "hugetlb memory (MAP_HUGETLB or hugetlbfs): it cannot be restored yet"},
    {"sf", "a synchronous-fault (MAP_SYNC, DAX) mapping: it cannot be restored yet"},
};

Result<uint32_t> advice_of(pid_t pid, const proc::MapsEntry& m, const VmaSource& source) {
  for (auto& r : kRefusedFlags)
    if (m.has_flag(r.mnemonic) && !(source.wp_is_ours && std::string_view(r.mnemonic) == "uw") &&
        !(source.missing_is_ours && std::string_view(r.mnemonic) == "um"))
      return failf("pid {}: mapping {:x}-{:x} ({}) is {}", pid, m.start, m.end,
                   m.path.empty() ? "anonymous" : m.path, r.what);
  // pkey_mprotect's key: the keys a process allocated are not shown
  // anywhere to allocate them again.
  if (m.pkey != 0)
    return failf("pid {}: mapping {:x}-{:x} ({}) has memory protection key {} (pkey_mprotect): protection keys "
                 "cannot be restored yet; pkey_mprotect it back to key 0 before the dump",
                 pid, m.start, m.end, m.path.empty() ? "anonymous" : m.path, m.pkey);
  uint32_t advice = 0;
  for (auto& a : kAdviceFlags)
    if (m.has_flag(a.mnemonic)) advice |= a.bit;
  return advice;
}

}  // namespace

bool vma_is_kernel_special(const img::Vma& v) {
  return v.kind() == img::VMA_VDSO || v.kind() == img::VMA_VVAR ||
         v.kind() == img::VMA_VVAR_VCLOCK || v.kind() == img::VMA_VSYSCALL;
}

namespace {

Result<std::vector<proc::MapsEntry>> read_smaps(pid_t pid) {
  ASSIGN_OR_RETURN(auto text, proc::read_file(proc::pid_path(pid, "smaps")));
  return proc::parse_smaps(text);
}

bool same_mapping(const proc::MapsEntry& a, const proc::MapsEntry& b) {
  return a.start == b.start && a.end == b.end && a.offset == b.offset && a.read == b.read && a.write == b.write &&
         a.exec == b.exec && a.shared == b.shared && a.dev_major == b.dev_major && a.dev_minor == b.dev_minor &&
         a.inode == b.inode && a.path == b.path;
}

// The smaps entries of pid: the early ones if its maps still show exactly
// their mappings, else read now.
Result<std::vector<proc::MapsEntry>> smaps_entries(pid_t pid, const std::vector<proc::MapsEntry>* early,
                                                   const Logger* log, bool* from_early) {
  if (from_early) *from_early = false;
  if (early) {
    ASSIGN_OR_RETURN(auto text, proc::read_file(proc::pid_path(pid, "maps")));
    ASSIGN_OR_RETURN(auto now, proc::parse_maps(text));
    auto differ = std::mismatch(now.begin(), now.end(), early->begin(), early->end(), same_mapping);
    if (differ.first == now.end() && differ.second == early->end()) {
      std::vector<proc::MapsEntry> out = *early;
      // Read before the freeze: none may be taken for empty any more.
      for (auto& m : out)
        if (m.rss_kb == 0 && m.swap_kb == 0) m.rss_kb = 1;
      if (from_early) *from_early = true;
      return out;
    }
    if (log) {
      uint64_t at = differ.first != now.end() ? differ.first->start : differ.second->start;
      log->debug("pid {}: its mappings changed at {:#x} between the early read and the freeze: smaps read frozen",
                 pid, at);
    }
  }
  return read_smaps(pid);
}

// The flags a dump compares after the release: not the userfaultfd ones
// (the dump's own registrations come and go), nor soft-dirty.
std::vector<std::string> compared_flags(const proc::MapsEntry& m) {
  std::vector<std::string> out;
  for (auto& f : m.vm_flags)
    if (f != "um" && f != "uw" && f != "ui" && f != "sd") out.push_back(f);
  std::sort(out.begin(), out.end());
  return out;
}

void descendants(pid_t pid, std::vector<pid_t>& out, int depth) {
  out.push_back(pid);
  if (depth > 64) return;
  for (pid_t child : proc::children_of(pid)) descendants(child, out, depth + 1);
}

}  // namespace

EarlyMaps EarlyMaps::read(pid_t root) {
  EarlyMaps out;
  std::vector<pid_t> pids;
  descendants(root, pids, 0);
  for (pid_t pid : pids) {
    if (auto entries = read_smaps(pid)) out.smaps.emplace(pid, std::move(*entries));
  }
  return out;
}

Status check_flags_unchanged(pid_t pid, const std::vector<proc::MapsEntry>& early) {
  auto text = proc::read_file(proc::pid_path(pid, "smaps"));
  if (!text) return {};  // gone since the release: nothing to compare, nothing it can lose
  ASSIGN_OR_RETURN(auto now, proc::parse_smaps(*text));
  for (auto& e : early) {
    auto it = std::lower_bound(now.begin(), now.end(), e.start,
                               [](const proc::MapsEntry& m, uint64_t a) { return m.start < a; });
    if (it == now.end() || !same_mapping(*it, e)) continue;
    if (e.pkey != it->pkey)
      return failf("pid {}: the protection key of its mapping {:x}-{:x} ({}) changed while it was dumped ({}, now "
                   "{}: pkey_mprotect): the dump cannot tell which it had at the freeze; dump again",
                   pid, e.start, e.end, e.path.empty() ? "anonymous" : e.path, e.pkey, it->pkey);
    auto before = compared_flags(e), after = compared_flags(*it);
    if (before == after) continue;
    auto join = [](const std::vector<std::string>& v) {
      std::string s;
      for (auto& f : v) s += (s.empty() ? "" : " ") + f;
      return s;
    };
    return failf("pid {}: the flags of its mapping {:x}-{:x} ({}) changed while it was dumped (VmFlags \"{}\", "
                 "now \"{}\": madvise or mlock): the dump cannot tell which it had at the freeze; dump again",
                 pid, e.start, e.end, e.path.empty() ? "anonymous" : e.path, join(before), join(after));
  }
  return {};
}

Result<std::vector<VmaInfo>> collect_vmas(pid_t pid, const VmaSource& source) {
  ASSIGN_OR_RETURN(auto entries, smaps_entries(pid, source.early, source.log, source.from_early));
  std::vector<VmaInfo> out;
  for (auto& m : entries) {
    ASSIGN_OR_RETURN(auto kind, classify(pid, m));
    img::Vma v;
    // The kernel's own mappings carry flags of their own ([vvar] is dd):
    // they are remade by the kernel, not by us.
    bool special = kind == img::VMA_VDSO || kind == img::VMA_VVAR || kind == img::VMA_VVAR_VCLOCK ||
                   kind == img::VMA_VSYSCALL;
    if (!special) {
      ASSIGN_OR_RETURN(uint32_t advice, advice_of(pid, m, source));
      v.set_advice(advice);
      // VM_MAYWRITE of a shared mapping is the access mode of the file it
      // was mapped from (or a write seal at the time it was mapped).
      v.set_no_may_write(m.shared && !m.has_flag("mw"));
    }
    v.set_start(m.start);
    v.set_end(m.end);
    v.set_pgoff(m.offset);
    v.set_prot((m.read ? PROT_READ : 0) | (m.write ? PROT_WRITE : 0) | (m.exec ? PROT_EXEC : 0));
    uint32_t flags = m.shared ? MAP_SHARED : MAP_PRIVATE;
    if (kind == img::VMA_ANON_PRIVATE || kind == img::VMA_ANON_SHARED) flags |= MAP_ANONYMOUS;
    if (m.has_flag("gd")) flags |= MAP_GROWSDOWN;
    v.set_flags(flags);
    v.set_kind(kind);
    v.set_path(m.path);
    v.set_dev(makedev(m.dev_major, m.dev_minor));
    v.set_ino(m.inode);
    bool deleted = has_deleted_suffix(m.path) && !starts_with(m.path, "/memfd:") &&
                   (kind == img::VMA_FILE_SHARED || kind == img::VMA_FILE_PRIVATE);
    bool shmem = kind == img::VMA_ANON_SHARED || kind == img::VMA_SYSV_SHM || starts_with(m.path, "/memfd:");
    out.push_back({std::move(v), std::move(m), deleted, shmem});
  }
  return out;
}

Result<uint64_t> find_syscall_site(const std::vector<VmaInfo>& vmas) {
  for (auto& v : vmas)
    if (v.maps.exec && v.vma.kind() != img::VMA_VSYSCALL && v.vma.kind() != img::VMA_VDSO)
      return v.vma.start();
  for (auto& v : vmas)
    if (v.vma.kind() == img::VMA_VDSO) return v.vma.start();
  return fail("no executable mapping to run remote syscalls from");
}

}  // namespace minicriu
