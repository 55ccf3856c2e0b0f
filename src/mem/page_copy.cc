#include "mem/page_copy.hpp"

#include <pthread.h>
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

namespace minicriu {

namespace {

constexpr uint64_t kCopyPiece = 1ull << 20;
constexpr uint64_t kBytesPerCopier = 8ull << 20;
constexpr unsigned kMostCopiers = 4;

// A piece of a run: its address, its bytes and its place in the image.
struct CopyPiece {
  uint64_t addr = 0, len = 0, offset = 0;
};

Status copy_piece(const PageCopy& copy, const CopyPiece& p, std::vector<char>& buf) {
  pid_t pid = copy.memory->pid();
  for (uint64_t at = 0; at < p.len;) {
    at += copy.memory->read_some(RemotePtr<>(p.addr + at), buf.data() + at, p.len - at);
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
