// The page path of a dump: pagemap scan, then vmsplice (parasite) + splice into
// the page image, with no copy through our memory.
#pragma once

#include <sys/types.h>

#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"
#include "mem/vma.hpp"
#include "minicriu.pb.h"
#include "parasite/parasite_session.hpp"
#include "ptrace/tracee_memory.hpp"

namespace minicriu {

struct PageDumpResult {
  std::vector<img::PagemapEntry> entries;
  uint64_t pages = 0;
};

// Which pages of a VMA go into the image: present or swapped pages, and for a
// private file mapping only those copied on write (pagemap bit 61 clear).
bool vma_dumps_pages(const img::Vma& vma);

// The parent of the process being dumped, already dumped and still frozen:
// pages it shares copy-on-write with the child are stored once, in its image.
struct ParentMemory {
  pid_t pid = 0;
  const img::MmCore* mm = nullptr;
};

// Writes the chosen pages of every VMA to pages_fd in order, marking the VMAs
// that have some (has_pages), and returns the matching pagemap entries.
[[nodiscard]] Result<PageDumpResult> dump_pages(pid_t pid, std::vector<VmaInfo>& vmas,
                                                ParasiteSession& session,
                                                const TraceeMemory& memory, int pages_fd,
                                                const Logger& log, const ParentMemory& parent = {});

}  // namespace minicriu
