#include "mem/vma.hpp"

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

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
  // system): mapped again as a plain file it would be no AIO context.
  if (starts_with(m.path, "/[aio]"))
    return failf("{}: the ring of an AIO context (io_setup), which minicriu cannot carry yet; io_destroy() "
                 "it before the dump", where);
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
  if (m.path.empty() || m.path[0] != '/')
    return failf("{}: mapping of an unnamed file is not supported", where);
  // The file must still be the one mapped: restore maps it by path.
  struct stat st;
  if (::stat(m.path.c_str(), &st) != 0 || st.st_ino != m.inode ||
      major(st.st_dev) != m.dev_major || minor(st.st_dev) != m.dev_minor)
    return failf("{}: the mapped file was replaced or moved since it was mapped", where);
  return m.shared ? img::VMA_FILE_SHARED : img::VMA_FILE_PRIVATE;
}

}  // namespace

bool vma_is_kernel_special(const img::Vma& v) {
  return v.kind() == img::VMA_VDSO || v.kind() == img::VMA_VVAR ||
         v.kind() == img::VMA_VVAR_VCLOCK || v.kind() == img::VMA_VSYSCALL;
}

Result<std::vector<VmaInfo>> collect_vmas(pid_t pid) {
  ASSIGN_OR_RETURN(auto text, proc::read_file(proc::pid_path(pid, "smaps")));
  ASSIGN_OR_RETURN(auto entries, proc::parse_smaps(text));
  std::vector<VmaInfo> out;
  for (auto& m : entries) {
    ASSIGN_OR_RETURN(auto kind, classify(pid, m));
    img::Vma v;
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
