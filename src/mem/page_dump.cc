#include "mem/page_dump.hpp"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <span>

#include "base/cpus.hpp"
#include "base/page.hpp"
#include "base/unique_fd.hpp"
#include "mem/page_copy.hpp"
#include "mem/page_scan.hpp"

namespace minicriu {

namespace {

// A frozen VMA's page tables walked a chunk at a time (ScanAhead).
constexpr uint64_t kScanChunk = 64ull << 20;

// One page of the target, for arithmetic by pages on RemotePtr<Page>.
struct Page {
  uint8_t bytes[kPageSize];
};

Status write_all(int fd, const char* buf, size_t len) {
  for (size_t off = 0; off < len;) {
    ssize_t n = ::write(fd, buf + off, len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("writing pages to the image");
    off += static_cast<size_t>(n);
  }
  return {};
}

// A run of pages at the end of entries: the last entry grown when the run
// follows it in memory and in its page file (up to the field's limit), else
// a new one. (Entries of one lane lie in its file in their order: the last
// entry of a lane ends where the lane's file does.)
void append_run(std::vector<img::PagemapEntry>& entries, uint64_t start, uint64_t pages, bool in_parent = false,
                uint32_t lane = 0) {
  if (!entries.empty()) {
    auto& last = entries.back();
    if (last.vaddr() + uint64_t{last.nr_pages()} * kPageSize == start && last.nr_pages() + pages < (1ull << 31) &&
        last.lane() == lane && last.in_parent() == in_parent) {
      last.set_nr_pages(static_cast<uint32_t>(last.nr_pages() + pages));
      return;
    }
  }
  img::PagemapEntry e;
  e.set_vaddr(start);
  e.set_nr_pages(static_cast<uint32_t>(pages));
  if (in_parent) e.set_in_parent(true);
  if (lane) e.set_lane(lane);
  entries.push_back(e);
}

// Collects runs of pages and writes them in batches: into a local page image
// by copy_pages (several workers, each at its pages' place; the tree frozen,
// or running again with no parasite: a pre-dump), or into a page server's
// connection (before set) by the parasite, vmsplice then splice, in order.
class PageBatcher {
 public:
  PageBatcher(const TraceeMemory& memory, int pagemap_fd, ParasiteSession* session, int out_fd, uint64_t offset,
              unsigned workers, PageDumpResult& result, ProgressMeter& progress, const BeforePages& before,
              const Logger& log)
      : memory_(memory), pagemap_fd_(pagemap_fd), session_(session), out_fd_(out_fd), offset_(offset),
        workers_(workers), result_(result), progress_(progress), before_(before), log_(log) {}

  // The copies queued in pool (frozen, a local image), read from source.
  void use_pool(CopyPool* pool, std::shared_ptr<const CopyPool::Source> source) {
    pool_ = pool;
    pool_source_ = std::move(source);
  }

  // With the pool: the page files of lanes 1.. beside out_fd (lane 0). The
  // readable pages are vmsplice'd by the parasite, a pipe per lane
  // (ParasiteSession::drain_pages_to_lanes); the others, and all of them if
  // the parasite cannot, are copied by the pool.
  void use_lanes(std::span<const int> fds) {
    lane_fds_.assign(1, out_fd_);
    lane_fds_.insert(lane_fds_.end(), fds.begin(), fds.end());
    lane_offsets_.assign(lane_fds_.size(), 0);
    lane_offsets_[0] = offset_;
    splice_lanes_ = session_ && lane_fds_.size() <= ParasiteSession::kMaxLanes;
  }

  // spliceable: the parasite may vmsplice the pages (PROT_READ).
  [[nodiscard]] Status add(RemotePtr<> at, uint64_t pages, bool spliceable = true) {
    // A batch is spliced or copied whole.
    if (splice_lanes_ && !runs_.empty() && batch_spliceable_ != spliceable) TRY(flush());
    batch_spliceable_ = spliceable;
    if (!runs_.empty() && runs_.back().end() == at) {
      runs_.back().size += pages * kPageSize;
    } else {
      // Cut into MiB pieces for lanes, a batch of 64 MiB takes at most 65
      // ranges more than its runs.
      size_t limit = lane_fds_.size() > 1 ? ParasiteSession::kMaxLaneIovs - 128 : ParasiteSession::kMaxIovs;
      if (runs_.size() >= limit) TRY(flush());
      runs_.push_back({at, pages * kPageSize});
    }
    pending_bytes_ += pages * kPageSize;
    // Bounded batches keep the progress line moving (64 MiB: a few tens of
    // milliseconds at the page path's speed).
    if (pending_bytes_ >= (64ull << 20)) TRY(flush());
    return {};
  }

  [[nodiscard]] Status flush() {
    if (runs_.empty()) return {};
    if (before_) {
      std::vector<std::pair<uint64_t, uint64_t>> runs;
      for (auto& r : runs_) runs.emplace_back(r.start.addr(), r.size);
      TRY(before_(runs));
      TRY(session_->drain_pages(runs_, out_fd_));
    } else if (pool_ && lane_fds_.size() > 1) {
      if (splice_lanes_ && batch_spliceable_)
        TRY(splice_to_lanes());
      else
        copy_to_lanes(cut_for_lanes());
      progress_.add(pending_bytes_);
      runs_.clear();
      pending_bytes_ = 0;
      return {};
    } else if (pool_) {
      pool_->submit(pool_source_, out_fd_, offset_, runs_);
      offset_ += pending_bytes_;
    } else {
      TRY(copy_pages(PageCopy{.memory = &memory_,
                              .out_fd = out_fd_,
                              .offset = offset_,
                              .workers = workers_,
                              .vanished = session_ ? Vanished::fail : Vanished::zeros,
                              .pagemap_fd = session_ ? pagemap_fd_ : -1,
                              .log = &log_},
                     runs_));
      offset_ += pending_bytes_;
    }
    for (auto& r : runs_) append_entry(r.start, r.size / kPageSize);
    progress_.add(pending_bytes_);
    runs_.clear();
    pending_bytes_ = 0;
    return {};
  }

  // Pages read by the caller (buf) into the page server's connection, after
  // those batched so far (a local image reads every page by copy_pages).
  [[nodiscard]] Status write_to_connection(RemotePtr<> at, uint64_t pages, const char* buf) {
    TRY(flush());
    uint64_t len = pages * kPageSize;
    std::pair<uint64_t, uint64_t> one{at.addr(), len};
    TRY(before_(std::span(&one, 1)));
    TRY(write_all(out_fd_, buf, len));
    append_entry(at, pages);
    progress_.add(len);
    return {};
  }

  void append_entry(RemotePtr<> at, uint64_t pages, uint32_t lane = 0) {
    append_run(result_.entries, at.addr(), pages, false, lane);
    result_.pages += pages;
  }

  // Pages the parasite vmsplice'd into the lanes' pipes.
  uint64_t spliced_pages() const { return spliced_pages_; }

 private:
  const TraceeMemory& memory_;
  int pagemap_fd_;
  ParasiteSession* session_;
  int out_fd_;
  uint64_t offset_;
  unsigned workers_;
  PageDumpResult& result_;
  ProgressMeter& progress_;
  const BeforePages& before_;
  const Logger& log_;
  std::vector<RemoteRange> runs_;
  uint64_t pending_bytes_ = 0;
  CopyPool* pool_ = nullptr;
  std::shared_ptr<const CopyPool::Source> pool_source_;
  std::vector<int> lane_fds_;
  std::vector<uint64_t> lane_offsets_;
  size_t next_lane_ = 0;

  bool splice_lanes_ = false;
  bool batch_spliceable_ = true;
  uint64_t spliced_pages_ = 0;

  // A MiB piece of a lane's page file and the runs whose pages fill it.
  struct LanePiece {
    uint32_t lane = 0;
    uint64_t offset = 0, bytes = 0;
    std::vector<RemoteRange> runs;
  };

  // The batch cut into MiB pieces that go round the lanes, each at the end
  // of its lane's file (which grows by it).
  std::vector<LanePiece> cut_for_lanes() {
    constexpr uint64_t kLanePiece = 1ull << 20;
    std::vector<LanePiece> pieces;
    LanePiece piece;
    auto close = [&] {
      if (piece.runs.empty()) return;
      piece.lane = static_cast<uint32_t>(next_lane_);
      next_lane_ = (next_lane_ + 1) % lane_fds_.size();
      piece.offset = lane_offsets_[piece.lane];
      lane_offsets_[piece.lane] += piece.bytes;
      pieces.push_back(std::move(piece));
      piece = LanePiece{};
    };
    for (auto& r : runs_)
      for (uint64_t done = 0; done < r.size;) {
        uint64_t len = std::min(kLanePiece - piece.bytes, r.size - done);
        piece.runs.push_back({r.start.byte_offset(static_cast<int64_t>(done)), len});
        piece.bytes += len;
        done += len;
        if (piece.bytes == kLanePiece) close();
      }
    close();
    return pieces;
  }

  void add_lane_entries(const std::vector<LanePiece>& pieces) {
    for (auto& p : pieces)
      for (auto& r : p.runs) append_entry(r.start, r.size / kPageSize, p.lane);
  }

  // The pieces copied by the pool's workers.
  void copy_to_lanes(const std::vector<LanePiece>& pieces) {
    for (auto& p : pieces) pool_->submit(pool_source_, lane_fds_[p.lane], p.offset, p.runs);
    add_lane_entries(pieces);
  }

  // The pieces vmsplice'd by the parasite and spliced into the lanes' files
  // by a worker each; where the parasite cannot, copied by the pool at the
  // same places, and so from then on for this process.
  [[nodiscard]] Status splice_to_lanes() {
    std::vector<LanePiece> pieces = cut_for_lanes();
    std::vector<ParasiteSession::LaneRange> ranges;
    std::vector<ParasiteSession::LaneSink> sinks(lane_fds_.size());
    for (size_t l = 0; l < sinks.size(); l++) sinks[l].fd = lane_fds_[l];
    for (auto& p : pieces) {
      auto& sink = sinks[p.lane];
      if (!sink.bytes) sink.offset = p.offset;
      sink.bytes += p.bytes;
      for (auto& r : p.runs) ranges.push_back({r, p.lane});
    }
    ASSIGN_OR_RETURN(int err, session_->drain_pages_to_lanes(ranges, sinks));
    if (err == 0) {
      add_lane_entries(pieces);
      for (auto& p : pieces) spliced_pages_ += p.bytes / kPageSize;
      return {};
    }
    log_.debug("pid {}: the parasite cannot vmsplice these pages ({}); the dumper's workers copy them", memory_.pid(),
               std::strerror(err));
    splice_lanes_ = false;
    copy_to_lanes(pieces);
    return {};
  }
};

// Pages the parasite cannot vmsplice (no PROT_READ: get_user_pages refuses
// them) are read through /proc/PID/mem, which may (as copy_pages does for
// every page of a local image), then written into the page server's
// connection.
Status copy_unreadable(const TraceeMemory& memory, RemotePtr<> at, uint64_t pages, PageBatcher& batcher) {
  std::vector<char> buf(pages * kPageSize);
  TRY(memory.read_bytes(at, buf.data(), buf.size()));
  return batcher.write_to_connection(at, pages, buf.data());
}

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
  auto content = [file](uint64_t e) { return (e & (pagemap_bits::present | pagemap_bits::swapped)) && !(file && (e & pagemap_bits::file)); };
  for (uint64_t i = 0; i < pages; i++) {
    bool parent_has = content(p[i]);
    bool child_has = content(c[i]);
    if (parent_has && !child_has) return std::vector<bool>();  // the child's reads zeros (or the file) there
    uint64_t pfn = c[i] & pagemap_bits::pfn_mask;
    // Without CAP_SYS_ADMIN the kernel shows PFN 0: nothing is known shared.
    if (child_has && parent_has && (c[i] & pagemap_bits::present) && (p[i] & pagemap_bits::present) && pfn &&
        pfn == (p[i] & pagemap_bits::pfn_mask)) {
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

namespace {

// The VMA of the parent images that is this one: same range, same mapping.
// Only there may unwritten pages stay in the parent.
bool same_vma_in_parent(const img::Vma& v, const img::MmCore& mm) {
  for (auto& p : mm.vmas())
    if (p.start() == v.start() && p.end() == v.end() && p.kind() == v.kind() && p.pgoff() == v.pgoff() &&
        p.path() == v.path() && p.tracked())
      return true;
  return false;
}

// The parts of [start, end) that the sorted runs cover.
template <typename F>
void each_covered(const std::vector<std::pair<uint64_t, uint64_t>>& runs, uint64_t start, uint64_t end, F&& covered,
                  auto&& uncovered) {
  auto it = std::upper_bound(runs.begin(), runs.end(), start, [](uint64_t a, auto& r) { return a < r.second; });
  uint64_t at = start;
  for (; at < end && it != runs.end() && it->first < end; ++it) {
    uint64_t s = std::max(at, it->first), e = std::min(end, it->second);
    if (s > at) uncovered(at, s);
    if (e > s) covered(s, e);
    at = std::max(at, e);
  }
  if (at < end) uncovered(at, end);
}

}  // namespace

Result<PageDumpResult> dump_pages(pid_t pid, std::vector<VmaInfo>& vmas, ParasiteSession* session,
                                  const TraceeMemory& memory, int pages_fd, const Logger& log,
                                  const ParentMemory& parent, const PageChain& chain, const BeforePages& before,
                                  CopyPool* pool, std::span<const int> lanes) {
  PageDumpResult result;
  ASSIGN_OR_RETURN(PageMap pagemap, PageMap::open(pid));
  result.scan_ioctl = pagemap.has_scan();
  // The raw pagemap: the pfn comparison with the parent process, and a
  // frozen copy's choice of read (mem/page_copy.hpp).
  UniqueFd raw_pagemap;
  if (parent.mm || session) {
    raw_pagemap.reset(::open(fmt::format("/proc/{}/pagemap", pid).c_str(), O_RDONLY | O_CLOEXEC));
    if (!raw_pagemap) return failf_errno("pid {}: cannot open pagemap", pid);
  }

  uint64_t total = 0;
  for (auto& v : vmas)
    if (vma_dumps_pages(v.vma)) total += (v.maps.rss_kb + v.maps.swap_kb) << 10;
  ProgressMeter progress(log, "dump", pid, total);
  // A local page image is written at explicit offsets (by several workers),
  // from where it stands now.
  uint64_t offset = 0;
  if (!before) {
    off_t at = ::lseek(pages_fd, 0, SEEK_CUR);
    if (at < 0) return failf_errno("pid {}: the page image cannot be written at offsets", pid);
    offset = static_cast<uint64_t>(at);
  }
  PageBatcher batcher(memory, raw_pagemap.get(), session, pages_fd, offset, copy_workers(total), result, progress,
                      before, log);
  if (pool && session && !before) {
    ASSIGN_OR_RETURN(auto source, CopyPool::source(pid));
    batcher.use_pool(pool, std::move(source));
    if (!lanes.empty()) batcher.use_lanes(lanes);
  }
  std::vector<img::PagemapEntry> in_parent;
  auto add_in_parent = [&](uint64_t start, uint64_t end) {
    uint64_t pages = (end - start) / kPageSize;
    append_run(in_parent, start, pages, true);
    result.pages_in_parent += pages;
  };

  std::vector<img::PagemapEntry> deferred_entries;
  auto add_deferred = [&](uint64_t start, uint64_t pages) {
    append_run(deferred_entries, start, pages);
    result.deferred_pages += pages;
  };

  std::vector<PageRegion> regions;
  for (auto& info : vmas) {
    img::Vma& vma = info.vma;
    if (!vma_dumps_pages(vma)) continue;
    const RemoteRange range = range_of(vma);
    bool registered = std::find(chain.registered.begin(), chain.registered.end(), vma.start()) != chain.registered.end();
    bool trusted = chain.parent_mm && same_vma_in_parent(vma, *chain.parent_mm);
    bool arm = chain.arm && (registered || trusted);
    // Nothing there (and nothing to arm: a VMA without pages has nothing
    // written to find later either, its new pages count as written).
    if (info.maps.rss_kb == 0 && info.maps.swap_kb == 0 && !arm) continue;
    bool file_private = vma.kind() == img::VMA_FILE_PRIVATE;
    bool readable = info.maps.read;
    bool deferred = std::find(chain.deferred.begin(), chain.deferred.end(), vma.start()) != chain.deferred.end();
    uint64_t vma_pages = 0, vma_parent = 0;
    ASSIGN_OR_RETURN(std::vector<bool> inherit, shared_with_parent(info, raw_pagemap.get(), parent, pid));
    if (!inherit.empty()) vma.set_inherited(true);
    const auto pages = range.start.cast<Page>();
    auto dump_run = [&](uint64_t start, uint64_t end) -> Status {
      RemotePtr<> run(start);
      uint64_t n = (end - start) / kPageSize;
      if (deferred) {
        add_deferred(start, n);
      } else if (readable || !before) {
        TRY(batcher.add(run, n, readable));
      } else {
        TRY(copy_unreadable(memory, run, n, batcher));
      }
      vma_pages += n;
      return {};
    };
    // The region's pages, less those still the parent process's (fork).
    auto dump_or_parent = [&](uint64_t start, uint64_t end, bool unchanged) -> Status {
      if (!unchanged) return dump_run(start, end);
      Status st;
      each_covered(
          chain.parent_pages, start, end,
          [&](uint64_t s, uint64_t e) {
            add_in_parent(s, e);
            vma_parent += (e - s) / kPageSize;
          },
          [&](uint64_t s, uint64_t e) {
            if (st) st = dump_run(s, e);
          });
      return st;
    };
    // With the tree running (a pre-dump), a large VMA is scanned (armed) a
    // piece at a time, each piece read before the next is armed: what the
    // next round finds written is what was written since its read, not
    // since the VMA's first page was read.
    // Frozen, a large VMA's page tables are walked by workers, a chunk
    // ahead of the copy (ScanAhead).
    std::optional<ScanAhead> ahead;
    if (session && !arm && !deferred && range.size >= 2 * kScanChunk)
      ahead.emplace(pagemap, range.start.addr(), range.end().addr(), kScanChunk, std::min(cpus_allowed(), 4u));
    const uint64_t piece = ahead ? kScanChunk : session ? range.size : (64ull << 20);
    for (uint64_t at = range.start.addr(); at < range.end().addr(); at += piece) {
      uint64_t to = std::min(range.end().addr(), at + piece);
      regions.clear();
      if (ahead) {
        uint64_t from = 0, until = 0;
        ASSIGN_OR_RETURN(bool more, ahead->next(from, until, regions));
        if (!more || from != at || until != to)
          return failf("pid {}: the scan of {:#x}-{:#x} came out of order", pid, at, to);
      } else if (deferred && chain.deferred_runs) {
        auto& runs = *chain.deferred_runs;
        auto it = std::upper_bound(runs.begin(), runs.end(), at, [](uint64_t a, auto& r) { return a < r.second; });
        for (; it != runs.end() && it->first < to; ++it)
          regions.push_back({std::max(it->first, at), std::min(it->second, to), page_category::present});
      } else if (auto st = pagemap.scan(at, to, arm, regions); !st) {
        if (!arm) return std::unexpected(st.error());
        // Not registered after all (the tracking went away): dumped whole,
        // and not tracked from here on.
        log.info("pid {}: vma {}-{}: no write tracking ({}); dumped whole", pid, range.start, range.end(),
                 st.error().what());
        arm = trusted = false;
        regions.clear();
        TRY(pagemap.scan(at, to, false, regions));
      }
      for (auto& r : regions) {
        if (file_private && (r.categories & page_category::file)) continue;  // the file's own page
        bool unchanged = trusted && (r.categories & page_category::wp_allowed) &&
                         (r.categories & page_category::present) && !(r.categories & page_category::written) &&
                         !(r.categories & page_category::pfn_zero);
        if (trusted && (r.categories & page_category::written)) result.pages_changed += (r.end - r.start) / kPageSize;
        if (inherit.empty()) {
          TRY(dump_or_parent(r.start, r.end, unchanged));
          continue;
        }
        uint64_t first = (r.start - range.start.addr()) / kPageSize, last = (r.end - range.start.addr()) / kPageSize;
        for (uint64_t i = first; i < last;) {
          if (inherit[i]) {  // in the parent process's image
            i++;
            continue;
          }
          uint64_t j = i + 1;
          while (j < last && !inherit[j]) j++;
          TRY(dump_or_parent((pages + static_cast<int64_t>(i)).addr(), (pages + static_cast<int64_t>(j)).addr(),
                             unchanged));
          i = j;
        }
      }
      if (!session) TRY(batcher.flush());
    }
    if (arm) vma.set_tracked(true);
    if (vma_pages || vma_parent) vma.set_has_pages(true);
    if (!inherit.empty())
      log.debug("pid {}: vma {}-{}: {} page(s) still the parent's", pid, range.start, range.end(),
                std::count(inherit.begin(), inherit.end(), true));
    log.debug("pid {}: vma {}-{} {}: {} page(s){}{}{}{}", pid, range.start, range.end(), vma.path(), vma_pages,
              vma_parent ? fmt::format(", {} unchanged in the parent images", vma_parent) : "",
              arm ? ", write-tracked" : "", deferred ? ", copied in the background" : "",
              ahead ? fmt::format(", walked in {} MiB chunks by {} worker(s)", kScanChunk >> 20, ahead->workers())
                    : "");
  }
  TRY(batcher.flush());
  progress.finish();
  result.spliced_pages = batcher.spliced_pages();
  result.deferred_offset = result.pages * kPageSize;  // written so far: the frozen part
  result.deferred_first_entry = result.entries.size();
  for (auto& e : deferred_entries) result.entries.push_back(std::move(e));
  result.pages += result.deferred_pages;
  // Entries that take no bytes of this page image go last.
  for (auto& e : in_parent) result.entries.push_back(std::move(e));
  return result;
}

}  // namespace minicriu
