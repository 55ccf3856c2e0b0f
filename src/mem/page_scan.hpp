// The page map of a process read with the PAGEMAP_SCAN ioctl of
// /proc/PID/pagemap (Linux 6.7): one call returns the runs of pages that
// match, with their categories, holes skipped. Where the ioctl is missing the
// same runs are built from the pagemap's u64 per page (no write tracking
// then). The same ioctl arms write tracking (PM_SCAN_WP_MATCHING) on memory
// registered with a userfaultfd in asynchronous write-protect mode, and tells
// which pages were written since (PAGE_IS_WRITTEN).
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace minicriu {

// PAGE_IS_* of linux/fs.h (the headers here predate them).
namespace page_category {
constexpr uint64_t wp_allowed = 1u << 0;  // the VMA is registered for async write-protect
constexpr uint64_t written = 1u << 1;     // written since it was write-protected (or never protected)
constexpr uint64_t file = 1u << 2;        // a page of a file or of shmem, not anonymous
constexpr uint64_t present = 1u << 3;
constexpr uint64_t swapped = 1u << 4;
constexpr uint64_t pfn_zero = 1u << 5;    // the shared zero page
constexpr uint64_t all = (1u << 6) - 1;
}  // namespace page_category

// Bits of a /proc/PID/pagemap entry (Documentation/admin-guide/mm/pagemap.rst).
namespace pagemap_bits {
constexpr uint64_t present = 1ull << 63;
constexpr uint64_t swapped = 1ull << 62;
constexpr uint64_t file = 1ull << 61;     // file page or shared anonymous
constexpr uint64_t exclusive = 1ull << 56;  // mapped by this process only (its mapcount is 1)
constexpr uint64_t pfn_mask = (1ull << 55) - 1;
}  // namespace pagemap_bits

struct PageRegion {
  uint64_t start = 0, end = 0;  // page aligned, [start, end)
  uint64_t categories = 0;      // page_category bits of every page of the run
};

class PageMap {
 public:
  [[nodiscard]] static Result<PageMap> open(pid_t pid);

  // Whether PAGEMAP_SCAN answers here (else: the pagemap read page by page).
  bool has_scan() const { return scan_; }

  // The runs of present or swapped pages of [start, end), in order, adjacent
  // pages of the same categories merged. write_protect: the pages found are
  // write-protected again as they are reported (PM_SCAN_WP_MATCHING), which
  // needs the range registered for async write-protect (else an error).
  // Safe from several threads at once.
  [[nodiscard]] Status scan(uint64_t start, uint64_t end, bool write_protect, std::vector<PageRegion>& out) const;

  // A background dump (synchronous write-protect): the runs of [start, end)
  // whose pages are no longer present (or swapped) with their write-protect
  // bit still set, in order. A page that is still protected was never
  // written, unmapped, discarded or moved since it was protected. Safe from
  // several threads at once.
  [[nodiscard]] Status unprotected(uint64_t start, uint64_t end,
                                   std::vector<std::pair<uint64_t, uint64_t>>& out) const;

 private:
  PageMap(pid_t pid, UniqueFd fd, bool scan) : pid_(pid), fd_(std::move(fd)), scan_(scan) {}
  [[nodiscard]] Status scan_ioctl(uint64_t start, uint64_t end, bool write_protect,
                                  std::vector<PageRegion>& out) const;
  [[nodiscard]] Status scan_read(uint64_t start, uint64_t end, std::vector<PageRegion>& out) const;

  pid_t pid_ = 0;
  UniqueFd fd_;
  bool scan_ = false;
};

// The runs of present or swapped pages of [start, end) (PageMap::scan, no
// write-protect), a chunk at a time, scanned ahead of the reader by worker
// threads and handed out in order. The page-table walk of a large VMA
// (~17 ms/GiB here) is shared by the CPUs, and a frozen dump copies the
// first chunk while the next are walked, instead of after the last.
// Bounded: the workers stay at most two chunks each ahead of the reader.
class ScanAhead {
 public:
  ScanAhead(const PageMap& map, uint64_t start, uint64_t end, uint64_t chunk, unsigned workers);
  ~ScanAhead();
  ScanAhead(const ScanAhead&) = delete;
  ScanAhead& operator=(const ScanAhead&) = delete;

  // The next chunk's runs (out replaced), its range in at and to; false
  // after the last chunk.
  [[nodiscard]] Result<bool> next(uint64_t& at, uint64_t& to, std::vector<PageRegion>& out);
  // The threads it could make (none: the reader scans each chunk itself).
  size_t workers() const { return threads_.size(); }

 private:
  struct Slot {
    bool done = false;
    Status status;
    std::vector<PageRegion> runs;
  };
  void work();
  void range_of(size_t i, uint64_t& at, uint64_t& to) const;

  const PageMap& map_;
  uint64_t start_, end_, chunk_;
  size_t ahead_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Slot> slots_;
  size_t claimed_ = 0, taken_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace minicriu
