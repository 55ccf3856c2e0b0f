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
// Shared memory objects (mem/lazy_shmem.hpp) are served the same way through
// whichever mapping faults: UFFDIO_COPY into a shmem mapping fills the
// object's page cache, so each page comes once for every process that maps
// it; a fault on a page another process brought in meanwhile is woken
// (UFFDIO_WAKE). Their missing pages are kept per object (by offset), each
// process keeps which of its addresses map which object, through fork,
// mremap and munmap; the prefetch fills each object once, through any
// mapping of it. madvise(DONTNEED) of shared memory leaves its data in the
// object: its missing pages stay missing, and come from the images. Not
// handled: MADV_REMOVE of pages not in yet sends the same event (the pager
// cannot tell them apart), and their image data comes back.
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
#include "mem/lazy_shmem.hpp"
#include "mem/page_source.hpp"

namespace minicriu {

// What of one process comes lazily.
struct LazyProcess {
  LazyRanges anon;         // its lazy anonymous private VMAs
  // Of those, the MADV_WIPEONFORK and MADV_DONTFORK ones: a child forked
  // during the lazy phase has none of their pages (zero, or no VMA).
  LazyRanges not_in_fork;
  std::vector<LazyShmemVma> shmem;  // its mappings of lazy shared memory objects
};

// In a task being restored: its userfaultfd (with the fork, remap, remove and
// unmap events), sent with the dumped pid on the pager's socket. The task
// keeps its copy for the blob, which registers the lazy VMAs and closes it.
[[nodiscard]] Result<UniqueFd> make_task_uffd(int pager_socket, pid_t pid);

// What the pager counts, for the report and the bench.
struct LazyStats {
  uint64_t faults = 0;          // first touches served
  uint64_t zero_faults = 0;     // served with a zero page
  uint64_t bytes_copied = 0;    // by faults and prefetch
  uint64_t shmem_faults = 0;    // of the faults, those in shared memory
  uint64_t shmem_bytes = 0;     // of bytes_copied, those into shared memory objects
  uint64_t forks = 0, remaps = 0, removes = 0, unmaps = 0;
};

class LazyPager {
 public:
  // lazy: what comes lazily of each process, by dumped pid; shmem: the lazy
  // shared memory objects (their data is read from their images, locally,
  // also when the other pages come from a page server); tree: every
  // restored pid (what is killed on a failure, with the descendants);
  // fd_floor: the tasks' socket goes above every fd number the restored
  // processes use.
  [[nodiscard]] static Result<std::unique_ptr<LazyPager>> start(std::unique_ptr<PageSource> source,
                                                                std::map<pid_t, LazyProcess> lazy,
                                                                const LazyShmemPlan& shmem,
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
  struct Object;
  LazyPager(std::unique_ptr<PageSource> source, std::map<pid_t, LazyProcess> lazy, std::vector<pid_t> tree,
            const Logger& log);
  void run();      // the pager's loop, until done, failed or stopped
  Status serve(Mm& mm, uint64_t addr);
  Status serve_shmem(Mm& mm, uint64_t addr);
  Status event(Mm& mm, const void* msg);
  Status prefetch_one(Mm& mm);
  Status prefetch_object(Object& o);
  // Reads len bytes of the object o from its data image at src and copies
  // them in at at in mm (a mapping of o's offset off): as fill().
  Result<int> fill_object(Mm& mm, Object& o, uint64_t src, uint64_t off, uint64_t at, uint64_t len,
                          uint64_t& done);
  // Whether mm still has work: pages of its own, or a mapping of an object
  // with pages still to come.
  bool busy(const Mm& mm) const;
  // Reads len bytes of mm's pages from src in the source and copies them in
  // at at (UFFDIO_COPY): done, how many went in; what the copy ended with
  // (the .cc's Copied: ok, again, gone, no_vma).
  Result<int> fill(Mm& mm, uint64_t src, uint64_t at, uint64_t len, uint64_t& done);
  Status take_uffd();
  void kill_tree(const Error& why);

  std::unique_ptr<PageSource> source_;
  std::map<pid_t, LazyProcess> lazy_;
  std::vector<pid_t> tree_;
  Logger log_;
  UniqueFd pager_end_, task_end_, wake_;
  std::vector<std::unique_ptr<Mm>> mms_;
  std::map<uint32_t, std::unique_ptr<Object>> objects_;
  std::vector<std::byte> buf_;
  std::atomic<bool> prefetch_{false}, stop_{false};
  bool done_ = false;
  bool detached_ = false;  // in the pager's own process: its log is the only report
  std::optional<Error> failed_;
  LazyStats stats_;
  std::thread thread_;
};

}  // namespace minicriu
