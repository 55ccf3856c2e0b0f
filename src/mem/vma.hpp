// VMAs: from /proc/PID/smaps to image entries, and which of them we can take.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"
#include "minicriu.pb.h"
#include "proc/proc_parse.hpp"

namespace minicriu {

struct VmaInfo {
  img::Vma vma;
  proc::MapsEntry maps;
  bool deleted = false;  // its file has no name any more: reached by map_files
  bool shmem = false;    // maps a shared memory object (anonymous shared, memfd)
};

// How collect_vmas reads a process.
struct VmaSource {
  // The dump holds a write-tracking userfaultfd of this process (a pre-dump
  // armed it, or a background dump before the freeze), so a VMA registered
  // for write-protect is ours to see, not the application's (refused
  // otherwise); missing_is_ours: for missing pages as well (a background
  // dump armed before the freeze).
  bool wp_is_ours = false;
  bool missing_is_ours = false;
  // The process's smaps as read before the freeze (EarlyMaps), used instead
  // of reading smaps again with the tree frozen when /proc/PID/maps still
  // shows the same mappings (Rss then only says "maybe pages": every VMA is
  // scanned); else smaps is read now.
  const std::vector<proc::MapsEntry>* early = nullptr;
  const Logger* log = nullptr;
  bool* from_early = nullptr;  // set: whether early was taken
};

// Classifies every mapping of pid; refuses, with one line naming the process,
// the address range and what to do, mappings this version cannot restore.
[[nodiscard]] Result<std::vector<VmaInfo>> collect_vmas(pid_t pid, const VmaSource& source = {});

// The smaps of every process of a tree, read with the tree still running.
// Reading smaps makes the kernel walk the page tables of every VMA (for Rss
// and Pss: tens of milliseconds per GiB), which need not happen frozen: the
// freeze then reads /proc/PID/maps (no walk) and takes these where the
// mappings are the same. Their VmFlags can still change without the maps
// changing (madvise, mlock on whole VMAs): a dump that lets the tree run
// reads smaps again after the release and refuses if a VMA of the same
// range has other flags (check_flags_unchanged).
struct EarlyMaps {
  std::map<pid_t, std::vector<proc::MapsEntry>> smaps;
  // Best effort: a process that cannot be read (gone, new) is read frozen.
  static EarlyMaps read(pid_t root);
  const std::vector<proc::MapsEntry>* of(pid_t pid) const {
    auto it = smaps.find(pid);
    return it == smaps.end() ? nullptr : &it->second;
  }
};

// After the release: the VMAs dumped from early maps still have the flags
// they were dumped with (a VMA whose range changed since is not compared:
// the tree runs, and may unmap or move what it likes).
[[nodiscard]] Status check_flags_unchanged(pid_t pid, const std::vector<proc::MapsEntry>& early);

// Where remote syscalls may write "syscall; int3" for a moment: the start of an
// executable mapping (never [vsyscall], which cannot be written).
[[nodiscard]] Result<uint64_t> find_syscall_site(const std::vector<VmaInfo>& vmas);

bool vma_is_kernel_special(const img::Vma& vma);  // vdso, vvar, vsyscall

}  // namespace minicriu
