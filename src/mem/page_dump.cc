#include "mem/page_dump.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <span>

#include "base/page.hpp"
#include "base/unique_fd.hpp"

namespace minicriu {

namespace {

constexpr uint64_t kPmPresent = 1ull << 63;
constexpr uint64_t kPmSwapped = 1ull << 62;
constexpr uint64_t kPmFileOrSharedAnon = 1ull << 61;

// One page of the target, for arithmetic by pages on RemotePtr<Page>.
struct Page {
  uint8_t bytes[kPageSize];
};

// Collects runs of pages and hands them to the parasite in batches.
class PageBatcher {
 public:
  PageBatcher(ParasiteSession& session, int out_fd, PageDumpResult& result, ProgressMeter& progress)
      : session_(session), out_fd_(out_fd), result_(result), progress_(progress) {}

  [[nodiscard]] Status add(RemotePtr<> at, uint64_t pages) {
    if (!runs_.empty() && runs_.back().end() == at) {
      runs_.back().size += pages * kPageSize;
    } else {
      if (runs_.size() == ParasiteSession::kMaxIovs) TRY(flush());
      runs_.push_back({at, pages * kPageSize});
    }
    pending_bytes_ += pages * kPageSize;
    // Bounded batches keep the progress line moving (64 MiB: a few tens of
    // milliseconds at the page path's speed, one parasite command each).
    if (pending_bytes_ >= (64ull << 20)) TRY(flush());
    return {};
  }

  [[nodiscard]] Status flush() {
    if (runs_.empty()) return {};
    TRY(session_.drain_pages(runs_, out_fd_));
    for (auto& r : runs_) append_entry(r.start, r.size / kPageSize);
    progress_.add(pending_bytes_);
    runs_.clear();
    pending_bytes_ = 0;
    return {};
  }

  void append_entry(RemotePtr<> at, uint64_t pages) {
    auto& e = result_.entries;
    if (!e.empty() && e.back().vaddr() + e.back().nr_pages() * kPageSize == at.addr() &&
        e.back().nr_pages() + pages < (1ull << 31)) {
      e.back().set_nr_pages(static_cast<uint32_t>(e.back().nr_pages() + pages));
    } else {
      img::PagemapEntry entry;
      entry.set_vaddr(at.addr());
      entry.set_nr_pages(static_cast<uint32_t>(pages));
      e.push_back(entry);
    }
    result_.pages += pages;
  }

 private:
  ParasiteSession& session_;
  int out_fd_;
  PageDumpResult& result_;
  ProgressMeter& progress_;
  std::vector<RemoteRange> runs_;
  uint64_t pending_bytes_ = 0;
};

// Pages the parasite cannot vmsplice (no PROT_READ: get_user_pages refuses
// them) are read through /proc/PID/mem, which may, and written directly.
Status copy_unreadable(const TraceeMemory& memory, RemotePtr<> at, uint64_t pages, int out_fd) {
  std::vector<char> buf(pages * kPageSize);
  TRY(memory.read_bytes(at, buf.data(), buf.size()));
  size_t off = 0;
  while (off < buf.size()) {
    ssize_t n = ::write(out_fd, buf.data() + off, buf.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("writing pages to the image");
    off += static_cast<size_t>(n);
  }
  return {};
}

constexpr uint64_t kPmPfnMask = (1ull << 55) - 1;

// The pagemap entries (one u64 per page) of out.size() pages from at on.
Status read_pagemap(int fd, RemotePtr<> at, std::span<uint64_t> out, pid_t pid) {
  ssize_t want = static_cast<ssize_t>(out.size_bytes());
  if (::pread(fd, out.data(), out.size_bytes(), static_cast<off_t>(at.addr() / kPageSize * 8)) != want)
    return failf_errno("pid {}: cannot read pagemap at {}", pid, at);
  return {};
}

RemoteRange range_of(const img::Vma& vma) { return {RemotePtr<>(vma.start()), vma.end() - vma.start()}; }

// Whether a parent's VMA is the twin of a child's: the same range of the same
// private memory (anonymous, or the same file at the same offset), with pages.
bool is_twin(const img::Vma& parent, const img::Vma& child) {
  if (parent.start() != child.start() || parent.end() != child.end() || parent.kind() != child.kind() ||
      !parent.has_pages())
    return false;
  if (child.kind() == img::VMA_ANON_PRIVATE) return true;
  return child.kind() == img::VMA_FILE_PRIVATE && parent.path() == child.path() && parent.ino() == child.ino() &&
         parent.dev() == child.dev() && parent.pgoff() == child.pgoff();
}

// Which pages of a private VMA are still the parent's (fork's copy-on-write,
// same physical page in both), when the parent's VMA of the same range can
// stand in for the rest: every page the parent has content for, the child
// has too (else the child's would read back the parent's). In a file mapping
// the content is the copied pages (anonymous), not the file's.
// Empty when the VMA cannot inherit.
Result<std::vector<bool>> shared_with_parent(const VmaInfo& info, int child_pm, const ParentMemory& parent,
                                             pid_t pid) {
  std::vector<bool> shared;
  if (!parent.mm || (info.vma.kind() != img::VMA_ANON_PRIVATE && info.vma.kind() != img::VMA_FILE_PRIVATE))
    return shared;
  const img::Vma* twin = nullptr;
  for (auto& v : parent.mm->vmas())
    if (is_twin(v, info.vma)) twin = &v;
  if (!twin) return shared;
  UniqueFd parent_pm(::open(fmt::format("/proc/{}/pagemap", parent.pid).c_str(), O_RDONLY | O_CLOEXEC));
  if (!parent_pm) return shared;
  RemoteRange range = range_of(info.vma);
  uint64_t pages = range.size / kPageSize;
  std::vector<uint64_t> c(pages), p(pages);
  TRY(read_pagemap(child_pm, range.start, c, pid));
  TRY(read_pagemap(parent_pm.get(), range.start, p, parent.pid));
  shared.assign(pages, false);
  bool any = false;
  bool file = info.vma.kind() == img::VMA_FILE_PRIVATE;
  auto content = [file](uint64_t e) { return (e & (kPmPresent | kPmSwapped)) && !(file && (e & kPmFileOrSharedAnon)); };
  for (uint64_t i = 0; i < pages; i++) {
    bool parent_has = content(p[i]);
    bool child_has = content(c[i]);
    if (parent_has && !child_has) return std::vector<bool>();  // the child's reads zeros (or the file) there
    uint64_t pfn = c[i] & kPmPfnMask;
    // Without CAP_SYS_ADMIN the kernel shows PFN 0: nothing is known shared.
    if (child_has && parent_has && (c[i] & kPmPresent) && (p[i] & kPmPresent) && pfn &&
        pfn == (p[i] & kPmPfnMask)) {
      shared[i] = true;
      any = true;
    }
  }
  if (!any) return std::vector<bool>();
  return shared;
}

}  // namespace

bool vma_dumps_pages(const img::Vma& vma) {
  switch (vma.kind()) {
    case img::VMA_ANON_PRIVATE:
    case img::VMA_FILE_PRIVATE:
      return true;
    default:
      // Shared data lives in its file or shmem object (stored once, not per
      // process); kernel mappings are remade.
      return false;
  }
}

Result<PageDumpResult> dump_pages(pid_t pid, std::vector<VmaInfo>& vmas, ParasiteSession& session,
                                  const TraceeMemory& memory, int pages_fd, const Logger& log,
                                  const ParentMemory& parent) {
  PageDumpResult result;
  std::string pm_path = fmt::format("/proc/{}/pagemap", pid);
  UniqueFd pagemap(::open(pm_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!pagemap) return failf_errno("pid {}: cannot open pagemap", pid);

  uint64_t total = 0;
  for (auto& v : vmas)
    if (vma_dumps_pages(v.vma)) total += (v.maps.rss_kb + v.maps.swap_kb) << 10;
  ProgressMeter progress(log, "dump", pid, total);
  PageBatcher batcher(session, pages_fd, result, progress);

  std::vector<uint64_t> pm(16384);
  for (auto& info : vmas) {
    img::Vma& vma = info.vma;
    if (!vma_dumps_pages(vma)) continue;
    if (info.maps.rss_kb == 0 && info.maps.swap_kb == 0) continue;  // nothing there
    bool file_private = vma.kind() == img::VMA_FILE_PRIVATE;
    bool readable = info.maps.read;
    uint64_t vma_pages = 0;
    ASSIGN_OR_RETURN(std::vector<bool> inherit, shared_with_parent(info, pagemap.get(), parent, pid));
    if (!inherit.empty()) vma.set_inherited(true);
    const RemoteRange range = range_of(vma);
    // Pages of the VMA as an array: page k of the VMA is at pages + k.
    const auto pages = range.start.cast<Page>();
    const uint64_t vma_total = range.size / kPageSize;
    for (uint64_t first = 0; first < vma_total;) {
      uint64_t n = std::min<uint64_t>(pm.size(), vma_total - first);
      TRY(read_pagemap(pagemap.get(), pages + static_cast<int64_t>(first), std::span(pm).first(n), pid));
      auto wanted = [&](uint64_t k) {
        uint64_t e = pm[k];
        if (!(e & (kPmPresent | kPmSwapped))) return false;
        if (!inherit.empty() && inherit[first + k]) return false;  // in the parent's image
        return !file_private || !(e & kPmFileOrSharedAnon);
      };
      for (uint64_t i = 0; i < n;) {
        if (!wanted(i)) {
          i++;
          continue;
        }
        uint64_t j = i + 1;
        while (j < n && wanted(j)) j++;
        RemotePtr<> run = pages + static_cast<int64_t>(first + i);
        if (readable) {
          TRY(batcher.add(run, j - i));
        } else {
          TRY(batcher.flush());
          TRY(copy_unreadable(memory, run, j - i, pages_fd));
          batcher.append_entry(run, j - i);
          progress.add((j - i) * kPageSize);
        }
        vma_pages += j - i;
        i = j;
      }
      first += n;
    }
    if (vma_pages) vma.set_has_pages(true);
    if (!inherit.empty())
      log.debug("pid {}: vma {}-{}: {} page(s) still the parent's", pid, range.start, range.end(),
                std::count(inherit.begin(), inherit.end(), true));
    log.debug("pid {}: vma {}-{} {}: {} page(s)", pid, range.start, range.end(), vma.path(), vma_pages);
  }
  TRY(batcher.flush());
  progress.finish();
  return result;
}

}  // namespace minicriu
