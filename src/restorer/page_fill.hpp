// Filling the premap slots with their pages (restore step 3): from the page
// images, split between a few reader threads when there is much to read, or
// from a page source (restore --page-server). Fresh anonymous slots are
// filled by UFFDIO_COPY from the page file mapped (no page zeroed, no fault
// taken), the others by large preadv() calls after MADV_POPULATE_WRITE.
//
// The readers run in the task being restored, before its children are cloned
// and before it jumps into the blob: fill_pages joins every thread it started
// before it returns, on every path, so the task is single-threaded again
// (clone3 of the children and the blob's unmapping of the restoring program
// assume it).
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "base/error.hpp"
#include "images/checkpoint.hpp"
#include "mem/page_source.hpp"
#include "restorer/premap.hpp"

namespace minicriu {

// One contiguous piece of a page file bound for contiguous memory of a slot.
struct PageRead {
  uint32_t file = 0;    // index into ProcessImages::page_files
  uint64_t offset = 0;  // in that file
  uint64_t dst = 0;     // address in the premap area
  uint64_t len = 0;
  // Its destination is populated (MADV_POPULATE_WRITE) before it is read:
  // not in memory with huge pages, where a fault fills 2 MiB and populating
  // first only takes the zeroed pages out of the cache before the copy.
  bool populate = true;
  // Its destination is a fresh anonymous private slot, filled by UFFDIO_COPY
  // from the page file mapped (fill_pages: when a userfaultfd can be had).
  bool copy = false;
};

// Per mm.vmas(i): whether its slot is filled by UFFDIO_COPY (PageRead::copy):
// anonymous private memory with pages in a fresh slot of its own (not
// inherited: that holds the parent's pages; not lazy), without huge pages
// (MADV_HUGEPAGE, or THP "always" unless MADV_NOHUGEPAGE: UFFDIO_COPY puts
// 4 KiB pages, a fault in such memory a 2 MiB one). Pure.
std::vector<bool> copy_slots(const ProcessImages& p, const PremapPlan& plan, bool thp_always);

// What fill_pages reads: every page run of p that is not lazy, in its slot,
// file after file (the image's own, then its parents' up the chain), each in
// the order of its offsets; neighbours in both the file and memory merged.
// copy: copy_slots(). Pure, for unit tests.
[[nodiscard]] Result<std::vector<PageRead>> plan_page_reads(const ProcessImages& p, const PremapPlan& plan,
                                                            const std::vector<bool>& copy = {});

// reads cut into `parts` contiguous parts of about the same number of bytes
// (fewer if there are fewer pages than parts), in order: each reader thread
// takes one. A read is cut where its destination is 2 MiB-aligned if it can
// be (two readers never fill the same huge page), else at a page. Pure.
std::vector<std::vector<PageRead>> split_page_reads(const std::vector<PageRead>& reads, unsigned parts);

// How many threads read `bytes` of pages: one up to 64 MiB (threads would cost
// more than they save), else as many as this task may run on, at most 4.
unsigned page_read_workers(uint64_t bytes);

// Reads the pages of p's page images into the slots (not the lazy VMAs'): the
// page data goes from the page cache straight into the premapped memory, in
// page_read_workers() threads. Each read's bytes are added to *progress (if
// not null: a counter the restoring program shares with the tasks it makes,
// for its progress report). The first error wins; every thread is joined.
[[nodiscard]] Status fill_pages(const ProcessImages& p, const PremapPlan& plan,
                                std::atomic<uint64_t>* progress = nullptr);

// The same from a page source (a page server: restore --page-server), its
// bytes received straight into the slots, in pieces of at most 64 MiB, in the
// calling thread (one connection).
[[nodiscard]] Status fill_pages_from(PageSource& source, const ProcessImages& p, const PremapPlan& plan,
                                     std::atomic<uint64_t>* progress = nullptr);

}  // namespace minicriu
