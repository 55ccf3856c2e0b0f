#include "mem/page_copy.hpp"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "base/cpus.hpp"
#include "base/page.hpp"
#include "mem/page_scan.hpp"

namespace minicriu {

// A part of a run, and a piece (outside the anonymous namespace: a
// CopyPool::Batch holds them): consecutive segments (bytes that follow each
// other in the image), 1 MiB at most, one pwrite.
struct CopySegment {
  uint64_t addr = 0, len = 0;
};
struct CopyPiece {
  size_t first = 0, count = 0;  // in the segments
  uint64_t len = 0, offset = 0;
};

namespace {

constexpr uint64_t kCopyPiece = 1ull << 20;
constexpr uint64_t kBytesPerCopier = 8ull << 20;
constexpr unsigned kMostCopiers = 4;

constexpr size_t kMostSegments = 1024;  // IOV_MAX: one process_vm_readv
constexpr uint64_t kOnePagemapRead = 1024;  // pages: a piece's whole span in one pagemap read

// What a piece reads, in order: runs of pages read pinned or not.
struct CopyPart {
  uint64_t addr = 0, len = 0;
  bool pinned = false;
};

// One worker's buffers.
struct CopyBuffers {
  std::vector<char> bytes = std::vector<char>(kCopyPiece);
  std::vector<uint64_t> pagemap = std::vector<uint64_t>(kOnePagemapRead);
  std::vector<CopyPart> parts;
  std::vector<iovec> remote;
};

bool read_pagemap_words(int fd, uint64_t addr, uint64_t pages, std::vector<uint64_t>& out) {
  if (out.size() < pages) out.resize(pages);
  auto want = static_cast<ssize_t>(pages * 8);
  return ::pread(fd, out.data(), pages * 8, static_cast<off_t>(addr / kPageSize * 8)) == want;
}

void add_part(std::vector<CopyPart>& parts, uint64_t addr, uint64_t len, bool pinned) {
  if (!parts.empty() && parts.back().pinned == pinned && parts.back().addr + parts.back().len == addr)
    parts.back().len += len;
  else
    parts.push_back({addr, len, pinned});
}

// The parts of segs: with copy.pagemap_fd, the pages only this process maps
// (pagemap's exclusive bit) are read pinned, the others not; without, none.
void plan_parts(const PageCopy& copy, std::span<const CopySegment> segs, CopyBuffers& b) {
  b.parts.clear();
  uint64_t span_start = segs.front().addr, span_end = segs.back().addr + segs.back().len;
  bool by_pagemap = copy.pagemap_fd >= 0;
  bool one_read = by_pagemap && (span_end - span_start) / kPageSize <= kOnePagemapRead;
  if (one_read && !read_pagemap_words(copy.pagemap_fd, span_start, (span_end - span_start) / kPageSize, b.pagemap))
    by_pagemap = false;
  for (auto& seg : segs) {
    const uint64_t* e = nullptr;
    if (by_pagemap && one_read) {
      e = b.pagemap.data() + (seg.addr - span_start) / kPageSize;
    } else if (by_pagemap && read_pagemap_words(copy.pagemap_fd, seg.addr, seg.len / kPageSize, b.pagemap)) {
      e = b.pagemap.data();
    }
    if (!e) {
      add_part(b.parts, seg.addr, seg.len, false);
      continue;
    }
    for (uint64_t i = 0; i < seg.len / kPageSize; i++)
      add_part(b.parts, seg.addr + i * kPageSize, kPageSize, (e[i] & pagemap_bits::exclusive) != 0);
  }
}

// The bytes of segs into buf, in order: the pinned parts by process_vm_readv
// (up to kMostSegments parts a call), the others, and a pinned part it
// refuses (no PROT_READ), through /proc/PID/mem. Returns how many bytes were
// read before the first that cannot be (errno says why).
size_t read_segments(const PageCopy& copy, std::span<const CopySegment> segs, char* buf, CopyBuffers& b) {
  plan_parts(copy, segs, b);
  size_t pos = 0;
  auto& parts = b.parts;
  for (size_t k = 0; k < parts.size();) {
    if (parts[k].pinned) {
      b.remote.clear();
      uint64_t total = 0;
      for (size_t m = k; m < parts.size() && parts[m].pinned && b.remote.size() < kMostSegments; m++) {
        b.remote.push_back({reinterpret_cast<void*>(parts[m].addr), parts[m].len});
        total += parts[m].len;
      }
      iovec local{buf + pos, total};
      ssize_t n;
      do n = ::process_vm_readv(copy.memory->pid(), &local, 1, b.remote.data(), b.remote.size(), 0);
      while (n < 0 && errno == EINTR);
      uint64_t got = n > 0 ? static_cast<uint64_t>(n) : 0;
      if (got == total) {
        pos += total;
        k += b.remote.size();
        continue;
      }
      // Short: the parts read whole, then the rest of the part it stopped in
      // through /proc/PID/mem; the next parts as a new call.
      while (got >= parts[k].len) {
        got -= parts[k].len;
        pos += parts[k].len;
        k++;
      }
      size_t r = copy.memory->read_some(RemotePtr<>(parts[k].addr + got), buf + pos + got, parts[k].len - got);
      if (got + r < parts[k].len) return pos + got + r;
      pos += parts[k].len;
      k++;
      continue;
    }
    size_t r = copy.memory->read_some(RemotePtr<>(parts[k].addr), buf + pos, parts[k].len);
    if (r < parts[k].len) return pos + r;
    pos += parts[k].len;
    k++;
  }
  return pos;
}

// The segments of a piece from byte at of it on.
std::vector<CopySegment> segments_from(std::span<const CopySegment> segs, uint64_t at) {
  std::vector<CopySegment> out;
  for (auto& s : segs) {
    if (at >= s.len) {
      at -= s.len;
      continue;
    }
    out.push_back({s.addr + at, s.len - at});
    at = 0;
  }
  return out;
}

Status copy_piece(const PageCopy& copy, std::span<const CopySegment> segs, const CopyPiece& p, CopyBuffers& b) {
  pid_t pid = copy.memory->pid();
  char* buf = b.bytes.data();
  uint64_t at = read_segments(copy, segs, buf, b);
  while (at < p.len) {
    int err = errno;
    uint64_t addr = segments_from(segs, at).front().addr;
    if (copy.vanished == Vanished::fail)
      return failf("pid {}: cannot read its memory at {:#x} although the scan found it present: {}", pid, addr,
                   std::strerror(err));
    // That page is zeros; the read goes on at the next (every segment is
    // whole pages: a page of the buffer is a page of the process).
    uint64_t next = std::min(p.len, page_down(at) + kPageSize);
    if (copy.log)
      copy.log->debug("pid {}: {:#x}: unreadable since the scan ({}): zeros in this pre-dump", pid, addr,
                      std::strerror(err));
    std::memset(buf + at, 0, next - at);
    at = next;
    if (at < p.len) {
      auto rest = segments_from(segs, at);
      at += read_segments(copy, rest, buf + at, b);
    }
  }
  return with_context(pwrite_all(copy.out_fd, buf, p.len, p.offset), fmt::format("pid {}", pid));
}

// The runs cut into pieces: segments of them, a MiB of the image a piece.
void split_into_pieces(std::span<const RemoteRange> runs, uint64_t offset, std::vector<CopySegment>& segs,
                       std::vector<CopyPiece>& pieces) {
  for (auto& r : runs)
    for (uint64_t done = 0; done < r.size;) {
      if (pieces.empty() || pieces.back().len == kCopyPiece || pieces.back().count == kMostSegments)
        pieces.push_back({segs.size(), 0, 0, offset});
      auto& p = pieces.back();
      uint64_t len = std::min(kCopyPiece - p.len, r.size - done);
      segs.push_back({r.start.addr() + done, len});
      p.count++;
      p.len += len;
      done += len;
      offset += len;
    }
}

}  // namespace

Status pwrite_all(int fd, const char* buf, size_t len, uint64_t offset) {
  for (size_t done = 0; done < len;) {
    ssize_t n = ::pwrite(fd, buf + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("writing pages to the page image");
    done += static_cast<size_t>(n);
  }
  return {};
}

unsigned copy_workers(uint64_t bytes) {
  return std::max(1u, std::min({cpus_allowed(), kMostCopiers, static_cast<unsigned>(bytes / kBytesPerCopier)}));
}

Status copy_pages(const PageCopy& copy, std::span<const RemoteRange> runs) {
  CopyPool pool(copy.workers, copy.log);
  pool.queue(nullptr, copy, runs);
  return pool.wait();
}

// One batch of a pool: its pieces, and what they are read from.
struct CopyPool::Batch {
  std::shared_ptr<const void> keep;  // what copy points into
  PageCopy copy;
  std::vector<CopySegment> segs;
  std::vector<CopyPiece> pieces;
};

Result<std::shared_ptr<const CopyPool::Source>> CopyPool::source(pid_t pid) {
  ASSIGN_OR_RETURN(auto memory, TraceeMemory::open(pid));
  UniqueFd pagemap(::open(fmt::format("/proc/{}/pagemap", pid).c_str(), O_RDONLY | O_CLOEXEC));
  if (!pagemap) return failf_errno("pid {}: cannot open pagemap", pid);
  return std::make_shared<const Source>(Source{std::move(memory), std::move(pagemap)});
}

CopyPool::CopyPool(unsigned workers, const Logger* log) : log_(log) {
  start_workers(threads_, std::max(1u, workers), [this] { work(); });
}

CopyPool::~CopyPool() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    queue_.clear();
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void CopyPool::submit(std::shared_ptr<const Source> source, int out_fd, uint64_t offset,
                      std::span<const RemoteRange> runs) {
  PageCopy copy{.memory = &source->memory,
                .out_fd = out_fd,
                .offset = offset,
                .vanished = Vanished::fail,
                .pagemap_fd = source->pagemap.get(),
                .log = log_};
  queue(std::move(source), copy, runs);
}

void CopyPool::queue(std::shared_ptr<const void> keep, const PageCopy& copy, std::span<const RemoteRange> runs) {
  auto b = std::make_shared<Batch>();
  b->keep = std::move(keep);
  b->copy = copy;
  split_into_pieces(runs, copy.offset, b->segs, b->pieces);
  // Bounded: 256 pieces (256 MiB of pages) queued at most.
  constexpr size_t kMostQueued = 256;
  std::unique_lock lock(mu_);
  for (size_t i = 0; i < b->pieces.size(); i++) {
    done_cv_.wait(lock, [&] { return queue_.size() < kMostQueued || stop_ || !error_ || threads_.empty(); });
    if (!error_ || stop_) return;  // failed already: wait() says so
    if (threads_.empty()) {
      // No worker could be made: copied here.
      lock.unlock();
      CopyBuffers buf;
      auto& p = b->pieces[i];
      Status st = copy_piece(b->copy, std::span(b->segs).subspan(p.first, p.count), p, buf);
      lock.lock();
      if (!st && error_) error_ = std::move(st);
      continue;
    }
    queue_.emplace_back(b, i);
    work_cv_.notify_one();
  }
}

void CopyPool::work() {
  CopyBuffers buf;
  std::unique_lock lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    auto [b, i] = std::move(queue_.front());
    queue_.pop_front();
    busy_++;
    lock.unlock();
    auto& p = b->pieces[i];
    Status st = copy_piece(b->copy, std::span(b->segs).subspan(p.first, p.count), p, buf);
    b.reset();
    lock.lock();
    busy_--;
    if (!st && error_) {
      error_ = std::move(st);
      queue_.clear();
    }
    done_cv_.notify_all();
  }
}

Status CopyPool::wait() {
  std::unique_lock lock(mu_);
  done_cv_.wait(lock, [&] { return (queue_.empty() && busy_ == 0) || stop_; });
  return error_;
}

}  // namespace minicriu
