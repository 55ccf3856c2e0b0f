// VMAs: from /proc/PID/smaps to image entries, and which of them we can take.
#pragma once

#include <sys/types.h>

#include <vector>

#include "base/error.hpp"
#include "minicriu.pb.h"
#include "proc/proc_parse.hpp"

namespace minicriu {

struct VmaInfo {
  img::Vma vma;
  proc::MapsEntry maps;
  bool deleted = false;  // its file has no name any more: reached by map_files
  bool shmem = false;    // maps a shared memory object (anonymous shared, memfd)
};

// Classifies every mapping of pid; refuses, with one line naming the process,
// the address range and what to do, mappings this version cannot restore.
// wp_tracking_is_ours: the dump holds a write-tracking userfaultfd of this
// process (a pre-dump armed it), so a VMA registered for write-protect is
// ours to see, not the application's (refused otherwise).
[[nodiscard]] Result<std::vector<VmaInfo>> collect_vmas(pid_t pid, bool wp_tracking_is_ours = false);

// Where remote syscalls may write "syscall; int3" for a moment: the start of an
// executable mapping (never [vsyscall], which cannot be written).
[[nodiscard]] Result<uint64_t> find_syscall_site(const std::vector<VmaInfo>& vmas);

bool vma_is_kernel_special(const img::Vma& vma);  // vdso, vvar, vsyscall

}  // namespace minicriu
