#include "mem/page_copy.hpp"

#include <pthread.h>
#include <sys/uio.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "base/cpus.hpp"
#include "base/page.hpp"
#include "mem/page_scan.hpp"

namespace minicriu {

namespace {

constexpr uint64_t kCopyPiece = 1ull << 20;
constexpr uint64_t kBytesPerCopier = 8ull << 20;
constexpr unsigned kMostCopiers = 4;

// A piece of a run: its address, its bytes and its place in the image.
struct CopyPiece {
  uint64_t addr = 0, len = 0, offset = 0;
};

// Up to len bytes at addr by process_vm_readv: one copy, the pages pinned.
size_t read_pinned(pid_t pid, uint64_t addr, char* buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    iovec local{buf + got, len - got};
    iovec remote{reinterpret_cast<void*>(addr + got), len - got};
    ssize_t n = ::process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EFAULT;
      break;
    }
    got += static_cast<size_t>(n);
  }
  return got;
}

// Up to len bytes at addr: what only this process maps (pagemap's exclusive
// bit; copy.pagemap_fd set) read pinned, the rest through /proc/PID/mem.
// Fewer bytes: the rest from there on cannot be read (errno says why).
size_t read_piece(const PageCopy& copy, uint64_t addr, char* buf, size_t len) {
  constexpr size_t kMost = kCopyPiece / kPageSize;
  uint64_t e[kMost];
  size_t pages = len / kPageSize;
  if (copy.pagemap_fd < 0 || !page_aligned(addr) || !page_aligned(len) || pages > kMost ||
      ::pread(copy.pagemap_fd, e, pages * 8, static_cast<off_t>(addr / kPageSize * 8)) !=
          static_cast<ssize_t>(pages * 8))
    return copy.memory->read_some(RemotePtr<>(addr), buf, len);
  size_t done = 0;
  for (size_t i = 0; i < pages;) {
    bool only_here = e[i] & pagemap_bits::exclusive;
    size_t j = i + 1;
    while (j < pages && static_cast<bool>(e[j] & pagemap_bits::exclusive) == only_here) j++;
    size_t want = (j - i) * kPageSize;
    size_t got = only_here ? read_pinned(copy.memory->pid(), addr + done, buf + done, want) : 0;
    // Not pinned, or not readable so (no PROT_READ: /proc/PID/mem may).
    if (got < want) got += copy.memory->read_some(RemotePtr<>(addr + done + got), buf + done + got, want - got);
    done += got;
    if (got < want) return done;
    i = j;
  }
  return done;
}

Status copy_piece(const PageCopy& copy, const CopyPiece& p, std::vector<char>& buf) {
  pid_t pid = copy.memory->pid();
  for (uint64_t at = 0; at < p.len;) {
    at += read_piece(copy, p.addr + at, buf.data() + at, p.len - at);
    if (at == p.len) break;
    int err = errno;
    if (copy.vanished == Vanished::fail)
      return failf("pid {}: cannot read its memory at {:#x} ({} bytes) although the scan found it present: {}",
                   pid, p.addr + at, p.len - at, std::strerror(err));
    // That page is zeros; the read goes on at the next.
    uint64_t next = std::min(p.len, page_down(at) + kPageSize);
    if (copy.log)
      copy.log->debug("pid {}: {:#x}: unreadable since the scan ({}): zeros in this pre-dump", pid, p.addr + at,
                      std::strerror(err));
    std::memset(buf.data() + at, 0, next - at);
    at = next;
  }
  return pwrite_all(copy.out_fd, buf.data(), p.len, p.offset);
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
  std::vector<CopyPiece> pieces;
  uint64_t offset = copy.offset;
  for (auto& r : runs)
    for (uint64_t done = 0; done < r.size;) {
      uint64_t len = std::min(kCopyPiece, r.size - done);
      pieces.push_back({r.start.addr() + done, len, offset});
      done += len;
      offset += len;
    }
  if (pieces.empty()) return {};
  unsigned workers = std::max(1u, std::min<unsigned>(copy.workers, static_cast<unsigned>(pieces.size())));
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  Status first_error;
  auto run = [&] {
    std::vector<char> buf(kCopyPiece);
    for (size_t i; !stop && (i = next++) < pieces.size();) {
      if (auto st = copy_piece(copy, pieces[i], buf); !st) {
        std::lock_guard lock(mu);
        if (first_error) first_error = std::move(st);
        stop = true;
      }
    }
  };
  // Signals stay blocked in the workers: one meant for the caller's program
  // (the library runs in it) goes to its own threads. A worker that cannot
  // be made leaves its share to the others.
  std::vector<std::thread> threads;
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  for (unsigned w = 1; w < workers; w++) {
    try {
      threads.emplace_back(run);
    } catch (const std::system_error&) {
      break;
    }
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  run();
  for (auto& t : threads) t.join();
  return first_error;
}

}  // namespace minicriu
