// A background dump (dump --leave-running --background): the pages of a
// process's private anonymous memory are copied after the tree runs again,
// and still hold what they held at the freeze. While frozen, the dump
// registers that memory with a userfaultfd of the process in synchronous
// write-protect mode and write-protects every page it lists; a handler
// thread of ours reads the faults: a write to a page not yet copied stops
// the writer until the page is copied, then the protection is lifted (and
// the writer woken). Workers copy the rest (process_vm_readv into a bounded
// buffer, pwrite at the page's place in the page image), each chunk
// checked with PAGEMAP_SCAN to be still write-protected after it was read:
// a page that the application discarded, unmapped or moved after the
// freeze, before it was copied, fails the dump instead of being saved
// wrong. Closing the userfaultfd lifts every protection left.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/remote_ptr.hpp"
#include "base/unique_fd.hpp"
#include "mem/page_scan.hpp"

namespace minicriu {

// Pages of the freeze to copy later: at vaddr, nr pages, their place in the
// page image.
struct DeferredRun {
  uint64_t start = 0;
  uint64_t pages = 0;
  uint64_t offset = 0;
};

struct BackgroundStats {
  uint64_t pages = 0;          // copied after the tree ran again (workers and handler)
  uint64_t faults = 0;         // write faults the handler answered
  uint64_t faults_copied = 0;  // of them, on a page not yet copied: copied first
};

class BackgroundCopy {
 public:
  // Write-protects ranges (registered with uffd in synchronous write-protect
  // mode) and starts the fault handler; runs (sorted, inside ranges) are the
  // pages to copy into pages_fd (not owned; must outlive this).
  [[nodiscard]] static Result<std::unique_ptr<BackgroundCopy>> arm(pid_t pid, UniqueFd uffd, int pages_fd,
                                                                   std::vector<DeferredRun> runs,
                                                                   std::span<const RemoteRange> ranges,
                                                                   const Logger& log);
  BackgroundCopy(const BackgroundCopy&) = delete;
  BackgroundCopy& operator=(const BackgroundCopy&) = delete;
  // Stops the handler and closes the userfaultfd: every page is writable.
  ~BackgroundCopy();

  pid_t pid() const { return pid_; }
  uint64_t pages() const { return total_pages_; }
  // Stops the handler and closes the userfaultfd; the first error the
  // handler met, if any.
  [[nodiscard]] Status finish();
  BackgroundStats stats() const;

  // Copies every page of every process, workers threads at once (chunks of
  // every process shared out), then finishes each.
  [[nodiscard]] static Status copy_all(std::span<BackgroundCopy* const> copies, unsigned workers,
                                       const Logger& log);

 private:
  BackgroundCopy(pid_t pid, UniqueFd uffd, int pages_fd, std::vector<DeferredRun> runs, PageMap pagemap,
                 const Logger& log);
  struct Chunk {
    size_t run;
    uint64_t first, pages;  // pages of the run
  };
  void chunks(std::vector<std::pair<BackgroundCopy*, Chunk>>& out) const;
  [[nodiscard]] Status copy_chunk(const Chunk& c, std::vector<char>& buf);
  [[nodiscard]] Status unprotect(uint64_t start, uint64_t len);
  [[nodiscard]] Status read_remote(uint64_t addr, char* buf, size_t len) const;
  [[nodiscard]] Status write_image(uint64_t offset, const char* buf, size_t len) const;
  // The run and page index of a page address, or false.
  bool locate(uint64_t addr, size_t& run, uint64_t& index) const;
  void handle_faults();
  [[nodiscard]] Status handle_fault(uint64_t addr);
  void stop_handler();

  pid_t pid_;
  UniqueFd uffd_;
  int pages_fd_;
  std::vector<DeferredRun> runs_;
  std::vector<uint64_t> first_index_;  // per run: index of its first page in copied_
  uint64_t total_pages_ = 0;
  PageMap pagemap_;
  Logger log_;
  std::mutex mu_;
  std::vector<bool> copied_;  // per page of runs_, under mu_
  UniqueFd stop_;             // eventfd: the handler ends
  std::thread handler_;
  std::mutex error_mu_;
  Status error_;              // the handler's first failure
  std::atomic<uint64_t> pages_copied_{0}, faults_{0}, faults_copied_{0};
};

}  // namespace minicriu
