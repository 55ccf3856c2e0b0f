#include "restorer/premap.hpp"
#include "base/page.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <algorithm>
#include <set>

#include "base/unique_fd.hpp"
#include "mem/vma.hpp"

namespace minicriu {

namespace {

constexpr uint64_t kGap = kPageSize;            // keeps neighbouring slots from merging
constexpr uint64_t kMargin = 16ull << 20;   // room around others' mappings (stack guard gaps)
constexpr uint64_t kLowest = 1ull << 32;    // stay clear of low, non-PIE layouts
constexpr uint64_t kHighest = 0x7ffffffff000ull - kMargin;

constexpr uint64_t kHugePage = 2ull << 20;

// Anonymous memory the target had transparent huge pages for (MADV_HUGEPAGE,
// smaps "hg"): its slot is filled with huge pages, and placed at the same
// offset in a huge page as its VMA, so that moving it into place moves them
// whole.
bool wants_huge_pages(const img::Vma& v) {
  return v.kind() == img::VMA_ANON_PRIVATE && (v.advice() & img::ADVICE_HUGEPAGE) &&
         v.end() - v.start() >= kHugePage;
}


// The highest address at which `size` bytes fit between the busy ranges.
Result<uint64_t> find_hole(std::vector<AddrRange> busy, uint64_t size) {
  for (auto& r : busy) {
    r.start = r.start > kMargin ? r.start - kMargin : 0;
    r.end = r.end + kMargin;
  }
  std::sort(busy.begin(), busy.end(), [](auto& a, auto& b) { return a.start < b.start; });
  std::vector<AddrRange> holes;
  uint64_t cur = kLowest;
  for (auto& r : busy) {
    if (cur >= kHighest) break;
    if (r.start > cur) holes.push_back({cur, std::min(r.start, kHighest)});
    cur = std::max(cur, r.end);
  }
  if (cur < kHighest) holes.push_back({cur, kHighest});
  for (auto h = holes.rbegin(); h != holes.rend(); ++h)
    if (h->end - h->start >= size) return page_down(h->end - size);
  return failf("no hole of {} MiB is free both in this program and in the dumped layout",
               size >> 20);
}

}  // namespace

namespace {
// A lazy VMA the blob maps fresh at its address (anonymous private memory):
// no slot. A lazy shared mapping waits in its slot like any other.
bool lazy_in_place(const img::Vma& v, const std::vector<bool>& lazy, int i) {
  return static_cast<size_t>(i) < lazy.size() && lazy[i] && v.kind() == img::VMA_ANON_PRIVATE;
}
}  // namespace

bool needs_slot(const img::Vma& v) {
  if (vma_is_kernel_special(v)) return false;
  return !(v.kind() == img::VMA_ANON_PRIVATE && !v.has_pages());
}

std::vector<bool> lazy_vmas(const Checkpoint& c, const ProcessImages& p, const LazyShmemPlan& shmem) {
  std::vector<bool> lazy(p.mm.vmas_size(), false);
  std::set<uint64_t> inherited_by_child;
  for (auto& child : c.processes)
    if (child.entry.ppid() == p.entry.pid())
      for (auto& v : child.mm.vmas())
        if (v.inherited()) inherited_by_child.insert(v.start());
  for (int i = 0; i < p.mm.vmas_size(); i++) {
    const img::Vma& v = p.mm.vmas(i);
    lazy[i] = v.kind() == img::VMA_ANON_PRIVATE && v.has_pages() && !v.inherited() &&
              !(v.advice() & (img::ADVICE_LOCKED | img::ADVICE_LOCKONFAULT)) && !inherited_by_child.count(v.start());
    if (maps_lazy_shmem(v, shmem)) lazy[i] = true;
  }
  return lazy;
}

Result<PremapPlan> plan_premap(const img::MmCore& mm, const std::vector<AddrRange>& busy_here,
                               const PremapSizes& sizes, const InheritedSlots& inherited,
                               const std::vector<bool>& lazy) {
  PremapPlan plan;
  std::vector<AddrRange> busy = busy_here;
  uint64_t total = 0;
  plan.lazy.assign(mm.vmas_size(), false);
  for (size_t i = 0; i < lazy.size() && i < plan.lazy.size(); i++) plan.lazy[i] = lazy[i];
  for (int i = 0; i < mm.vmas_size(); i++) {
    const img::Vma& v = mm.vmas(i);
    if (v.kind() != img::VMA_VSYSCALL) busy.push_back({v.start(), v.end()});
    if (v.inherited() && !inherited.count(v.start()))
      return failf("VMA {:x}-{:x} shares its pages with the parent, whose copy is missing", v.start(), v.end());
    if (needs_slot(v) && !v.inherited() && !lazy_in_place(v, plan.lazy, i))
      total += v.end() - v.start() + kGap + (wants_huge_pages(v) ? kHugePage : 0);
  }
  for (uint64_t s : sizes.specials) total += s ? s + kGap : 0;
  total += page_up(sizes.blob) + kGap + page_up(sizes.tail);
  ASSIGN_OR_RETURN(plan.base, find_hole(std::move(busy), total));
  plan.end = plan.base + total;

  uint64_t at = plan.base;
  for (int i = 0; i < mm.vmas_size(); i++) {
    const img::Vma& v = mm.vmas(i);
    plan.inherited.push_back(v.inherited());
    if (v.inherited()) {
      plan.slot.push_back(inherited.at(v.start()));
      continue;
    }
    if (!needs_slot(v) || lazy_in_place(v, plan.lazy, i)) {
      plan.slot.push_back(0);
      continue;
    }
    if (wants_huge_pages(v)) at += (v.start() - at) & (kHugePage - 1);
    plan.slot.push_back(at);
    at += v.end() - v.start() + kGap;
  }
  for (int i = 0; i < 3; i++) {
    if (!sizes.specials[i]) continue;
    plan.special_scratch[i] = at;
    at += sizes.specials[i] + kGap;
  }
  plan.slots_end = at;
  plan.blob = at;
  at += page_up(sizes.blob) + kGap;
  plan.tail = at;
  return plan;
}

namespace {

// An fd on the same file with another access mode (O_RDONLY, O_RDWR): a new
// open file description through /proc/self/fd, so fd's own stays as it was.
Result<UniqueFd> with_access(UniqueFd fd, int access, const std::string& what) {
  int fl = ::fcntl(fd.get(), F_GETFL);
  if (fl < 0) return failf_errno("{}: F_GETFL", what);
  if ((fl & O_ACCMODE) == access) return fd;
  UniqueFd again(::open(fmt::format("/proc/self/fd/{}", fd.get()).c_str(), access | O_CLOEXEC));
  if (!again) return failf_errno("{}: cannot reopen it {}", what, access == O_RDWR ? "read-write" : "read-only");
  return again;
}

// The file a mapping maps: its (ghost) file entry, or its path. A shared
// mapping has VM_MAYWRITE if and only if its file was opened for writing:
// opened the same way here, mprotect() allows and refuses what it did.
Result<UniqueFd> open_mapped_file(const Checkpoint& c, const img::Vma& v, bool writes, const KindSet& kinds) {
  int access = writes ? O_RDWR : O_RDONLY;
  if (v.file_id()) {
    const img::FileEntry* entry = c.file(v.file_id());
    if (!entry) return failf("file {} is not in files.img", v.file_id());
    ASSIGN_OR_RETURN(UniqueFd fd, kinds.open(*entry));
    if (v.kind() != img::VMA_FILE_SHARED) return fd;
    return with_access(std::move(fd), access, v.path());
  }
  UniqueFd fd(::open(v.path().c_str(), access | O_CLOEXEC));
  if (!fd) return failf_errno("cannot open {}", v.path());
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return failf_errno("cannot stat {}", v.path());
  if (v.ino() && st.st_ino != v.ino())
    return failf("{} is another file than the one mapped at the dump (inode {}, was {})",
                 v.path(), st.st_ino, v.ino());
  return fd;
}

Status map_slot(const Checkpoint& c, const img::Vma& v, uint64_t slot, const KindSet& kinds) {
  uint64_t size = v.end() - v.start();
  int growsdown = (v.flags() & MAP_GROWSDOWN) ? MAP_GROWSDOWN : 0;
  void* want = reinterpret_cast<void*>(slot);
  bool shared = v.kind() != img::VMA_FILE_PRIVATE && v.kind() != img::VMA_ANON_PRIVATE;
  // Private slots are written by fill_pages (copy-on-write over the file);
  // shared ones get their final protection now: their data is the object's.
  int prot = shared ? static_cast<int>(v.prot()) : PROT_READ | PROT_WRITE;
  if (Kind* kind = kinds.mapper(v)) return kind->map(v, want, prot);
  void* got = MAP_FAILED;
  switch (v.kind()) {
    case img::VMA_ANON_PRIVATE:
      got = ::mmap(want, size, prot,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | growsdown |
                       ((v.advice() & img::ADVICE_NORESERVE) ? MAP_NORESERVE : 0),
                   -1, 0);
      break;
    case img::VMA_FILE_PRIVATE:
    case img::VMA_FILE_SHARED: {
      bool writes = shared && !v.no_may_write();
      ASSIGN_OR_RETURN(UniqueFd fd, open_mapped_file(c, v, writes, kinds));
      got = ::mmap(want, size, prot, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, fd.get(),
                   static_cast<off_t>(v.pgoff()));
      break;
    }
    default:
      return failf("vma kind {} cannot be premapped", static_cast<int>(v.kind()));
  }
  if (got == MAP_FAILED) return failf_errno("cannot premap {} bytes", size);
  // Filled with huge pages where the target had them: a fault per 2 MiB,
  // not per 4 KiB (THP in madvise mode takes them only so).
  if (wants_huge_pages(v) && ::madvise(want, size, MADV_HUGEPAGE) != 0)
    return failf_errno("madvise(MADV_HUGEPAGE) of {} bytes", size);
  return {};
}

}  // namespace

Result<Mapping> premap_vmas(const Checkpoint& c, const ProcessImages& p, const PremapPlan& plan,
                            const KindSet& kinds) {
  void* base = ::mmap(reinterpret_cast<void*>(plan.base), plan.end - plan.base, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
  if (base == MAP_FAILED)
    return failf_errno("cannot reserve the premap area {:#x}-{:#x}", plan.base, plan.end);
  Mapping area(base, plan.end - plan.base);
  for (int i = 0; i < p.mm.vmas_size(); i++) {
    const img::Vma& v = p.mm.vmas(i);
    if (!plan.slot[i] || plan.inherited[i]) continue;  // an inherited slot is mapped already
    TRY(with_context(map_slot(c, v, plan.slot[i], kinds),
                     fmt::format("vma {:x}-{:x} ({})", v.start(), v.end(), v.path())));
  }
  return area;
}

}  // namespace minicriu
