// The page path of a dump: pagemap scan (PAGEMAP_SCAN), then the pages copied
// into the page image by a worker per CPU (mem/page_copy.hpp), or, into a page
// server's connection, vmsplice'd by the parasite and spliced in order.
#pragma once

#include <sys/types.h>

#include <functional>
#include <span>
#include <utility>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"
#include "mem/page_copy.hpp"
#include "mem/vma.hpp"
#include "minicriu.pb.h"
#include "parasite/parasite_session.hpp"
#include "ptrace/tracee_memory.hpp"

namespace minicriu {

struct PageDumpResult {
  std::vector<img::PagemapEntry> entries;
  uint64_t pages = 0;            // written to the page image
  uint64_t pages_in_parent = 0;  // present, unchanged since the parent images: left there
  uint64_t pages_changed = 0;    // of the tracked VMAs, written since the parent round
  bool scan_ioctl = true;        // the page map came from PAGEMAP_SCAN
  uint64_t spliced_pages = 0;    // of pages: vmsplice'd by the parasite into the lanes' pipes
  // A background dump: the pages of the deferred VMAs, not yet written. Their
  // entries follow the others in entries, and their bytes follow the others'
  // in the page image (deferred_offset on), in that order.
  uint64_t deferred_pages = 0;
  size_t deferred_first_entry = 0;  // index in entries
  uint64_t deferred_offset = 0;     // bytes of the page image written now
};

// An incremental dump of one process (--prev-images-dir): what the parent
// images hold of it, and whether this round arms write tracking.
struct PageChain {
  // The parent images' VMAs of this process, null: none (a process new
  // since, or no parent images).
  const img::MmCore* parent_mm = nullptr;
  // Every page the parent images list for it (own or further up), as sorted
  // [start, end) runs: a page is left in the parent only if it is there.
  std::vector<std::pair<uint64_t, uint64_t>> parent_pages;
  // Write-protect the pages found (PM_SCAN_WP_MATCHING) in the VMAs that are
  // registered (a pre-dump: the next round counts what is written from now).
  bool arm = false;
  // Starts of the VMAs registered for async write-protect this round: no
  // parent holds them yet, but they are armed (arm) and marked tracked.
  std::vector<uint64_t> registered;
  // A background dump: starts of the VMAs whose pages are copied later (they
  // are write-protected, synchronous mode); only listed now.
  std::vector<uint64_t> deferred;
  // ... and their pages, when the dump listed them before the freeze
  // (BackgroundCopy::freeze_point: sorted [start, end) runs): not scanned.
  const std::vector<std::pair<uint64_t, uint64_t>>* deferred_runs = nullptr;
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

// Called before each batch of pages is written to pages_fd with the batch's
// runs (address, bytes): a page server's connection takes a header there
// (mem/page_upload.hpp). Empty: pages_fd is the page image itself.
using BeforePages = std::function<Status(std::span<const std::pair<uint64_t, uint64_t>>)>;

// Writes the chosen pages of every VMA to pages_fd in order, marking the VMAs
// that have some (has_pages), and returns the matching pagemap entries.
// session null: the tree runs again (a pre-dump, its tracking armed by this
// scan): a page unmapped since its scan is stored as zeros. session set: the
// tree is frozen, the parasite in (it drains the pages only into a page
// server's connection, before set). pool (frozen, into a local image): the
// copies are queued there and done by its workers while the dump goes on;
// they are not finished on return (CopyPool::wait). lanes (with pool): the
// page files of lanes 1.. (PagemapEntry.lane); the image's MiB pieces go
// round pages_fd and them, each file's in pagemap order.
[[nodiscard]] Result<PageDumpResult> dump_pages(pid_t pid, std::vector<VmaInfo>& vmas,
                                                ParasiteSession* session,
                                                const TraceeMemory& memory, int pages_fd,
                                                const Logger& log, const ParentMemory& parent = {},
                                                const PageChain& chain = {}, const BeforePages& before = {},
                                                CopyPool* pool = nullptr, std::span<const int> lanes = {});

}  // namespace minicriu
