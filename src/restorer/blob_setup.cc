#include "restorer/blob_setup.hpp"

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include <algorithm>
#include <cstring>

#include "arch/x86_64/jump.hpp"
#include "arch/x86_64/regs_image.hpp"
#include "arch/x86_64/sigframe.hpp"
#include "base/page.hpp"
#include "proc/posix_timers.hpp"
#include "proc/process_state.hpp"
#include "proc/sched_attr.hpp"
#include "proc/seccomp.hpp"
#include "restorer_blob.h"

namespace minicriu {

static_assert(rst::kUffdioRegister == UFFDIO_REGISTER && rst::kUffdioRegisterModeMissing == UFFDIO_REGISTER_MODE_MISSING &&
              sizeof(rst::UffdRegister) == sizeof(uffdio_register));
static_assert(rst::ADV_DONTFORK == img::ADVICE_DONTFORK && rst::ADV_WIPEONFORK == img::ADVICE_WIPEONFORK &&
              rst::ADV_DONTDUMP == img::ADVICE_DONTDUMP && rst::ADV_HUGEPAGE == img::ADVICE_HUGEPAGE &&
              rst::ADV_NOHUGEPAGE == img::ADVICE_NOHUGEPAGE && rst::ADV_MERGEABLE == img::ADVICE_MERGEABLE &&
              rst::ADV_SEQUENTIAL == img::ADVICE_SEQUENTIAL && rst::ADV_RANDOM == img::ADVICE_RANDOM &&
              rst::ADV_LOCKED == img::ADVICE_LOCKED && rst::ADV_LOCKONFAULT == img::ADVICE_LOCKONFAULT &&
              rst::ADV_SEALED == img::ADVICE_SEALED,
              "the blob's advice bits are the image's");

namespace rblob = blobs::restorer;

namespace {

uint64_t align16(uint64_t v) { return (v + 15) & ~uint64_t{15}; }

uint64_t code_size() { return page_up(rblob::kSize); }
uint64_t tail_code_size() { return page_up(rblob::k_restorer_tail_end - rblob::k_restorer_tail); }

uint64_t args_size(const ProcessImages& p) {
  uint64_t n = align16(sizeof(rst::Args));
  n += align16(p.mm.vmas_size() * sizeof(rst::Vma));
  n += align16(p.core.threads_size() * sizeof(rst::Thread));
  for (auto& t : p.core.threads()) n += align16(t.pending_size() * sizeof(rst::SigInfo));
  n += align16(p.core.shared_pending_size() * sizeof(rst::SigInfo));
  n += align16(p.core.rlimits_size() * sizeof(rst::RLimit));
  n += align16(p.core.itimers_size() * sizeof(rst::ITimer));
  n += align16((4 + p.mm.vmas_size()) * sizeof(rst::Range));
  n += align16(p.mm.auxv().size());
  n += align16(p.core.seccomp_filters_size() * sizeof(rst::SeccompFilter));
  for (auto& f : p.core.seccomp_filters()) n += align16(f.program().size());
  // Filter indices: the shared ones and each thread's own, at most all of them.
  n += (1 + p.core.threads_size()) * align16(p.core.seccomp_filters_size() * sizeof(uint32_t));
  n += align16(p.core.posix_timers_size() * sizeof(rst::PosixTimer));
  return page_up(n);
}

uint64_t frame_size(const ProcessImages& p) {
  return arch::rt_sigframe_size(p.core.threads(0).xsave().size());
}

// Hands out pieces of the args page(s), which sit at their final address.
// args_size() sizes them for exactly these allocations; should it ever fall
// short (a bug), the writes land in the stacks that follow (mapped, unused
// yet) and overflowed() stops the restore before the blob runs.
class Arena {
 public:
  Arena(uint64_t base, uint64_t size) : next_(base), end_(base + size) {}
  template <typename T>
  T* alloc(size_t n) {
    uint64_t at = next_;
    next_ = align16(next_ + n * sizeof(T));
    return reinterpret_cast<T*>(at);
  }
  bool overflowed() const { return next_ > end_; }

 private:
  uint64_t next_, end_;
};

uint64_t addr(const void* p) { return reinterpret_cast<uint64_t>(p); }

Status map_fixed(uint64_t at, uint64_t size) {
  void* p = ::mmap(reinterpret_cast<void*>(at), size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (p == MAP_FAILED) return failf_errno("cannot map the restorer at {:#x}", at);
  return {};
}

void fill_specials(const BlobInputs& in, rst::Args& a) {
  const PremapPlan& plan = *in.plan;
  const proc::MapsEntry* here[3] = {in.here.has_vdso ? &in.here.vdso : nullptr,
                                    in.here.has_vvar ? &in.here.vvar : nullptr,
                                    in.here.has_vvar_vclock ? &in.here.vvar_vclock : nullptr};
  const img::VmaKind kinds[3] = {img::VMA_VDSO, img::VMA_VVAR, img::VMA_VVAR_VCLOCK};
  for (int i = 0; i < 3; i++) {
    if (!here[i]) continue;
    for (auto& v : in.process->mm.vmas()) {
      if (v.kind() != kinds[i]) continue;
      rst::Special& s = a.specials[a.n_specials++];
      s.cur = here[i]->start;
      s.size = here[i]->end - here[i]->start;
      s.scratch = plan.special_scratch[i];
      s.dest = v.start();
    }
  }
}

// The dumped credentials, to apply only where they differ from the restoring
// process's own (a root tree restored by root changes nothing).
void fill_creds(const img::Creds& dumped, rst::Creds& out) {
  out = {};
  if (dumped.uids_size() != 4 || dumped.gids_size() != 4) return;  // not recorded
  for (int i = 0; i < 4; i++) {
    out.uids[i] = dumped.uids(i);
    out.gids[i] = dumped.gids(i);
  }
  out.n_groups = static_cast<uint32_t>(std::min<int>(dumped.groups_size(), rst::kMaxGroups));
  for (uint32_t i = 0; i < out.n_groups; i++) out.groups[i] = dumped.groups(static_cast<int>(i));
  out.cap_inh = dumped.cap_inh();
  out.cap_prm = dumped.cap_prm();
  out.cap_eff = dumped.cap_eff();
  out.cap_bnd = dumped.cap_bnd();
  out.cap_amb = dumped.cap_amb();
  out.securebits = dumped.securebits();
  img::Creds mine;
  if (!dump_creds(::getpid(), mine)) {
    out.apply = 1;
    return;
  }
  mine.set_securebits(static_cast<uint32_t>(::prctl(PR_GET_SECUREBITS)));
  mine.set_no_new_privs(dumped.no_new_privs());
  out.apply = mine.SerializeAsString() != dumped.SerializeAsString();
}

Status fill_seccomp(const ProcessImages& p, Arena& arena, rst::Args& a, rst::Thread* threads) {
  if (!has_seccomp(p.core)) return {};
  ASSIGN_OR_RETURN(SeccompPlan plan, with_context(plan_seccomp(p.core), fmt::format("pid {}", p.entry.pid())));
  auto* filters = arena.alloc<rst::SeccompFilter>(p.core.seccomp_filters_size());
  for (auto& f : p.core.seccomp_filters()) {
    auto* prog = arena.alloc<uint8_t>(f.program().size());
    std::memcpy(prog, f.program().data(), f.program().size());
    filters[a.n_filters++] = {addr(prog), static_cast<uint32_t>(f.program().size() / 8), f.flags()};
  }
  a.filters = addr(filters);
  auto* shared = arena.alloc<uint32_t>(plan.shared.size());
  for (uint32_t i : plan.shared) shared[a.n_shared_filters++] = i;
  a.shared_filters = addr(shared);
  for (int i = 0; i < p.core.threads_size(); i++) {
    rst::Thread& t = threads[i];
    t.seccomp_mode = p.core.threads(i).seccomp_mode();
    auto* own = arena.alloc<uint32_t>(plan.own[i].size());
    for (uint32_t f : plan.own[i]) own[t.n_filters++] = f;
    t.filters = addr(own);
  }
  return {};
}

void fill_thread_timers(const ProcessImages& p, Arena& arena, rst::Args& a) {
  auto* timers = arena.alloc<rst::PosixTimer>(p.core.posix_timers_size());
  for (auto& t : p.core.posix_timers()) {
    if (!notifies_another_thread(t, static_cast<pid_t>(p.entry.pid()))) continue;
    constexpr uint64_t ns = 1000000000ull;
    timers[a.n_timers++] = {t.id(), t.clock_id(), t.signo(), static_cast<int32_t>(t.notify()),
                            static_cast<int32_t>(t.notify_tid()), 0, t.sigev_value(),
                            static_cast<int64_t>(t.interval_ns() / ns), static_cast<int64_t>(t.interval_ns() % ns),
                            static_cast<int64_t>(t.value_ns() / ns), static_cast<int64_t>(t.value_ns() % ns)};
  }
  a.timers = addr(timers);
}

}  // namespace

BlobSizes blob_sizes(const ProcessImages& p) {
  BlobSizes s;
  s.blob = code_size() + args_size(p) + p.core.threads_size() * rst::kBlobStackSize;
  s.tail = page_up(tail_code_size() + p.core.threads_size() * frame_size(p));
  return s;
}

Result<BlobJump> install_blob(const BlobInputs& in) {
  const ProcessImages& p = *in.process;
  const PremapPlan& plan = *in.plan;
  BlobSizes sizes = blob_sizes(p);
  TRY(map_fixed(plan.blob, sizes.blob));
  TRY(map_fixed(plan.tail, sizes.tail));
  std::memcpy(reinterpret_cast<void*>(plan.blob), rblob::kBytes, rblob::kSize);

  uint64_t args_at = plan.blob + code_size();
  Arena arena(args_at, args_size(p));
  auto* a = arena.alloc<rst::Args>(1);
  std::memset(a, 0, sizeof(*a));
  a->magic = rst::kArgsMagic;
  a->version = rst::kArgsVersion;
  a->sock_fd = in.channel_fd;
  a->exe_fd = in.exe_fd;
  a->pid = p.entry.pid();
  // The root's parent is minicriu, not the one it had: a death signal of its
  // would fire when minicriu exits (restore -d), so only the processes whose
  // parents come back with them get theirs.
  a->pdeathsig = in.root ? 0 : static_cast<int32_t>(p.core.prctl().pdeathsig());
  fill_creds(p.core.creds(), a->creds);

  auto* vmas = arena.alloc<rst::Vma>(p.mm.vmas_size());
  for (int i = 0; i < p.mm.vmas_size(); i++) {
    const img::Vma& v = p.mm.vmas(i);
    uint32_t lazy = i < static_cast<int>(plan.lazy.size()) && plan.lazy[i] ? 1 : 0;
    if (plan.slot[i]) {  // lazy: shared memory, registered once moved
      vmas[a->n_vmas++] = rst::Vma{plan.slot[i], v.start(), v.end() - v.start(), v.prot(), 0, v.advice(), lazy};
    } else if (v.kind() == img::VMA_ANON_PRIVATE) {  // no pages: mapped fresh by the blob
      uint32_t flags = MAP_PRIVATE | MAP_ANONYMOUS | (v.flags() & MAP_GROWSDOWN) |
                       ((v.advice() & img::ADVICE_NORESERVE) ? MAP_NORESERVE : 0);
      vmas[a->n_vmas++] = rst::Vma{0, v.start(), v.end() - v.start(), v.prot(), flags, v.advice(), lazy};
    }
  }
  a->vmas = addr(vmas);

  fill_specials(in, *a);
  auto* keep = arena.alloc<rst::Range>(4 + p.mm.vmas_size());
  keep[a->n_keep++] = {plan.base, plan.end};
  // Inherited slots lie in the parent's area: they must survive the first
  // unmap until they move to their addresses.
  for (int i = 0; i < p.mm.vmas_size(); i++)
    if (plan.inherited[i])
      keep[a->n_keep++] = {plan.slot[i], plan.slot[i] + (p.mm.vmas(i).end() - p.mm.vmas(i).start())};
  for (uint32_t i = 0; i < a->n_specials; i++)
    keep[a->n_keep++] = {a->specials[i].cur, a->specials[i].cur + a->specials[i].size};
  std::sort(keep, keep + a->n_keep, [](auto& x, auto& y) { return x.start < y.start; });
  a->keep = addr(keep);

  for (auto& s : p.core.sigactions())
    a->sigactions[s.signo() - 1] = {s.handler(), s.flags(), s.restorer(), s.mask()};
  auto* timers = arena.alloc<rst::ITimer>(p.core.itimers_size());
  for (auto& t : p.core.itimers()) {
    timers[a->n_itimers++] = {t.which(), 0, static_cast<int64_t>(t.interval_us() / 1000000),
                              static_cast<int64_t>(t.interval_us() % 1000000),
                              static_cast<int64_t>(t.value_us() / 1000000),
                              static_cast<int64_t>(t.value_us() % 1000000)};
  }
  a->itimers = addr(timers);
  auto* limits = arena.alloc<rst::RLimit>(in.rlimits.size());
  for (auto& l : in.rlimits) limits[a->n_rlimits++] = l;
  a->rlimits = addr(limits);
  auto* shared = arena.alloc<rst::SigInfo>(p.core.shared_pending_size());
  for (auto& s : p.core.shared_pending())
    std::memcpy(shared[a->n_shared_pending++].raw, s.raw().data(), sizeof(rst::SigInfo));
  a->shared_pending = addr(shared);

  const img::MmCore& mm = p.mm;
  a->mm = {mm.start_code(), mm.end_code(), mm.start_data(), mm.end_data(), mm.start_brk(), mm.brk(),
           mm.start_stack(), mm.arg_start(), mm.arg_end(), mm.env_start(), mm.env_end(), 0, 0,
           static_cast<uint32_t>(in.exe_fd)};
  if (!mm.auxv().empty()) {
    auto* auxv = arena.alloc<uint8_t>(mm.auxv().size());
    std::memcpy(auxv, mm.auxv().data(), mm.auxv().size());
    a->mm.auxv = addr(auxv);
    a->mm.auxv_size = static_cast<uint32_t>(mm.auxv().size());
  }

  // Threads: stacks after the args, frames in the tail after its code.
  auto* threads = arena.alloc<rst::Thread>(p.core.threads_size());
  uint64_t stacks = args_at + args_size(p);
  uint64_t frames = plan.tail + tail_code_size();
  for (int i = 0; i < p.core.threads_size(); i++) {
    const img::ThreadCore& tc = p.core.threads(i);
    rst::Thread& t = threads[i];
    std::memset(&t, 0, sizeof(t));
    t.tid = tc.tid();
    t.stack_top = stacks + (i + 1) * rst::kBlobStackSize;
    arch::SigframeInput fin;
    fin.regs = arch::regs_from_image(tc.regs());
    fin.sigmask = tc.blocked_signals();
    fin.altstack_sp = tc.sigaltstack().sp();
    fin.altstack_flags = tc.sigaltstack().flags();
    fin.altstack_size = tc.sigaltstack().size();
    fin.xsave = std::span(reinterpret_cast<const uint8_t*>(tc.xsave().data()), tc.xsave().size());
    uint64_t at = frames + i * frame_size(p);
    ASSIGN_OR_RETURN(auto frame, with_context(arch::build_rt_sigframe(fin, at),
                                              fmt::format("thread {}", tc.tid())));
    std::memcpy(reinterpret_cast<void*>(at), frame.bytes.data(), frame.bytes.size());
    t.sigreturn_sp = frame.sigreturn_sp;
    t.fs_base = tc.regs().fs_base();
    t.gs_base = tc.regs().gs_base();
    t.clear_child_tid = tc.clear_child_tid();
    t.robust_list = tc.robust_list();
    t.robust_list_len = tc.robust_list_len();
    if (tc.has_rseq()) {
      t.rseq_addr = tc.rseq().addr();
      t.rseq_len = tc.rseq().len();
      t.rseq_sig = tc.rseq().signature();
    }
    std::strncpy(t.comm, tc.comm().c_str(), sizeof(t.comm) - 1);
    auto* pending = arena.alloc<rst::SigInfo>(tc.pending_size());
    for (auto& s : tc.pending()) std::memcpy(pending[t.n_pending++].raw, s.raw().data(), sizeof(rst::SigInfo));
    t.pending = addr(pending);
    t.sched = sched_attr_for(tc);
  }
  TRY(fill_seccomp(p, arena, *a, threads));
  fill_thread_timers(p, arena, *a);
  a->mlockall = p.core.attrs().mlockall();
  a->uffd = in.uffd;
  if (arena.overflowed()) return fail("restorer args overflow their area (a bug in args_size)");
  a->threads = addr(threads);
  a->n_threads = static_cast<uint32_t>(p.core.threads_size());
  a->in_blob = static_cast<int32_t>(a->n_threads);
  a->premap_start = plan.base;
  a->premap_end = plan.slots_end;
  a->blob_start = plan.blob;
  a->blob_size = plan.tail - plan.blob;  // with the guard page before the tail
  a->tail = plan.tail;
  a->tail_size = sizes.tail;
  a->tail_syscall = plan.tail + (rblob::k_restorer_tail_syscall - rblob::k_restorer_tail);
  std::memcpy(reinterpret_cast<void*>(plan.tail), rblob::kBytes + rblob::k_restorer_tail,
              rblob::k_restorer_tail_end - rblob::k_restorer_tail);

  // The tail is only executed and read (rt_sigreturn reads the frames).
  if (::mprotect(reinterpret_cast<void*>(plan.tail), sizes.tail, PROT_READ | PROT_EXEC) != 0)
    return fail_errno("mprotect of the restorer tail");
  if (::mprotect(reinterpret_cast<void*>(plan.blob), code_size(), PROT_READ | PROT_EXEC) != 0)
    return fail_errno("mprotect of the restorer code");
  return BlobJump{plan.blob + rblob::k_restorer_entry, stacks + rst::kBlobStackSize, args_at};
}

void jump_to_blob(const BlobJump& j) { arch::jump_on_stack(j.entry, j.stack_top, j.args); }

}  // namespace minicriu
