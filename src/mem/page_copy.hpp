// Pages of a process copied into its page image without the parasite: read
// through /proc/PID/mem into a bounded buffer, then written at the pages'
// place in the image, by up to one worker per CPU (mem/page_dump.cc's drain
// into a local image, frozen or, for a pre-dump, running).
//
// A frozen process of 16 MiB or more with a page file per worker (lanes)
// has its readable pages vmsplice'd by the parasite into a pipe per lane
// instead (ParasiteSession::drain_pages_to_lanes: one copy, no pin); these
// workers copy the rest, and the pages of smaller processes, of pre-dumps
// and of a parasite that cannot vmsplice. Into one file, two threads each
// reading a share and writing it at its offsets moved 1.5-1.7 times as many
// bytes per second as one splice (bench/REPORT.md).
//
// Reads: process_vm_readv copies once but pins what it reads, and a pin of
// a page shared copy-on-write (after fork, KSM) copies that page into the
// target, which would double the memory of a tree of forked processes. A
// read of /proc/PID/mem takes no pin (but copies twice, a page at a time).
// A frozen dump gives the raw pagemap (pagemap_fd): the pages it says only
// this process maps are read pinned (a pin of such a page copies nothing, or
// replaces the page by its copy: the memory stays as it was), the others
// through /proc/PID/mem. With the tree running, a fork could share a page
// between the pagemap's word and the read: /proc/PID/mem only.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/remote_ptr.hpp"
#include "base/unique_fd.hpp"
#include "ptrace/tracee_memory.hpp"

namespace minicriu {

// All of buf written at offset of fd.
[[nodiscard]] Status pwrite_all(int fd, const char* buf, size_t len, uint64_t offset);

// What a run becomes when its pages cannot be read.
enum class Vanished {
  fail,   // the tree is frozen: a page the scan found present is there still
  zeros,  // the tree runs (a pre-dump): unmapped since the scan, stored as zeros
};

struct PageCopy {
  const TraceeMemory* memory = nullptr;
  int out_fd = -1;
  // Where the first run's bytes go in out_fd; the others follow, in order.
  uint64_t offset = 0;
  unsigned workers = 1;
  Vanished vanished = Vanished::fail;
  // The process's /proc/PID/pagemap, the tree frozen; -1: every page read
  // through /proc/PID/mem.
  int pagemap_fd = -1;
  const Logger* log = nullptr;
};

// The runs' bytes, in order, at copy.offset of copy.out_fd, by
// copy.workers threads (a CopyPool of its own), a MiB of the image at a
// time: a piece of several runs when they are small (scattered pages: one
// pagemap read, one process_vm_readv and one pwrite for up to 256 of them).
// The workers run no step (fault plan, cancel): the caller's thread has them.
[[nodiscard]] Status copy_pages(const PageCopy& copy, std::span<const RemoteRange> runs);

// The width of copy_pages for the pages of one process: the CPUs this
// task may run on, at most 4, one per 8 MiB of pages.
unsigned copy_workers(uint64_t bytes);

// The pages of every process of a frozen tree, copied while the dump goes
// on with the next processes (their ptrace work only the seizing thread
// can do): the batches of all of them shared out to the pool's workers, in
// the order they came. A process's memory is read as by copy_pages, frozen
// (Vanished::fail, pinned where the pagemap says only it maps a page).
// submit() waits while more than a bounded number of pieces is queued (the
// queue holds addresses, never pages); the destructor drops what is queued
// and joins the workers.
class CopyPool {
 public:
  // What the batches of one process read from.
  struct Source {
    TraceeMemory memory;
    UniqueFd pagemap;
  };
  [[nodiscard]] static Result<std::shared_ptr<const Source>> source(pid_t pid);

  CopyPool(unsigned workers, const Logger* log);
  ~CopyPool();
  CopyPool(const CopyPool&) = delete;
  CopyPool& operator=(const CopyPool&) = delete;

  // The runs' bytes, in order, at offset of out_fd (open until wait()).
  void submit(std::shared_ptr<const Source> source, int out_fd, uint64_t offset, std::span<const RemoteRange> runs);
  // The same for any copy (copy_pages): keep holds what copy points into.
  void queue(std::shared_ptr<const void> keep, const PageCopy& copy, std::span<const RemoteRange> runs);
  // Every batch copied, or the first failure (what was queued after it is
  // dropped).
  [[nodiscard]] Status wait();
  unsigned workers() const { return static_cast<unsigned>(threads_.size()); }

 private:
  struct Batch;
  void work();

  const Logger* log_;
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<std::pair<std::shared_ptr<Batch>, size_t>> queue_;  // a batch and one of its pieces
  size_t busy_ = 0;     // pieces being copied
  bool stop_ = false;
  Status error_;
  std::vector<std::thread> threads_;
};

}  // namespace minicriu
