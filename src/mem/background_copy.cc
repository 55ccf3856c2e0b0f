#include "mem/background_copy.hpp"

#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <utility>
#include <cerrno>
#include <cstring>

#include "base/cpus.hpp"
#include "base/page.hpp"
#include "mem/page_copy.hpp"

namespace minicriu {

namespace {

constexpr uint64_t kChunkPages = 256;  // 1 MiB: a worker's buffer, one read and one write

// While a remove event (MADV_DONTNEED) waits to be read, the kernel answers
// UFFDIO_WRITEPROTECT and UFFDIO_ZEROPAGE with EAGAIN (mmap_changing). The
// thread that reads the userfaultfd must not retry in place, or it never
// reads the event: there (t_defer), an EAGAIN only marks the message
// (t_deferred), to be answered again after the next read.
thread_local bool t_defer = false;
thread_local bool t_deferred = false;

// An EAGAIN of an answer: retried in place, or left for later by the reader.
bool answer_again() {
  if (!t_defer) return true;
  t_deferred = true;
  return false;
}

}  // namespace

BackgroundCopy::BackgroundCopy(pid_t pid, UniqueFd uffd, PageMap pagemap, TraceeMemory memory, const Logger& log)
    : pid_(pid), uffd_(std::move(uffd)), pages_fd_(-1), pagemap_(std::move(pagemap)), memory_(std::move(memory)),
      log_(log) {}

void BackgroundCopy::set_runs(int pages_fd, std::vector<DeferredRun> runs) {
  pages_fd_ = pages_fd;
  runs_ = std::move(runs);
  first_index_.clear();
  total_pages_ = 0;
  for (auto& r : runs_) {
    first_index_.push_back(total_pages_);
    total_pages_ += r.pages;
  }
  copied_.assign(total_pages_, false);
}

Status BackgroundCopy::start_handler() {
  stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_) return fail_errno("eventfd for the background copy");
  // Signals blocked in them, as in every worker of the library's (a signal
  // meant for the caller's program goes to its own threads).
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  std::string failed;
  try {
    copier_ = std::thread([this] { copy_writes(); });
    handler_ = std::thread([this] { handle_faults(); });
  } catch (const std::system_error& e) {
    failed = e.what();
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (!failed.empty()) {
    stop_handler();  // the one that started, if one did
    return failf("pid {}: cannot start the background copy's threads: {}", pid_, failed);
  }
  return {};
}

Status BackgroundCopy::write_protect(std::span<const RemoteRange> ranges) {
  for (auto& r : ranges) {
    uffdio_writeprotect wp{};
    wp.range.start = r.start.addr();
    wp.range.len = r.size;
    wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
    while (::ioctl(uffd_.get(), UFFDIO_WRITEPROTECT, &wp) != 0)
      if (errno != EINTR && errno != EAGAIN)
        return failf_errno("pid {}: cannot write-protect {}-{} (userfaultfd)", pid_, r.start, r.end());
  }
  return {};
}

Result<std::unique_ptr<BackgroundCopy>> BackgroundCopy::arm(pid_t pid, UniqueFd uffd, int pages_fd,
                                                            std::vector<DeferredRun> runs,
                                                            std::span<const RemoteRange> ranges, const Logger& log) {
  ASSIGN_OR_RETURN(PageMap pagemap, PageMap::open(pid));
  if (!pagemap.has_scan()) return failf("pid {}: a background dump needs the PAGEMAP_SCAN ioctl (Linux 6.7)", pid);
  ASSIGN_OR_RETURN(TraceeMemory memory, TraceeMemory::open(pid));
  std::unique_ptr<BackgroundCopy> c(
      new BackgroundCopy(pid, std::move(uffd), std::move(pagemap), std::move(memory), log));
  c->set_runs(pages_fd, std::move(runs));
  // The handler first: from the first protected page on, a write may come
  // (the kernel's own, rseq's, while the cure runs remote syscalls).
  TRY(c->start_handler());
  TRY(c->write_protect(ranges));
  return c;
}

namespace {

// Sorted, overlapping and adjacent runs joined.
AddressRuns coalesced(AddressRuns runs) {
  std::sort(runs.begin(), runs.end());
  AddressRuns out;
  for (auto& r : runs) {
    if (!out.empty() && r.first <= out.back().second) out.back().second = std::max(out.back().second, r.second);
    else out.push_back(r);
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<BackgroundCopy>> BackgroundCopy::pre_arm(pid_t pid, UniqueFd uffd,
                                                                std::span<const RemoteRange> ranges,
                                                                const Logger& log) {
  ASSIGN_OR_RETURN(PageMap pagemap, PageMap::open(pid));
  if (!pagemap.has_scan()) return failf("pid {}: a background dump needs the PAGEMAP_SCAN ioctl (Linux 6.7)", pid);
  ASSIGN_OR_RETURN(TraceeMemory memory, TraceeMemory::open(pid));
  std::unique_ptr<BackgroundCopy> c(
      new BackgroundCopy(pid, std::move(uffd), std::move(pagemap), std::move(memory), log));
  c->mode_ = Mode::arming;
  c->ranges_.assign(ranges.begin(), ranges.end());
  TRY(c->start_handler());
  TRY(c->write_protect(ranges));
  // Listed after the protection: a page written meanwhile is noted too.
  std::vector<PageRegion> regions;
  AddressRuns present;
  for (auto& r : ranges) {
    regions.clear();
    TRY(c->pagemap_.scan(r.start.addr(), r.end().addr(), false, regions));
    for (auto& g : regions) present.emplace_back(g.start, g.end);
  }
  c->present_ = coalesced(std::move(present));
  return c;
}


Result<AddressRuns> BackgroundCopy::freeze_point() {
  AddressRuns touched;
  {
    // What the kernel queued before the freeze (a MADV_DONTNEED's remove
    // event lets its thread go on, and stop, once it is read) is answered
    // as while arming: the handler's batch in hand first, then the rest.
    std::lock_guard reading(read_mu_);
    std::vector<uffd_msg> queued;
    for (uffd_msg m; ::read(uffd_.get(), &m, sizeof(m)) == static_cast<ssize_t>(sizeof(m));) queued.push_back(m);
    // All read first (an answer may wait for an event behind it), then answered.
    bool gone_wrong = failed();
    for (auto& m : queued) answer(m, gone_wrong);
    std::lock_guard lock(mu_);
    mode_ = Mode::frozen;
    touched.swap(touched_);
  }
  if (failed()) {
    std::lock_guard lock(error_mu_);
    return std::unexpected(error_.error());
  }
  TRY(take_again(std::move(touched), "at the freeze"));
  AddressRuns out = std::move(present_);
  present_.clear();
  return out;
}

Result<uint64_t> BackgroundCopy::settle() {
  AddressRuns touched;
  {
    // Under mu_, as the handler notes a page and lifts its protection: a
    // page is in what we take, or its fault is still to come.
    std::lock_guard lock(mu_);
    if (mode_.load() != Mode::arming) return 0;
    touched.swap(touched_);
  }
  if (failed()) {
    std::lock_guard lock(error_mu_);
    return std::unexpected(error_.error());
  }
  return take_again(std::move(touched), "before the freeze");
}

Result<uint64_t> BackgroundCopy::take_again(AddressRuns touched, const char* when) {
  // Only what is ours to protect: the registered ranges.
  AddressRuns clipped;
  for (auto& [s, e] : coalesced(std::move(touched)))
    for (auto& r : ranges_) {
      uint64_t a = std::max(s, r.start.addr()), b = std::min(e, r.end().addr());
      if (a < b) clipped.emplace_back(a, b);
    }
  std::vector<RemoteRange> again;
  uint64_t bytes = 0;
  for (auto& [a, b] : clipped) {
    again.push_back({RemotePtr<>(a), b - a});
    bytes += b - a;
  }
  TRY(write_protect(again));
  log_.info("pid {}: {} range(s), {} page(s), written, first touched or discarded since it was armed: protected "
            "again {}",
            pid_, again.size(), bytes / kPageSize, when);
  // present_ less what was touched, plus what of it is present now (a page
  // discarded or first touched after this scan is noted again).
  AddressRuns out;
  auto t = clipped.begin();
  for (auto [s, e] : present_) {
    while (t != clipped.end() && t->second <= s) ++t;
    for (auto u = t; s < e && u != clipped.end() && u->first < e; ++u) {
      if (u->first > s) out.emplace_back(s, u->first);
      s = std::max(s, u->second);
    }
    if (s < e) out.emplace_back(s, e);
  }
  std::vector<PageRegion> regions;
  for (auto& [a, b] : clipped) {
    regions.clear();
    TRY(pagemap_.scan(a, b, false, regions));
    for (auto& g : regions) out.emplace_back(g.start, g.end);
  }
  present_ = coalesced(std::move(out));
  return bytes / kPageSize;
}

Status BackgroundCopy::start_copy(int pages_fd, std::vector<DeferredRun> runs) {
  std::lock_guard lock(mu_);
  set_runs(pages_fd, std::move(runs));
  // The pages the dump's own work wrote since freeze_point (rseq, remote
  // syscalls): their copies of the freeze go first.
  for (auto& [addr, page] : frozen_copies_) {
    size_t run;
    uint64_t index;
    if (!locate(addr, run, index) || copied_[first_index_[run] + index]) continue;
    TRY(write_image(runs_[run].offset + index * kPageSize, page.data(), kPageSize));
    copied_[first_index_[run] + index] = true;
    pages_copied_++;
  }
  frozen_copies_.clear();
  mode_ = Mode::copying;
  return {};
}

BackgroundCopy::~BackgroundCopy() { stop_handler(); }

void BackgroundCopy::stop_handler() {
  if (handler_.joinable()) {
    uint64_t one = 1;
    if (::write(stop_.get(), &one, sizeof(one)) < 0) {
    }
    handler_.join();
  }
  if (copier_.joinable()) {
    {
      std::lock_guard lock(queue_mu_);
      copier_stop_ = true;
    }
    queue_cv_.notify_one();
    copier_.join();
  }
  // Every protection goes with the last reference; waiting writers wake.
  uffd_.reset();
}

Status BackgroundCopy::finish() {
  stop_handler();
  std::lock_guard lock(error_mu_);
  return error_;
}

BackgroundStats BackgroundCopy::stats() const {
  return {pages_copied_.load(), faults_.load(), faults_copied_.load()};
}

bool BackgroundCopy::locate(uint64_t addr, size_t& run, uint64_t& index) const {
  auto it = std::upper_bound(runs_.begin(), runs_.end(), addr,
                             [](uint64_t a, const DeferredRun& r) { return a < r.start + r.pages * kPageSize; });
  if (it == runs_.end() || it->start > addr) return false;
  run = static_cast<size_t>(it - runs_.begin());
  index = (addr - it->start) / kPageSize;
  return true;
}

// A page of the freeze that cannot be read any more was unmapped or moved
// since (a discarded one reads, as zeros or the handler's zero page, and the
// check of its protection after the read finds it).
Status BackgroundCopy::read_remote(uint64_t addr, char* buf, size_t len) const {
  if (size_t got = memory_.read_some(RemotePtr<>(addr), buf, len); got < len) {
    log_.debug("pid {}: {:#x}: unreadable in the background copy: {}", pid_, addr + got, std::strerror(errno));
    return discarded(page_down(addr + got));
  }
  return {};
}

Status BackgroundCopy::write_image(uint64_t offset, const char* buf, size_t len) const {
  return with_context(pwrite_all(pages_fd_, buf, len, offset), fmt::format("pid {}", pid_));
}

Status BackgroundCopy::unprotect(uint64_t start, uint64_t len) {
  uffdio_writeprotect wp{};
  wp.range.start = start;
  wp.range.len = len;
  wp.mode = 0;  // lift it, and wake who waits on it
  for (;;) {
    if (::ioctl(uffd_.get(), UFFDIO_WRITEPROTECT, &wp) == 0) return {};
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      if (answer_again()) continue;
      return {};
    }
    // Unmapped meanwhile: nothing left to lift there.
    if (errno == ENOENT || errno == ESRCH) return {};
    return failf_errno("pid {}: cannot lift the write protection of {:#x}-{:#x}", pid_, start, start + len);
  }
}

Status BackgroundCopy::discarded(uint64_t page) const {
  return failf("pid {}: its page at {:#x} was discarded, unmapped or moved after the freeze, before the "
               "background copy reached it (madvise, munmap, mremap): the checkpoint cannot be consistent; "
               "dump again, or without --background",
               pid_, page);
}

void BackgroundCopy::note_error(Status st) {
  std::lock_guard lock(error_mu_);
  if (error_) error_ = std::move(st);
}

bool BackgroundCopy::failed() const {
  std::lock_guard lock(error_mu_);
  return !error_;
}

void BackgroundCopy::answer(const uffd_msg& m, bool& failed) {
  Status st = failed ? let_through(m) : dispatch(m);
  if (st) return;
  // The dump fails; the writer must not wait for it.
  note_error(std::move(st));
  failed = true;
  t_deferred = false;
  if (auto again = let_through(m); !again) log_.warn("{}", again.error().what());
}

// A worker's chunk: read while protected, then checked still protected
// (so the read saw the page of the freeze), then claimed page by page
// against the handler, written, and its protection lifted.
Status BackgroundCopy::copy_chunk(const Chunk& c, std::vector<char>& buf) {
  const DeferredRun& r = runs_[c.run];
  uint64_t start = r.start + c.first * kPageSize, len = c.pages * kPageSize;
  TRY(read_remote(start, buf.data(), len));
  std::vector<std::pair<uint64_t, uint64_t>> changed;
  TRY(pagemap_.unprotected(start, start + len, changed));
  auto intact = [&, it = changed.begin()](uint64_t page) mutable {
    while (it != changed.end() && it->second <= page) ++it;
    return it == changed.end() || it->first > page;
  };
  std::vector<std::pair<uint64_t, uint64_t>> mine;  // pages [first, last) of the chunk this worker writes
  {
    std::lock_guard lock(mu_);
    uint64_t base = first_index_[c.run] + c.first;
    for (uint64_t i = 0; i < c.pages; i++) {
      if (copied_[base + i]) continue;  // the handler's, copied on a write fault
      uint64_t page = start + i * kPageSize;
      if (!intact(page))
        return discarded(page);
      copied_[base + i] = true;
      if (!mine.empty() && mine.back().second == i) mine.back().second = i + 1;
      else mine.emplace_back(i, i + 1);
    }
  }
  for (auto& [a, b] : mine) {
    TRY(write_image(r.offset + (c.first + a) * kPageSize, buf.data() + a * kPageSize, (b - a) * kPageSize));
    pages_copied_ += b - a;
  }
  return unprotect(start, len);
}

Status BackgroundCopy::handle_fault(uint64_t addr) {
  faults_++;
  size_t run;
  uint64_t index;
  if (locate(addr, run, index)) {
    alignas(64) char page[kPageSize];
    bool copy = false;
    {
      // Read under the lock: a worker that claims the page after us must
      // not lift its protection before we read it.
      std::lock_guard lock(mu_);
      uint64_t i = first_index_[run] + index;
      if (!copied_[i]) {
        TRY(read_remote(addr, page, kPageSize));
        // Still protected after the read: what was read is the freeze's
        // (a page discarded meanwhile reads as a zero page).
        std::vector<std::pair<uint64_t, uint64_t>> changed;
        TRY(pagemap_.unprotected(addr, addr + kPageSize, changed));
        if (!changed.empty())
          return discarded(addr);
        copied_[i] = true;
        copy = true;
      }
    }
    if (copy) {
      TRY(write_image(runs_[run].offset + index * kPageSize, page, kPageSize));
      pages_copied_++;
      faults_copied_++;
    }
  }
  return unprotect(addr, kPageSize);
}

void BackgroundCopy::handle_faults() {
  t_defer = true;
  pollfd fds[2] = {{uffd_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
  bool failed = false;
  std::vector<uffd_msg> later;  // answers the kernel refused for now (EAGAIN)
  auto answer_or_later = [&](const uffd_msg& m) {
    t_deferred = false;
    answer(m, failed);
    if (t_deferred) later.push_back(m);
  };
  for (;;) {
    int n = ::poll(fds, 2, later.empty() ? -1 : 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (fds[1].revents & POLLIN)) return;
    // Read and answered under read_mu_: freeze_point finds no message read
    // and not yet answered.
    std::lock_guard reading(read_mu_);
    std::vector<uffd_msg> again;
    again.swap(later);
    for (auto& m : again) answer_or_later(m);
    if (!(fds[0].revents & POLLIN)) {
      if (fds[0].revents & (POLLERR | POLLHUP)) return;
      continue;
    }
    uffd_msg msgs[16];
    ssize_t got = ::read(uffd_.get(), msgs, sizeof(msgs));
    if (got < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      note_error(failf_errno("pid {}: reading its userfaultfd", pid_));
      return;
    }
    for (size_t i = 0; i < static_cast<size_t>(got) / sizeof(uffd_msg); i++) answer_or_later(msgs[i]);
  }
}

namespace {

uint64_t fault_page(const uffd_msg& m) { return m.arg.pagefault.address & ~(uint64_t{kPageSize} - 1); }
bool is_wp_fault(const uffd_msg& m) { return (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) != 0; }

}  // namespace

Status BackgroundCopy::zero_page(uint64_t addr) {
  uffdio_zeropage z{};
  z.range.start = addr;
  z.range.len = kPageSize;
  for (;;) {
    if (::ioctl(uffd_.get(), UFFDIO_ZEROPAGE, &z) == 0) return {};
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      if (answer_again()) continue;
      return {};
    }
    if (errno == EEXIST) {
      // Filled meanwhile: the waiter only needs waking.
      uffdio_range r{addr, kPageSize};
      ::ioctl(uffd_.get(), UFFDIO_WAKE, &r);
      return {};
    }
    if (errno == ENOENT || errno == ESRCH) return {};
    return failf_errno("pid {}: cannot give a zero page at {:#x} (userfaultfd)", pid_, addr);
  }
}

Status BackgroundCopy::let_through(const uffd_msg& m) {
  if (m.event != UFFD_EVENT_PAGEFAULT) return {};
  return is_wp_fault(m) ? unprotect(fault_page(m), kPageSize) : zero_page(fault_page(m));
}

Status BackgroundCopy::dispatch(const uffd_msg& m) {
  if (mode_.load() == Mode::arming) {
    std::lock_guard lock(mu_);
    if (mode_.load() == Mode::arming) {
      // Noted and let through under the lock: freeze_point sees every page
      // whose protection was lifted, or its fault is still to come.
      if (m.event == UFFD_EVENT_REMOVE) {
        touched_.emplace_back(m.arg.remove.start, m.arg.remove.end);
        return {};
      }
      if (m.event != UFFD_EVENT_PAGEFAULT) return {};
      touched_.emplace_back(fault_page(m), fault_page(m) + kPageSize);
      return let_through(m);
    }
  }
  if (m.event != UFFD_EVENT_PAGEFAULT) return {};
  // A page missing at the freeze (its first touch since: no part of the
  // checkpoint), or one of the freeze discarded since (its copy's check
  // refuses it): answered at once, never behind a read, for our own reads of
  // such a page wait for this answer.
  if (!is_wp_fault(m)) return zero_page(fault_page(m));
  // A write to a page of the freeze: the copier copies it first.
  {
    std::lock_guard lock(queue_mu_);
    queue_.push_back(fault_page(m));
  }
  queue_cv_.notify_one();
  return {};
}

void BackgroundCopy::copy_writes() {
  bool failed = false;
  for (;;) {
    uint64_t addr;
    {
      std::unique_lock lock(queue_mu_);
      queue_cv_.wait(lock, [&] { return copier_stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      addr = queue_.front();
      queue_.pop_front();
    }
    Status st = failed ? unprotect(addr, kPageSize) : copy_write(addr);
    if (!st) {
      // The dump fails; the writer must not wait for it.
      note_error(std::move(st));
      failed = true;
      if (auto again = unprotect(addr, kPageSize); !again) log_.warn("{}", again.error().what());
    }
  }
}

Status BackgroundCopy::copy_write(uint64_t addr) {
  {
    std::unique_lock lock(mu_);
    if (mode_.load() == Mode::frozen) {
      // The runs not known yet: only the dump's own work writes now (rseq,
      // remote syscalls); the page is kept as it was at the freeze.
      if (!frozen_copies_.count(addr)) {
        std::vector<char> page(kPageSize);
        TRY(read_remote(addr, page.data(), kPageSize));
        frozen_copies_.emplace(addr, std::move(page));
      }
      lock.unlock();
      return unprotect(addr, kPageSize);
    }
  }
  return handle_fault(addr);
}

void BackgroundCopy::chunks(std::vector<std::pair<BackgroundCopy*, Chunk>>& out) const {
  for (size_t r = 0; r < runs_.size(); r++)
    for (uint64_t first = 0; first < runs_[r].pages; first += kChunkPages)
      out.push_back({const_cast<BackgroundCopy*>(this), Chunk{r, first, std::min(kChunkPages, runs_[r].pages - first)}});
}

Status BackgroundCopy::copy_all(std::span<BackgroundCopy* const> copies, unsigned workers, const Logger& log) {
  std::vector<std::pair<BackgroundCopy*, Chunk>> work;
  for (auto* c : copies) c->chunks(work);
  // Process by process would leave the last ones protected longest; the
  // chunks of all of them interleave instead, round robin.
  std::stable_sort(work.begin(), work.end(), [](auto& a, auto& b) { return a.second.first < b.second.first; });
  workers = std::max(1u, std::min<unsigned>(workers, static_cast<unsigned>(work.size())));
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  Status first_error;
  auto run = [&] {
    std::vector<char> buf(kChunkPages * kPageSize);
    for (size_t i; !stop && (i = next++) < work.size();) {
      if (auto st = work[i].first->copy_chunk(work[i].second, buf); !st) {
        std::lock_guard lock(mu);
        if (first_error) first_error = std::move(st);
        stop = true;
      }
    }
  };
  std::vector<std::thread> threads;
  start_workers(threads, workers - 1, run);
  run();
  for (auto& t : threads) t.join();
  for (auto* c : copies) {
    Status st = c->finish();
    if (!st && first_error) first_error = std::move(st);
  }
  if (first_error) log.debug("background copy: {} chunk(s) by {} worker(s)", work.size(), workers);
  return first_error;
}

}  // namespace minicriu
