#include "restorer/validate.hpp"
#include "base/page.hpp"

#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <set>

#include "arch/x86_64/sigframe.hpp"
#include "mem/page_dump.hpp"
#include "restorer/restorer_args.hpp"
#include "mem/vma.hpp"

namespace minicriu {

namespace {

// The highest user address of a 4-level-paging task (TASK_SIZE_MAX).
constexpr uint64_t kTaskSize = 0x7ffffffff000ull;


Status check_inventory(const Checkpoint& c, const MachineInfo& m) {
  const img::Inventory& inv = c.inventory;
  if (inv.page_size() != m.page_size)
    return failf("the checkpoint was taken with {}-byte pages, this machine has {}", inv.page_size(),
                 m.page_size);
  if (inv.xsave_features() != m.xcr0 || inv.xsave_size() != m.xsave_size)
    return failf("the checkpoint's CPU state (XCR0 {:#x}, xsave area {} bytes) does not match "
                 "this CPU (XCR0 {:#x}, {} bytes); restore it on a machine with the same CPU "
                 "features", inv.xsave_features(), inv.xsave_size(), m.xcr0, m.xsave_size);
  if (c.processes.empty()) return fail("pstree.img lists no process");
  if (!c.process(static_cast<pid_t>(inv.root_pid())))
    return failf("the root pid {} of the inventory is not in pstree.img", inv.root_pid());
  return {};
}

Status check_ids(const Checkpoint& c) {
  std::set<uint32_t> ids;
  for (auto& p : c.processes) {
    const auto& e = p.entry;
    if (e.pid() == 0) return fail("pstree.img lists pid 0");
    if (e.tids_size() == 0) return failf("pid {}: no thread in pstree.img", e.pid());
    if (e.tids(0) != e.pid())
      return failf("pid {}: the first thread {} is not the thread group leader", e.pid(), e.tids(0));
    for (uint32_t tid : e.tids())
      if (tid == 0 || !ids.insert(tid).second)
        return failf("pid {}: thread id {} appears twice in pstree.img", e.pid(), tid);
    bool first = &p == &c.processes.front();
    // Parents come first: the root, then each process after its parent, so
    // the tree can be created top-down.
    if (first && e.ppid() != 0) return failf("pid {}: the root has a parent ({}) in pstree.img", e.pid(), e.ppid());
    if (!first && (e.ppid() == 0 || !ids.count(e.ppid())))
      return failf("pid {}: its parent {} is not before it in the checkpoint", e.pid(), e.ppid());
    if (first && e.zombie()) return failf("pid {}: the root is a zombie", e.pid());
    if (e.zombie()) {
      const ProcessImages* parent = c.process(static_cast<pid_t>(e.ppid()));
      if (parent && parent->entry.zombie())
        return failf("pid {}: a zombie's parent {} is a zombie too", e.pid(), e.ppid());
    }
  }
  return {};
}

// What the images must be, and, for a restore (restore_limits), what this
// version can restore.
Status check_threads(const ProcessImages& p, const MachineInfo& m, bool restore_limits) {
  const auto& core = p.core;
  if (core.pid() != p.entry.pid())
    return failf("core image is of pid {}", core.pid());
  if (core.threads_size() != p.entry.tids_size())
    return failf("{} thread(s) in the core image, {} in pstree.img", core.threads_size(),
                 p.entry.tids_size());
  for (int i = 0; i < core.threads_size(); i++) {
    const img::ThreadCore& t = core.threads(i);
    if (t.tid() != p.entry.tids(i))
      return failf("thread {} of the core image is {}, pstree.img says {}", i, t.tid(),
                   p.entry.tids(i));
    if (t.xsave().size() != m.xsave_size)
      return failf("thread {}: xsave area of {} bytes, this CPU's is {}", t.tid(), t.xsave().size(),
                   m.xsave_size);
    auto xs = std::span(reinterpret_cast<const uint8_t*>(t.xsave().data()), t.xsave().size());
    TRY(with_context(arch::check_ptrace_xsave(xs, m.xcr0), fmt::format("thread {}", t.tid())));
    const auto& r = t.regs();
    if (r.cs() != 0x33 || r.ss() != 0x2b)
      return failf("thread {}: not in 64-bit user mode (cs {:#x}, ss {:#x}); 32-bit tasks are "
                   "not supported", t.tid(), r.cs(), r.ss());
    for (auto& s : t.pending())
      if (s.raw().size() != 128) return failf("thread {}: pending siginfo of {} bytes", t.tid(), s.raw().size());
    if (t.has_rseq() && t.rseq().addr() && t.rseq().len() < 32)
      return failf("thread {}: rseq area of {} bytes", t.tid(), t.rseq().len());
  }
  if (restore_limits && core.creds().groups_size() > static_cast<int>(rst::kMaxGroups))
    return failf("{} supplementary groups; at most {} are restored", core.creds().groups_size(),
                 rst::kMaxGroups);
  for (auto& s : core.shared_pending())
    if (s.raw().size() != 128) return failf("shared pending siginfo of {} bytes", s.raw().size());
  for (auto& a : core.sigactions())
    if (a.signo() < 1 || a.signo() > 64 || a.signo() == SIGKILL || a.signo() == SIGSTOP)
      return failf("sigaction for signal {}", a.signo());
  for (auto& t : core.itimers())
    if (t.which() > 2) return failf("itimer {}", t.which());
  for (auto& r : core.rlimits())
    if (r.resource() >= RLIM_NLIMITS) return failf("rlimit resource {}", r.resource());
  return {};
}

Status check_specials(const img::Vma& v, const MachineInfo& m) {
  uint64_t size = v.end() - v.start();
  uint64_t here = v.kind() == img::VMA_VDSO   ? m.vdso_size
                  : v.kind() == img::VMA_VVAR ? m.vvar_size
                                              : m.vvar_vclock_size;
  if (here != size)
    return failf("{} is {} bytes in the checkpoint and {} bytes on this kernel; restoring across "
                 "different vDSO layouts needs a vDSO proxy, which this version lacks",
                 v.path(), size, here);
  return {};
}

Status check_vmas(const Checkpoint& c, const ProcessImages& p, const MachineInfo& m) {
  const auto& vmas = p.mm.vmas();
  if (vmas.empty()) return fail("no VMA in the mm image");
  uint64_t prev_end = 0;
  bool vdso = false, vvar = false, vclock = false;
  for (auto& v : vmas) {
    auto where = fmt::format("vma {:x}-{:x} ({})", v.start(), v.end(), v.path());
    if (!page_aligned(v.start()) || !page_aligned(v.end()) || v.start() >= v.end())
      return failf("{}: not a page-aligned range", where);
    if (v.start() < prev_end) return failf("{}: overlaps the VMA before it or out of order", where);
    prev_end = v.end();
    if (!img::VmaKind_IsValid(v.kind())) return failf("{}: unknown kind {}", where, static_cast<int>(v.kind()));
    if (v.kind() == img::VMA_VSYSCALL) continue;  // the kernel's, the same everywhere
    if (v.end() > kTaskSize) return failf("{}: beyond the user address space", where);
    if (vma_is_kernel_special(v)) {
      TRY(check_specials(v, m));
      (v.kind() == img::VMA_VDSO ? vdso : v.kind() == img::VMA_VVAR ? vvar : vclock) = true;
      continue;
    }
    if (v.has_pages() && !vma_dumps_pages(v))
      return failf("{}: has pages, but its kind has none in the page image", where);
    if (v.file_id() && !c.file(v.file_id())) return failf("{}: file {} is not in files.img", where, v.file_id());
    if (v.inherited()) {
      const ProcessImages* parent = c.process(static_cast<pid_t>(p.entry.ppid()));
      bool twin = false;
      if (parent)
        for (auto& pv : parent->mm.vmas())
          twin |= pv.start() == v.start() && pv.end() == v.end() && pv.kind() == v.kind() && pv.has_pages() &&
                  pv.path() == v.path() && pv.pgoff() == v.pgoff();
      if ((v.kind() != img::VMA_ANON_PRIVATE && v.kind() != img::VMA_FILE_PRIVATE) || !twin)
        return failf("{}: shares its pages with a parent VMA that is not in the checkpoint", where);
    }
    if ((v.kind() == img::VMA_ANON_SHARED || v.kind() == img::VMA_SYSV_SHM) && !v.shmem_id())
      return failf("{}: shared memory without its object", where);
    if (v.kind() == img::VMA_FILE_PRIVATE || v.kind() == img::VMA_FILE_SHARED) {
      if (v.path().empty() || v.path()[0] != '/') return failf("{}: file mapping without a path", where);
      if (!page_aligned(v.pgoff())) return failf("{}: file offset {} is not page-aligned", where, v.pgoff());
    }
  }
  // Whatever this kernel maps must get a dumped place, or it would stay where
  // the restoring program had it.
  if ((m.vdso_size && !vdso) || (m.vvar_size && !vvar) || (m.vvar_vclock_size && !vclock))
    return fail("the checkpoint lacks a [vdso]/[vvar]/[vvar_vclock] mapping that this kernel "
                "has; it was taken on another kernel");
  if (p.mm.auxv().size() % 16 || p.mm.auxv().size() > 52 * 8)
    return failf("auxv of {} bytes", p.mm.auxv().size());
  if (p.mm.exe_file_id() && !c.file(p.mm.exe_file_id()))
    return failf("exe file {} is not in files.img", p.mm.exe_file_id());
  return {};
}

Status check_pagemap(const ProcessImages& p) {
  const auto& vmas = p.mm.vmas();
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  uint64_t pages = 0;
  for (auto& e : p.pagemap) {
    if (!page_aligned(e.vaddr()) || e.nr_pages() == 0)
      return failf("pagemap run at {:#x} of {} page(s) is malformed", e.vaddr(), e.nr_pages());
    uint64_t end = e.vaddr() + uint64_t{e.nr_pages()} * kPageSize;
    // The dump merges runs across adjacent VMAs: the run must be covered by
    // back-to-back VMAs, each of which has pages.
    if (end < e.vaddr()) return failf("pagemap run at {:#x} wraps around", e.vaddr());
    auto it = std::upper_bound(vmas.begin(), vmas.end(), e.vaddr(),
                               [](uint64_t a, const img::Vma& v) { return a < v.end(); });
    for (uint64_t at = e.vaddr(); at < end; ++it) {
      if (it == vmas.end() || it->start() > at)
        return failf("pagemap run {:#x}-{:#x} is not inside VMAs (nothing mapped at {:#x})",
                     e.vaddr(), end, at);
      if (!it->has_pages())
        return failf("pagemap run {:#x}-{:#x} lies in VMA {:x}-{:x}, which is marked without pages",
                     e.vaddr(), end, it->start(), it->end());
      at = it->end();
    }
    runs.emplace_back(e.vaddr(), end);
    if (!e.in_parent()) pages += e.nr_pages();  // the others lie in the parent images
  }
  std::sort(runs.begin(), runs.end());
  for (size_t i = 1; i < runs.size(); i++)
    if (runs[i].first < runs[i - 1].second)
      return failf("pagemap runs at {:#x} and {:#x} overlap", runs[i - 1].first, runs[i].first);
  if (p.pages_file_size != pages * kPageSize)
    return failf("{} holds {} bytes, the pagemap describes {} page(s) = {} bytes (truncated or "
                 "mismatched page image)", p.pages_path, p.pages_file_size, pages, pages * kPageSize);
  return {};
}

Status check_files(const Checkpoint& c, const ProcessImages& p, const KindSet& kinds) {
  std::set<int> fds;
  for (auto& f : p.fds) {
    // fs.nr_open cannot go above this (sysctl_nr_open_max on 64 bits).
    constexpr int kMaxFd = 1073741816;
    if (f.fd() < 0 || f.fd() >= kMaxFd || !fds.insert(f.fd()).second)
      return failf("fd {} is invalid or twice", f.fd());
    const img::FileEntry* e = c.file(f.file_id());
    if (!e) return failf("fd {}: file {} is not in files.img", f.fd(), f.file_id());
    TRY(with_context(kinds.owner(*e), fmt::format("fd {}", f.fd())));
  }
  const img::FileEntry* cwd = c.file(p.core.cwd_file_id());
  if (!cwd || !cwd->has_reg()) return failf("cwd file {} is not in files.img", p.core.cwd_file_id());
  if (p.core.root_file_id()) {
    const img::FileEntry* root = c.file(p.core.root_file_id());
    if (!root || !root->has_reg()) return failf("root file {} is not in files.img", p.core.root_file_id());
  }
  return {};
}

Status validate(const Checkpoint& c, const MachineInfo& m, const KindSet& kinds, bool restore_limits) {
  TRY(check_inventory(c, m));
  TRY(check_ids(c));
  for (auto& p : c.processes) {
    if (p.entry.zombie()) continue;  // its pstree entry is all there is
    auto ctx = fmt::format("pid {}", p.entry.pid());
    TRY(with_context(check_threads(p, m, restore_limits), ctx));
    TRY(with_context(check_vmas(c, p, m), ctx));
    TRY(with_context(check_pagemap(p), ctx));
    TRY(with_context(check_files(c, p, kinds), ctx));
  }
  return {};
}

// The machine the checkpoint describes: what its own images say of the CPU
// and the kernel's special mappings (the first process that has them).
MachineInfo machine_of(const Checkpoint& c) {
  MachineInfo m;
  m.page_size = c.inventory.page_size();
  m.xcr0 = c.inventory.xsave_features();
  m.xsave_size = c.inventory.xsave_size();
  for (auto& p : c.processes) {
    bool any = false;
    for (auto& v : p.mm.vmas()) {
      uint64_t size = v.end() - v.start();
      if (v.kind() == img::VMA_VDSO) m.vdso_size = size, any = true;
      if (v.kind() == img::VMA_VVAR) m.vvar_size = size, any = true;
      if (v.kind() == img::VMA_VVAR_VCLOCK) m.vvar_vclock_size = size, any = true;
    }
    if (any) break;
  }
  return m;
}

}  // namespace

Status validate_checkpoint(const Checkpoint& c, const MachineInfo& m, const KindSet& kinds) {
  return validate(c, m, kinds, true);
}

Status validate_images(const Checkpoint& c, const KindSet& kinds) {
  return validate(c, machine_of(c), kinds, false);
}

}  // namespace minicriu
