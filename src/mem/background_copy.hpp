// A background dump (dump --leave-running --background): the pages of a
// process's private anonymous memory are copied after the tree runs again,
// and still hold what they held at the freeze. While frozen, the dump
// registers that memory with a userfaultfd of the process in synchronous
// write-protect mode and write-protects every page it lists; a handler
// thread of ours reads the faults: a write to a page not yet copied stops
// the writer until the page is copied, then the protection is lifted (and
// the writer woken). Workers copy the rest (a read of /proc/PID/mem into a bounded
// buffer, pwrite at the page's place in the page image), each chunk
// checked with PAGEMAP_SCAN to be still write-protected after it was read:
// a page that the application discarded, unmapped or moved after the
// freeze, before it was copied, fails the dump instead of being saved
// wrong. Closing the userfaultfd lifts every protection left.
// Armed before the freeze instead (pre_arm, freeze_point, start_copy), the
// protection and the page list are made with the tree running, and the
// freeze only takes again what changed meanwhile.
#pragma once

#include <linux/userfaultfd.h>
#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <cstdint>
#include <map>
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
#include "ptrace/tracee_memory.hpp"

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

// [start, end) address runs, sorted, not overlapping.
using AddressRuns = std::vector<std::pair<uint64_t, uint64_t>>;

class BackgroundCopy {
 public:
  // A background dump armed before the freeze (the frozen time then does
  // not grow with memory): uffd (made by the parasite in a short stop
  // before, synchronous write-protect with remove events, ranges registered
  // for missing pages and write-protect) write-protects ranges and lists
  // their pages with the tree running. Until freeze_point, the handler lets
  // every write through and notes the page (a write to a protected page:
  // noted, protection lifted; a first touch of a missing page: noted, a
  // zero page given; MADV_DONTNEED/REMOVE: the range noted). Every change
  // to the pages present reaches us that way (reads and writes by others
  // through get_user_pages too).
  [[nodiscard]] static Result<std::unique_ptr<BackgroundCopy>> pre_arm(pid_t pid, UniqueFd uffd,
                                                                       std::span<const RemoteRange> ranges,
                                                                       const Logger& log);
  // With the tree frozen, before the dump's parasite: the pages noted since
  // pre_arm are write-protected again and looked at once more; the pages
  // present now, every one of them write-protected, in order. A page written
  // from now on (by the dump's own work) is copied before it is let through.
  [[nodiscard]] Result<AddressRuns> freeze_point();
  // Before the freeze, the tree running: the pages noted so far are
  // write-protected again and looked at once more (a page written after
  // that is noted again), so that the freeze has only those noted since.
  // How many pages there were.
  [[nodiscard]] Result<uint64_t> settle();
  // Then, still frozen: runs (sorted, inside the ranges) are the pages to
  // copy into pages_fd; the handler answers as a frozen-time arm()'s does.
  [[nodiscard]] Status start_copy(int pages_fd, std::vector<DeferredRun> runs);
  const std::vector<RemoteRange>& ranges() const { return ranges_; }

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
  BackgroundCopy(pid_t pid, UniqueFd uffd, PageMap pagemap, TraceeMemory memory, const Logger& log);
  void set_runs(int pages_fd, std::vector<DeferredRun> runs);  // under mu_ once the handler runs
  [[nodiscard]] Status start_handler();
  [[nodiscard]] Status write_protect(std::span<const RemoteRange> ranges);
  // The pages noted (touched) protected again, and present_ made what is
  // present now; when: for the log. How many pages.
  [[nodiscard]] Result<uint64_t> take_again(AddressRuns touched, const char* when);
  [[nodiscard]] Status zero_page(uint64_t addr);
  [[nodiscard]] Status dispatch(const uffd_msg& m);
  // The copier thread: each write fault's page copied (or kept, frozen)
  // before its protection is lifted. Never the handler's work: a read of a
  // page discarded meanwhile waits for the handler's answer (a zero page).
  void copy_writes();
  // One message answered by dispatch (let_through once failed); a failure
  // noted (the dump's first error), the writer let go, failed set.
  void answer(const uffd_msg& m, bool& failed);
  void note_error(Status st);  // kept if it is the first
  bool failed() const;
  [[nodiscard]] Status discarded(uint64_t page) const;  // the refusal of a page lost before its copy
  [[nodiscard]] Status copy_write(uint64_t addr);
  // The writer goes on with the protection lifted (no copy), the first
  // toucher of a missing page gets a zero page: while arming, and after a
  // failure (the writer must not wait for a dump that failed).
  [[nodiscard]] Status let_through(const uffd_msg& m);
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
  TraceeMemory memory_;  // read through /proc/PID/mem: no pin, no unshare (mem/page_copy.hpp)
  Logger log_;
  std::mutex read_mu_;  // a read of the userfaultfd and the answers to what it brought
  std::mutex mu_;
  std::vector<bool> copied_;  // per page of runs_, under mu_
  UniqueFd stop_;             // eventfd: the handler ends
  std::thread handler_;
  mutable std::mutex error_mu_;
  Status error_;              // the handler's first failure
  std::atomic<uint64_t> pages_copied_{0}, faults_{0}, faults_copied_{0};
  // pre_arm: what the handler does with a message (under mu_), the pages
  // noted while arming, the pages copied between freeze_point and
  // start_copy, the pages present when armed, the registered ranges.
  enum class Mode { arming, frozen, copying };
  std::atomic<Mode> mode_{Mode::copying};  // changed under mu_
  // Write faults for the copier, in order.
  std::thread copier_;
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<uint64_t> queue_;
  bool copier_stop_ = false;
  AddressRuns touched_;
  std::map<uint64_t, std::vector<char>> frozen_copies_;
  AddressRuns present_;
  std::vector<RemoteRange> ranges_;
};

}  // namespace minicriu
