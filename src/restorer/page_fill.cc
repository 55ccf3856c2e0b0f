#include "restorer/page_fill.hpp"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>

#include <algorithm>
#include <mutex>
#include <string_view>
#include <thread>

#include "base/cpus.hpp"
#include "base/mapping.hpp"
#include "base/page.hpp"
#include "base/syscalls.hpp"
#include "base/unique_fd.hpp"

namespace minicriu {

namespace {

constexpr uint64_t kFillHugePage = 2ull << 20;
constexpr uint64_t kOneReaderUpTo = 64ull << 20;
constexpr unsigned kMostReaders = 4;

// Whether THP is "always" here (every large enough anonymous VMA gets huge
// pages on its faults): then memory without MADV_NOHUGEPAGE is read, not
// filled by UFFDIO_COPY, which puts 4 KiB pages only.
bool thp_always() {
  UniqueFd fd(::open("/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY | O_CLOEXEC));
  char buf[128] = {};
  if (!fd || ::read(fd.get(), buf, sizeof(buf) - 1) <= 0) return false;
  return std::string_view(buf).find("[always]") != std::string_view::npos;
}

// The page files, opened once: preadv() takes its own offset, so the readers
// share each fd.
struct PageFiles {
  const std::vector<std::string>* paths = nullptr;
  std::vector<UniqueFd> fds;
};

Result<PageFiles> open_page_files(const ProcessImages& p, const std::vector<PageRead>& reads) {
  PageFiles files;
  files.paths = &p.page_files;
  files.fds.resize(p.page_files.size());
  for (const PageRead& r : reads) {
    if (files.fds[r.file]) continue;
    const std::string& path = p.page_files[r.file];
    files.fds[r.file] = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!files.fds[r.file]) return failf_errno("cannot open {}", path);
  }
  return files;
}

// One reader's part: its reads gathered into preadv() calls of at most
// kBatch bytes and IOV_MAX pieces, each over consecutive bytes of one file.
class PartReader {
  // Batches of at most 64 MiB keep the progress report moving, at no cost to
  // the page path (a syscall per tens of milliseconds of copying; 2 and 16
  // MiB were no faster here).
  static constexpr uint64_t kBatch = 64ull << 20;

 public:
  PartReader(const PageFiles& files, int uffd, std::atomic<uint64_t>* progress, const std::atomic<bool>& stop)
      : files_(files), uffd_(uffd), progress_(progress), stop_(stop) {
    iov_.reserve(IOV_MAX);
    populate_iov_.reserve(IOV_MAX);
  }

  Status read(const std::vector<PageRead>& part) {
    for (const PageRead& r : part) {
      if (stop_.load(std::memory_order_relaxed)) return {};  // another reader failed: its error wins
      if (r.file != file_ || static_cast<off_t>(r.offset) != next_ || r.copy != copy_) {
        TRY(flush());
        file_ = r.file;
        copy_ = r.copy;
        off_ = next_ = static_cast<off_t>(r.offset);
      }
      uint64_t dst = r.dst, len = r.len;
      while (len) {
        uint64_t piece = std::min(len, kBatch - batch_);
        iov_.push_back({reinterpret_cast<void*>(dst), piece});
        populate_iov_.push_back(r.populate);
        batch_ += piece;
        next_ += static_cast<off_t>(piece);
        dst += piece;
        len -= piece;
        if (iov_.size() == IOV_MAX || batch_ == kBatch) TRY(flush());
      }
    }
    return flush();
  }

 private:
  // One preadv per batch (or copy(), for slots UFFDIO_COPY fills); a short
  // read (the kernel caps one call near 2 GiB) resumes where it stopped.
  Status flush() {
    if (iov_.empty()) return {};
    const std::string& path = (*files_.paths)[file_];
    int fd = files_.fds[file_].get();
    if (copy_) return copy();
    if (populate_) populate();
    size_t first = 0;
    while (first < iov_.size()) {
      ssize_t n = ::preadv(fd, &iov_[first], static_cast<int>(iov_.size() - first), off_);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return failf_errno("cannot read {} at offset {}", path, off_);
      if (n == 0) return failf("{} ends early at offset {}", path, off_);
      off_ += n;
      if (progress_) progress_->fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      auto done = static_cast<size_t>(n);
      while (first < iov_.size() && done >= iov_[first].iov_len) done -= iov_[first++].iov_len;
      if (done) {
        iov_[first].iov_base = static_cast<char*>(iov_[first].iov_base) + done;
        iov_[first].iov_len -= done;
      }
    }
    iov_.clear();
    populate_iov_.clear();
    batch_ = 0;
    return {};
  }

  // The batch's part of the page file mapped (its page cache pages, no
  // copy), then UFFDIO_COPY into the slots: each destination page allocated
  // and filled in one kernel loop, neither zeroed first nor faulted in.
  Status copy() {
    const std::string& path = (*files_.paths)[file_];
    void* src = ::mmap(nullptr, batch_, PROT_READ, MAP_SHARED | MAP_POPULATE, files_.fds[file_].get(), off_);
    if (src == MAP_FAILED) return failf_errno("cannot map {} bytes of {} at offset {}", batch_, path, off_);
    Mapping window(src, batch_);
    uint64_t from = reinterpret_cast<uint64_t>(src);
    for (const iovec& v : iov_) {
      uint64_t dst = reinterpret_cast<uint64_t>(v.iov_base), len = v.iov_len;
      while (len) {
        uffdio_copy c{};
        c.dst = dst;
        c.src = from;
        c.len = len;
        int r = ::ioctl(uffd_, UFFDIO_COPY, &c);
        if (c.copy > 0) {
          dst += static_cast<uint64_t>(c.copy);
          from += static_cast<uint64_t>(c.copy);
          len -= static_cast<uint64_t>(c.copy);
          if (progress_) progress_->fetch_add(static_cast<uint64_t>(c.copy), std::memory_order_relaxed);
          continue;
        }
        if (r != 0 && (errno == EAGAIN || errno == EINTR)) continue;
        return failf_errno("cannot copy {} at offset {} into {:#x} (UFFDIO_COPY)", path,
                           off_ + static_cast<off_t>(from - reinterpret_cast<uint64_t>(src)), dst);
      }
    }
    off_ += static_cast<off_t>(batch_);
    iov_.clear();
    populate_iov_.clear();
    batch_ = 0;
    return {};
  }

  // MADV_POPULATE_WRITE (Linux 5.14): the batch's pages allocated in one
  // kernel loop rather than a fault per page inside the copy. Only a hint:
  // an older kernel (EINVAL) or a range it refuses is read as it is.
  void populate() {
    for (size_t i = 0; i < iov_.size(); i++)
      if (populate_iov_[i] && ::madvise(iov_[i].iov_base, iov_[i].iov_len, MADV_POPULATE_WRITE) != 0 &&
          errno == EINVAL) {
        populate_ = false;
        return;
      }
  }

  const PageFiles& files_;
  int uffd_;
  std::atomic<uint64_t>* progress_;
  const std::atomic<bool>& stop_;
  std::vector<iovec> iov_;
  std::vector<bool> populate_iov_;  // per iov_: PageRead::populate
  bool populate_ = true;            // false once the kernel said it has no MADV_POPULATE_WRITE
  uint32_t file_ = 0;
  bool copy_ = false;  // the batch goes by UFFDIO_COPY
  off_t off_ = 0;     // of the first byte the iovecs take
  off_t next_ = -1;   // the offset after them
  uint64_t batch_ = 0;  // bytes in iov_
};

// A userfaultfd with the slots UFFDIO_COPY fills registered (missing pages),
// each slot whole (a part would split its VMA, which the blob moves as one),
// unregistered and closed when it goes, before the task clones its children.
// UFFD_USER_MODE_ONLY needs no privilege (vm.unprivileged_userfaultfd 0); no
// fault is ever handled through it, nothing touches those slots but
// UFFDIO_COPY. Where userfaultfd or a registration is refused, every read
// goes by preadv() as into the other slots.
class SlotCopier {
 public:
  SlotCopier(const ProcessImages& p, const PremapPlan& plan, const std::vector<bool>& copy,
             const std::vector<PageRead>& reads) {
    bool any = false;
    for (auto& r : reads) any |= r.copy;
    if (!any) return;
    uffd_ = UniqueFd(sys::userfaultfd(O_CLOEXEC | UFFD_USER_MODE_ONLY));
    if (!uffd_) return;
    uffdio_api api{};
    api.api = UFFD_API;
    if (::ioctl(uffd_.get(), UFFDIO_API, &api) != 0) {
      drop();
      return;
    }
    for (int i = 0; i < p.mm.vmas_size(); i++) {
      auto idx = static_cast<size_t>(i);
      if (idx >= copy.size() || !copy[idx]) continue;
      uffdio_register reg{};
      reg.range.start = plan.slot[idx];
      reg.range.len = p.mm.vmas(i).end() - p.mm.vmas(i).start();
      reg.mode = UFFDIO_REGISTER_MODE_MISSING;
      if (::ioctl(uffd_.get(), UFFDIO_REGISTER, &reg) != 0) {
        drop();
        return;
      }
      registered_.push_back(reg.range);
    }
  }
  ~SlotCopier() { drop(); }
  SlotCopier(const SlotCopier&) = delete;
  SlotCopier& operator=(const SlotCopier&) = delete;

  explicit operator bool() const { return static_cast<bool>(uffd_); }
  int fd() const { return uffd_.get(); }

 private:
  void drop() {
    for (auto& r : registered_) ::ioctl(uffd_.get(), UFFDIO_UNREGISTER, &r);
    registered_.clear();
    uffd_.reset();
  }
  UniqueFd uffd_;
  std::vector<uffdio_range> registered_;
};

}  // namespace

std::vector<bool> copy_slots(const ProcessImages& p, const PremapPlan& plan, bool thp_always) {
  std::vector<bool> copy(p.mm.vmas_size(), false);
  for (int i = 0; i < p.mm.vmas_size(); i++) {
    const img::Vma& v = p.mm.vmas(i);
    auto idx = static_cast<size_t>(i);
    bool huge = (v.advice() & img::ADVICE_HUGEPAGE) || (thp_always && !(v.advice() & img::ADVICE_NOHUGEPAGE));
    copy[idx] = v.kind() == img::VMA_ANON_PRIVATE && v.has_pages() && !huge && idx < plan.slot.size() &&
                plan.slot[idx] && !(idx < plan.inherited.size() && plan.inherited[idx]) &&
                !(idx < plan.lazy.size() && plan.lazy[idx]);
  }
  return copy;
}

Result<std::vector<PageRead>> plan_page_reads(const ProcessImages& p, const PremapPlan& plan,
                                              const std::vector<bool>& copy) {
  const auto& vmas = p.mm.vmas();
  std::vector<std::vector<const PageRun*>> by_file(p.page_files.size());
  for (auto& r : p.page_runs)
    if (r.file < by_file.size()) by_file[r.file].push_back(&r);
  std::vector<PageRead> reads;
  auto add = [&](uint32_t file, uint64_t offset, uint64_t dst, uint64_t len, bool populate, bool copy) {
    if (!reads.empty()) {
      PageRead& last = reads.back();
      if (last.file == file && last.offset + last.len == offset && last.dst + last.len == dst &&
          last.populate == populate && last.copy == copy) {
        last.len += len;
        return;
      }
    }
    reads.push_back({file, offset, dst, len, populate, copy});
  };
  for (uint32_t f = 0; f < by_file.size(); f++) {
    auto& runs = by_file[f];
    std::sort(runs.begin(), runs.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    for (const PageRun* r : runs) {
      uint64_t offset = r->offset;
      // A run may span back-to-back VMAs (validated); their slots are apart.
      auto it = std::upper_bound(vmas.begin(), vmas.end(), r->start,
                                 [](uint64_t a, const img::Vma& v) { return a < v.end(); });
      for (uint64_t at = r->start; at < r->end; ++it) {
        if (it == vmas.end() || it->start() > at)
          return failf("page run {:#x}-{:#x} of {} is not inside VMAs", r->start, r->end, p.page_files[f]);
        auto idx = static_cast<size_t>(it - vmas.begin());
        uint64_t piece_end = std::min(r->end, it->end());
        // A lazy VMA's pages come on first touch.
        if (!(idx < plan.lazy.size() && plan.lazy[idx]))
          add(f, offset, plan.slot[idx] + (at - it->start()), piece_end - at, !(it->advice() & img::ADVICE_HUGEPAGE),
              idx < copy.size() && copy[idx]);
        offset += piece_end - at;
        at = piece_end;
      }
    }
  }
  return reads;
}

std::vector<std::vector<PageRead>> split_page_reads(const std::vector<PageRead>& reads, unsigned parts) {
  uint64_t total = 0;
  for (auto& r : reads) total += r.len;
  parts = static_cast<unsigned>(std::clamp<uint64_t>(total / kPageSize, 1, std::max(parts, 1u)));
  // Part k ends where the bytes before it reach (k+1)/parts of the total.
  auto part_end = [&](size_t k) { return k + 1 >= parts ? total : page_up(total * (k + 1) / parts); };
  std::vector<std::vector<PageRead>> out(1);
  uint64_t done = 0;  // bytes in the parts so far
  for (PageRead r : reads) {
    while (done + r.len > part_end(out.size() - 1)) {
      uint64_t want = part_end(out.size() - 1) - done;  // < r.len, page-aligned
      if (want) {
        // The huge page boundary nearest the cut, if the read crosses one.
        uint64_t below = (r.dst + want) & ~(kFillHugePage - 1), above = below + kFillHugePage;
        uint64_t cut = want;
        if (below > r.dst) cut = below - r.dst;
        if (above < r.dst + r.len && (below <= r.dst || above - (r.dst + want) < (r.dst + want) - below))
          cut = above - r.dst;
        out.back().push_back({r.file, r.offset, r.dst, cut, r.populate, r.copy});
        done += cut;
        r.offset += cut;
        r.dst += cut;
        r.len -= cut;
      }
      out.emplace_back();
    }
    out.back().push_back(r);
    done += r.len;
  }
  std::erase_if(out, [](auto& part) { return part.empty(); });
  if (out.empty()) out.emplace_back();
  return out;
}

unsigned page_read_workers(uint64_t bytes) {
  if (bytes <= kOneReaderUpTo) return 1;
  return std::min({cpus_allowed(), kMostReaders, static_cast<unsigned>(bytes / (kOneReaderUpTo / 2))});
}

Status fill_pages(const ProcessImages& p, const PremapPlan& plan, std::atomic<uint64_t>* progress) {
  std::vector<bool> copy = copy_slots(p, plan, thp_always());
  ASSIGN_OR_RETURN(std::vector<PageRead> reads, plan_page_reads(p, plan, copy));
  if (reads.empty()) return {};
  ASSIGN_OR_RETURN(PageFiles files, open_page_files(p, reads));
  uint64_t total = 0;
  for (auto& r : reads) total += r.len;
  SlotCopier copier(p, plan, copy, reads);
  if (!copier)
    for (auto& r : reads) r.copy = false;
  auto parts = split_page_reads(reads, page_read_workers(total));

  std::atomic<bool> stop{false};
  std::mutex mu;
  Status first_error;
  auto run = [&](const std::vector<PageRead>& part) {
    Status st = PartReader(files, copier.fd(), progress, stop).read(part);
    if (!st) {
      std::lock_guard lock(mu);
      if (first_error) first_error = std::move(st);
      stop = true;
    }
  };
  // The parts taken in turn by this thread and by workers (start_workers:
  // signals blocked in them, as the restoring task blocks all of them before
  // it premaps; a worker that cannot be made leaves its parts to the others).
  std::atomic<size_t> next{0};
  auto take_parts = [&] {
    for (size_t k; (k = next++) < parts.size();) run(parts[k]);
  };
  std::vector<std::thread> threads;
  start_workers(threads, parts.size() > 1 ? static_cast<unsigned>(parts.size() - 1) : 0u, take_parts);
  take_parts();
  for (auto& t : threads) t.join();
  return first_error;
}

Status fill_pages_from(PageSource& source, const ProcessImages& p, const PremapPlan& plan,
                       std::atomic<uint64_t>* progress) {
  const auto& vmas = p.mm.vmas();
  pid_t pid = static_cast<pid_t>(p.entry.pid());
  constexpr uint64_t kPiece = 64ull << 20;
  for (const PageRun& r : p.page_runs) {
    auto it = std::upper_bound(vmas.begin(), vmas.end(), r.start,
                               [](uint64_t a, const img::Vma& v) { return a < v.end(); });
    for (uint64_t at = r.start; at < r.end; ++it) {
      if (it == vmas.end() || it->start() > at)
        return failf("page run {:#x}-{:#x} is not inside VMAs", r.start, r.end);
      auto idx = static_cast<size_t>(it - vmas.begin());
      uint64_t vma_end = std::min(r.end, it->end());
      if (idx < plan.lazy.size() && plan.lazy[idx]) {  // its pages come on first touch
        at = vma_end;
        continue;
      }
      for (; at < vma_end;) {
        uint64_t n = std::min(kPiece, vma_end - at);
        auto* dst = reinterpret_cast<std::byte*>(plan.slot[idx] + (at - it->start()));
        TRY(source.read(pid, at, std::span<std::byte>(dst, n)));
        if (progress) progress->fetch_add(n, std::memory_order_relaxed);
        at += n;
      }
    }
  }
  return {};
}

}  // namespace minicriu
