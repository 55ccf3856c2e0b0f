// Lazy restore (restore --lazy): the restored processes run before their
// memory is back. Their anonymous private memory is registered with
// userfaultfd (MISSING mode) by the restorer blob; the LazyPager, in the
// restoring program, serves each first touch with UFFDIO_COPY from a
// PageSource (UFFDIO_ZEROPAGE where the images hold nothing) and, once the
// tree runs, fills the rest in address order from where the faults are, so
// that it finishes. It follows the processes' own changes through the
// userfaultfd events: fork (the child's copy misses what the parent missed),
// mremap (the missing pages move), madvise(DONTNEED) and munmap (never
// filled again). When a page cannot come it kills the lazy tree, with one
// line naming the process and the address.
//
// The uffd of each process is made in that process (userfaultfd() acts on
// the caller's mm) before its credentials are dropped, and handed over on
// the pager's socket (make_task_uffd).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/unique_fd.hpp"
#include "mem/page_source.hpp"

namespace minicriu {

// [start, end) address ranges.
using LazyRanges = std::vector<std::pair<uint64_t, uint64_t>>;

// In a task being restored: its userfaultfd (with the fork, remap, remove and
// unmap events), sent with the dumped pid on the pager's socket. The task
// keeps its copy for the blob, which registers the lazy VMAs and closes it.
[[nodiscard]] Result<UniqueFd> make_task_uffd(int pager_socket, pid_t pid);

// What the pager counts, for the report and the bench.
struct LazyStats {
  uint64_t faults = 0;          // first touches served
  uint64_t zero_faults = 0;     // served with a zero page
  uint64_t bytes_copied = 0;    // by faults and prefetch
  uint64_t forks = 0, remaps = 0, removes = 0, unmaps = 0;
};

class LazyPager {
 public:
  // lazy: each process's lazy VMAs by dumped pid; tree: every restored pid
  // (what is killed on a failure, with the descendants); fd_floor: the
  // tasks' socket goes above every fd number the restored processes use.
  [[nodiscard]] static Result<std::unique_ptr<LazyPager>> start(std::unique_ptr<PageSource> source,
                                                                std::map<pid_t, LazyRanges> lazy,
                                                                std::vector<pid_t> tree, int fd_floor,
                                                                const Logger& log);
  ~LazyPager();
  LazyPager(const LazyPager&) = delete;
  LazyPager& operator=(const LazyPager&) = delete;

  // The end the tasks inherit and send their uffds on.
  int task_socket() const { return task_end_.get(); }
  // Every task has it (or is gone): the restoring program's copy goes.
  void close_task_socket() { task_end_.reset(); }
  // The tree runs: the background prefetch starts.
  void prefetch();
  // Waits until every page is in (or the tree was killed: its error).
  [[nodiscard]] Status finish();
  // Restore -d: the pager goes on in a process of its own (a grandchild,
  // reparented to init or the nearest subreaper) until every page is in;
  // this returns once that process has taken over.
  [[nodiscard]] Status detach();

  // The thread leaves its loop (its state stays): a restore that failed
  // stops it before it asks finish() whether the pager was the cause.
  void stop();

 private:
  struct Mm;
  LazyPager(std::unique_ptr<PageSource> source, std::map<pid_t, LazyRanges> lazy, std::vector<pid_t> tree,
            const Logger& log);
  void run();      // the pager's loop, until done, failed or stopped
  Status serve(Mm& mm, uint64_t addr);
  Status event(Mm& mm, const void* msg);
  Status prefetch_one(Mm& mm);
  // Reads len bytes of mm's pages from src in the source and copies them in
  // at at (UFFDIO_COPY): done, how many went in; what the copy ended with
  // (the .cc's Copied: ok, again, gone, no_vma).
  Result<int> fill(Mm& mm, uint64_t src, uint64_t at, uint64_t len, uint64_t& done);
  Status take_uffd();
  void kill_tree(const Error& why);

  std::unique_ptr<PageSource> source_;
  std::map<pid_t, LazyRanges> lazy_;
  std::vector<pid_t> tree_;
  Logger log_;
  UniqueFd pager_end_, task_end_, wake_;
  std::vector<std::unique_ptr<Mm>> mms_;
  std::vector<std::byte> buf_;
  std::atomic<bool> prefetch_{false}, stop_{false};
  bool done_ = false;
  bool detached_ = false;  // in the pager's own process: its log is the only report
  std::optional<Error> failed_;
  LazyStats stats_;
  std::thread thread_;
};

}  // namespace minicriu
