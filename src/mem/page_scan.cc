#include "mem/page_scan.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>

#include "base/cpus.hpp"
#include "base/page.hpp"

namespace minicriu {

namespace {

// linux/fs.h of Linux 6.7 (uapi, stable).
struct PageRegionRaw {
  uint64_t start, end, categories;
};
struct PmScanArg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
  uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
static_assert(sizeof(PmScanArg) == 96);
constexpr unsigned long kPagemapScan = (3ul << 30) | (sizeof(PmScanArg) << 16) | ('f' << 8) | 16;
constexpr uint64_t kWpMatching = 1u << 0;
constexpr uint64_t kCheckWpAsync = 1u << 1;


void append(std::vector<PageRegion>& out, uint64_t start, uint64_t end, uint64_t cat) {
  if (!out.empty() && out.back().end == start && out.back().categories == cat) out.back().end = end;
  else out.push_back({start, end, cat});
}

}  // namespace

Result<PageMap> PageMap::open(pid_t pid) {
  UniqueFd fd(::open(fmt::format("/proc/{}/pagemap", pid).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return failf_errno("pid {}: cannot open pagemap", pid);
  // An empty range asks only whether the ioctl is there.
  PmScanArg a{};
  PageRegionRaw r{};
  a.size = sizeof(a);
  a.vec = reinterpret_cast<uint64_t>(&r);
  a.vec_len = 1;
  a.return_mask = page_category::present;
  // A kernel without it has no ioctl on pagemap at all (ENOTTY).
  bool scan = ::ioctl(fd.get(), kPagemapScan, &a) >= 0 || errno != ENOTTY;
  return PageMap(pid, std::move(fd), scan);
}

Status PageMap::scan(uint64_t start, uint64_t end, bool write_protect, std::vector<PageRegion>& out) const {
  if (scan_) return scan_ioctl(start, end, write_protect, out);
  if (write_protect) return failf("pid {}: write tracking needs the PAGEMAP_SCAN ioctl (Linux 6.7)", pid_);
  return scan_read(start, end, out);
}

Status PageMap::scan_ioctl(uint64_t start, uint64_t end, bool write_protect,
                           std::vector<PageRegion>& out) const {
  // No more runs than pages: a scan of a few pages (a background dump's
  // freeze scans thousands of them) needs no 384 KiB buffer to be made,
  // zeroed and unmapped each time.
  std::vector<PageRegionRaw> vec(std::clamp<uint64_t>((end - start) / kPageSize, 1, 16384));
  for (uint64_t at = start; at < end;) {
    PmScanArg a{};
    a.size = sizeof(a);
    a.flags = write_protect ? (kWpMatching | kCheckWpAsync) : 0;
    a.start = at;
    a.end = end;
    a.vec = reinterpret_cast<uint64_t>(vec.data());
    a.vec_len = vec.size();
    a.category_anyof_mask = page_category::present | page_category::swapped;
    a.return_mask = page_category::all;
    int n = ::ioctl(fd_.get(), kPagemapScan, &a);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return failf_errno("pid {}: PAGEMAP_SCAN of {:#x}-{:#x}{}", pid_, at, end,
                         write_protect ? " (write-protecting)" : "");
    // A later call may report again what an earlier one did: walk_end can
    // lie before the end of the last run reported, and the kernel leaves it
    // at the place of an earlier internal stop even when the walk went on to
    // the end (its buffer of 512 runs filled once). The first report wins:
    // with write_protect, the pages it reported as written are protected by
    // now and would read as unwritten. Everything below out.back().end is
    // accounted for (out is sorted and disjoint).
    for (int i = 0; i < n; i++) {
      uint64_t start = vec[i].start;
      if (!out.empty() && start < out.back().end) start = out.back().end;
      if (start < vec[i].end) append(out, start, vec[i].end, vec[i].categories);
    }
    // A call that did not fill vec walked to the end (no max_pages).
    if (static_cast<size_t>(n) < vec.size()) break;
    if (a.walk_end <= at) return failf("pid {}: PAGEMAP_SCAN made no progress at {:#x}", pid_, at);
    at = a.walk_end;
  }
  return {};
}

Status PageMap::unprotected(uint64_t start, uint64_t end, std::vector<std::pair<uint64_t, uint64_t>>& out) const {
  out.clear();
  if (!scan_) return failf("pid {}: a background dump needs the PAGEMAP_SCAN ioctl (Linux 6.7)", pid_);
  PageRegionRaw vec[32];
  uint64_t expect = start;  // every page before it is accounted for
  auto bad = [&](uint64_t s, uint64_t e) {
    if (!out.empty() && out.back().second == s) out.back().second = e;
    else out.emplace_back(s, e);
  };
  for (uint64_t at = start; at < end;) {
    PmScanArg a{};
    a.size = sizeof(a);
    a.start = at;
    a.end = end;
    a.vec = reinterpret_cast<uint64_t>(vec);
    a.vec_len = std::size(vec);
    a.category_anyof_mask = page_category::present | page_category::swapped;
    a.return_mask = page_category::all;
    int n = ::ioctl(fd_.get(), kPagemapScan, &a);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failf_errno("pid {}: PAGEMAP_SCAN of {:#x}-{:#x}", pid_, at, end);
    for (int i = 0; i < n; i++) {
      if (vec[i].end <= expect) continue;
      uint64_t s = std::max(vec[i].start, expect);
      if (s > expect) bad(expect, s);  // not there any more
      if (vec[i].categories & page_category::written) bad(s, vec[i].end);
      expect = vec[i].end;
    }
    if (static_cast<size_t>(n) < std::size(vec)) break;  // walked to the end (see scan_ioctl)
    if (a.walk_end <= at) return failf("pid {}: PAGEMAP_SCAN made no progress at {:#x}", pid_, at);
    at = a.walk_end;
  }
  if (expect < end) bad(expect, end);
  return {};
}

Status PageMap::scan_read(uint64_t start, uint64_t end, std::vector<PageRegion>& out) const {
  std::vector<uint64_t> pm(16384);
  for (uint64_t at = start; at < end;) {
    uint64_t n = std::min<uint64_t>(pm.size(), (end - at) / kPageSize);
    auto want = static_cast<ssize_t>(n * 8);
    if (::pread(fd_.get(), pm.data(), static_cast<size_t>(want), static_cast<off_t>(at / kPageSize * 8)) != want)
      return failf_errno("pid {}: cannot read pagemap at {:#x}", pid_, at);
    for (uint64_t i = 0; i < n; i++) {
      uint64_t e = pm[i];
      if (!(e & (pagemap_bits::present | pagemap_bits::swapped))) continue;
      // Without the ioctl nothing is known written or not: every page counts
      // as written (dumped).
      uint64_t cat = page_category::written | ((e & pagemap_bits::present) ? page_category::present : 0) |
                     ((e & pagemap_bits::swapped) ? page_category::swapped : 0) | ((e & pagemap_bits::file) ? page_category::file : 0);
      uint64_t page = at + i * kPageSize;
      append(out, page, page + kPageSize, cat);
    }
    at += n * kPageSize;
  }
  return {};
}

ScanAhead::ScanAhead(const PageMap& map, uint64_t start, uint64_t end, uint64_t chunk, unsigned workers)
    : map_(map), start_(start), end_(end), chunk_(chunk), ahead_(2 * std::max(1u, workers)),
      slots_((end - start + chunk - 1) / chunk) {
  start_workers(threads_, std::min<unsigned>(workers, static_cast<unsigned>(slots_.size())), [this] { work(); });
}

ScanAhead::~ScanAhead() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ScanAhead::range_of(size_t i, uint64_t& at, uint64_t& to) const {
  at = start_ + i * chunk_;
  to = std::min(end_, at + chunk_);
}

void ScanAhead::work() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || claimed_ >= slots_.size() || claimed_ < taken_ + ahead_; });
    if (stop_ || claimed_ >= slots_.size()) return;
    size_t i = claimed_++;
    lock.unlock();
    uint64_t at, to;
    range_of(i, at, to);
    std::vector<PageRegion> runs;
    Status st = map_.scan(at, to, false, runs);
    lock.lock();
    slots_[i].status = std::move(st);
    slots_[i].runs = std::move(runs);
    slots_[i].done = true;
    cv_.notify_all();
  }
}

Result<bool> ScanAhead::next(uint64_t& at, uint64_t& to, std::vector<PageRegion>& out) {
  std::unique_lock lock(mu_);
  if (taken_ >= slots_.size()) return false;
  size_t i = taken_;
  range_of(i, at, to);
  out.clear();
  if (threads_.empty()) {  // no worker could be made: scanned here
    taken_++;
    lock.unlock();
    TRY(map_.scan(at, to, false, out));
    return true;
  }
  cv_.wait(lock, [&] { return slots_[i].done; });
  Slot slot = std::move(slots_[i]);
  slots_[i] = Slot{};
  taken_++;
  lock.unlock();
  cv_.notify_all();
  if (!slot.status) return std::unexpected(slot.status.error());
  out = std::move(slot.runs);
  return true;
}

}  // namespace minicriu
