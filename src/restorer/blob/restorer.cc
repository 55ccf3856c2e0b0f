// The restorer blob: the last stage of restoring one process, run by the task
// being restored once minicriu has opened its files and premapped its memory.
// It removes minicriu from the address space, moves the premapped VMAs and the
// kernel's vDSO to their dumped addresses, sets the mm fields, sigactions,
// timers and limits, creates the threads with their TIDs, and every thread
// rt_sigreturns into its dumped registers and xsave state.
//
// Freestanding: no libc, no relocations, no vector registers (the xsave state
// the frames carry must be the only FPU state that counts). Everything it needs
// is in rst::Args (restorer_args.hpp), written by the host at absolute addresses.
#include "common/blob/syscall.h"
#include "restorer/restorer_args.hpp"

using namespace minicriu::rst;

extern "C" {
// gcc may emit calls to these even in freestanding code.
__attribute__((used)) void* memcpy(void* d, const void* s, unsigned long n) { return mc_memcpy(d, s, n); }
__attribute__((used)) void* memset(void* d, int c, unsigned long n) { return mc_memset(d, c, n); }
long mc_clone3_thread(void* args, unsigned long size, void (*fn)(Args*, unsigned long), Args* a,
                      unsigned long index);
[[noreturn]] void mc_jump_tail(uint64_t tail, uint64_t sigreturn_sp, int32_t* in_blob,
                               uint64_t blob_start, uint64_t blob_size);
}

namespace {

constexpr unsigned long kTaskSize = 0x7ffffffff000ul;
constexpr long kMremapMaymove = 1, kMremapFixed = 2;
constexpr long kMapFixed = 0x10;
constexpr long kFutexWait = 0, kFutexWake = 1;
constexpr long kPrSetName = 15, kPrSetPdeathsig = 1, kPrSetMm = 35, kPrSetMmMap = 14;
constexpr long kArchSetGs = 0x1001, kArchSetFs = 0x1002;
constexpr unsigned long kCloneThreadFlags = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000;
// CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM

struct CloneArgs {
  uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
  uint64_t set_tid, set_tid_size, cgroup;
};

// --- error text: literal words and numbers, first error wins -----------------

struct Text {
  char* p;
  char* end;
  void str(const char* s) {
    while (*s && p < end) *p++ = *s++;
  }
  void hex(uint64_t v) {
    str("0x");
    char buf[16];
    int n = 0;
    do buf[n++] = "0123456789abcdef"[v & 15], v >>= 4; while (v);
    while (n && p < end) *p++ = buf[--n];
  }
  void dec(uint64_t v) {
    char buf[20];
    int n = 0;
    do buf[n++] = static_cast<char>('0' + v % 10), v /= 10; while (v);
    while (n && p < end) *p++ = buf[--n];
  }
};

// Records "what <value>" with the errno of ret (a negative syscall result).
void set_error(Args* a, const char* what, uint64_t value, long ret, bool hex = true) {
  if (__atomic_exchange_n(&a->failed, 1, __ATOMIC_SEQ_CST)) return;
  Text t{a->error.text, a->error.text + sizeof(a->error.text) - 1};
  t.str("pid ");
  t.dec(a->pid);
  t.str(": restorer: ");
  t.str(what);
  t.str(" ");
  if (hex) t.hex(value); else t.dec(value);
  *t.p = 0;
  a->error.type = MSG_ERROR;
  a->error.err = ret < 0 ? static_cast<int32_t>(-ret) : 0;
}

[[noreturn]] void die(Args* a) {
  mc_syscall3(MC_NR_write, a->sock_fd, reinterpret_cast<long>(&a->error), sizeof(a->error));
  for (;;) mc_syscall1(MC_NR_exit_group, 1);
}

// The leader's checks: report and stop on the first failure.
void check(Args* a, long ret, const char* what, uint64_t value) {
  if (ret < 0) {
    set_error(a, what, value, ret);
    die(a);
  }
}

void futex_wait(int32_t* word, int32_t val) {
  mc_syscall6(MC_NR_futex, reinterpret_cast<long>(word), kFutexWait, val, 0, 0, 0);
}
void futex_wake(int32_t* word) {
  mc_syscall6(MC_NR_futex, reinterpret_cast<long>(word), kFutexWake, 0x7fffffff, 0, 0, 0);
}

// --- the process: memory, mm, signals, timers, limits --------------------------

void unmap_restoring_program(Args* a) {
  const Range* keep = reinterpret_cast<const Range*>(a->keep);
  uint64_t from = 0;
  for (uint32_t i = 0; i < a->n_keep; i++) {
    if (keep[i].start > from) check(a, mc_syscall2(MC_NR_munmap, from, keep[i].start - from), "munmap at", from);
    if (keep[i].end > from) from = keep[i].end;
  }
  if (from < kTaskSize) check(a, mc_syscall2(MC_NR_munmap, from, kTaskSize - from), "munmap at", from);
}

long move(uint64_t from, uint64_t size, uint64_t to) {
  long r = mc_syscall5(MC_NR_mremap, from, size, size, kMremapMaymove | kMremapFixed, to);
  return r < 0 ? r : (static_cast<uint64_t>(r) == to ? 0 : -14);
}

// The advice the VMA had, now that it is at its address. madvise advice
// values are the kernel's (include/uapi/asm-generic/mman-common.h).
void restore_advice(Args* a, const Vma& v) {
  struct Pair {
    uint32_t bit;
    long advice;
  };
  static constexpr Pair kAdvice[] = {
      {ADV_DONTFORK, 10}, {ADV_WIPEONFORK, 18}, {ADV_DONTDUMP, 16}, {ADV_HUGEPAGE, 14},
      {ADV_NOHUGEPAGE, 15}, {ADV_MERGEABLE, 12}, {ADV_SEQUENTIAL, 2}, {ADV_RANDOM, 1},
  };
  for (const Pair& p : kAdvice)
    if (v.advice & p.bit) check(a, mc_syscall3(MC_NR_madvise, v.start, v.size, p.advice), "madvise of VMA", v.start);
  // mlock faults every page in; MLOCK_ONFAULT (1) only those touched. As
  // root (CAP_IPC_LOCK) RLIMIT_MEMLOCK does not count; the dumped limits are
  // set after this.
  if (v.advice & ADV_LOCKONFAULT)
    check(a, mc_syscall3(MC_NR_mlock2, v.start, v.size, 1), "mlock2(MLOCK_ONFAULT) of VMA", v.start);
  else if (v.advice & ADV_LOCKED)
    check(a, mc_syscall2(MC_NR_mlock, v.start, v.size), "mlock of VMA", v.start);
}

void restore_memory(Args* a) {
  unmap_restoring_program(a);
  // The kernel's mappings may sit where a dumped VMA goes: out of the way first.
  for (uint32_t i = 0; i < a->n_specials; i++) {
    Special& s = a->specials[i];
    check(a, move(s.cur, s.size, s.scratch), "mremap of a vdso/vvar mapping to", s.scratch);
  }
  const Vma* vmas = reinterpret_cast<const Vma*>(a->vmas);
  for (uint32_t i = 0; i < a->n_vmas; i++) {
    const Vma& v = vmas[i];
    if (!v.premap) {
      long r = mc_syscall6(MC_NR_mmap, v.start, v.size, v.prot, v.flags | kMapFixed, -1, 0);
      check(a, r < 0 ? r : (static_cast<uint64_t>(r) == v.start ? 0 : -14), "mmap of VMA at", v.start);
    } else {
      check(a, move(v.premap, v.size, v.start), "mremap of a premapped VMA to", v.start);
      check(a, mc_syscall3(MC_NR_mprotect, v.start, v.size, v.prot), "mprotect of VMA", v.start);
    }
    // Registered at its address: a mremap after would be an event.
    if (v.lazy && a->uffd >= 0) {
      UffdRegister reg{v.start, v.size, kUffdioRegisterModeMissing, 0};
      check(a, mc_syscall3(MC_NR_ioctl, a->uffd, kUffdioRegister, reinterpret_cast<long>(&reg)),
            "UFFDIO_REGISTER of the lazy VMA at", v.start);
    }
    restore_advice(a, v);
  }
  for (uint32_t i = 0; i < a->n_specials; i++) {
    Special& s = a->specials[i];
    check(a, move(s.scratch, s.size, s.dest), "mremap of a vdso/vvar mapping to", s.dest);
  }
  check(a, mc_syscall2(MC_NR_munmap, a->premap_start, a->premap_end - a->premap_start),
        "munmap of the premap area at", a->premap_start);
  // The lazy pager holds its own copy: the process keeps none.
  if (a->uffd >= 0) mc_syscall1(MC_NR_close, a->uffd);
  // Sealed last: a sealed VMA can be neither moved nor changed (mseal, 6.10).
  for (uint32_t i = 0; i < a->n_vmas; i++)
    if (vmas[i].advice & ADV_SEALED)
      check(a, mc_syscall3(MC_NR_mseal, vmas[i].start, vmas[i].size, 0), "mseal of VMA", vmas[i].start);
}

void restore_process_state(Args* a) {
  // Needs no CAP_SYS_RESOURCE; the exe link needs CAP_CHECKPOINT_RESTORE, and
  // the kernel only lets it change once no mapping of the old exe is left.
  check(a, mc_syscall5(MC_NR_prctl, kPrSetMm, kPrSetMmMap, reinterpret_cast<long>(&a->mm),
                       sizeof(a->mm), 0),
        "prctl(PR_SET_MM_MAP) with start_code", a->mm.start_code);
  if (a->exe_fd >= 0) mc_syscall1(MC_NR_close, a->exe_fd);
  for (uint32_t sig = 1; sig <= kMaxSignal; sig++) {
    if (sig == 9 || sig == 19) continue;  // SIGKILL, SIGSTOP
    long r = mc_syscall4(MC_NR_rt_sigaction, sig, reinterpret_cast<long>(&a->sigactions[sig - 1]), 0, 8);
    if (r < 0) {
      set_error(a, "rt_sigaction of signal", sig, r, false);
      die(a);
    }
  }
  const ITimer* timers = reinterpret_cast<const ITimer*>(a->itimers);
  for (uint32_t i = 0; i < a->n_itimers; i++)
    check(a, mc_syscall3(MC_NR_setitimer, timers[i].which,
                         reinterpret_cast<long>(&timers[i].interval_sec), 0),
          "setitimer", timers[i].which);
}

// Last of the process-wide state: lowered limits (RLIMIT_NPROC, RLIMIT_AS...)
// must not get in the way of creating the threads.
void restore_rlimits(Args* a) {
  const RLimit* limits = reinterpret_cast<const RLimit*>(a->rlimits);
  for (uint32_t i = 0; i < a->n_rlimits; i++)
    check(a, mc_syscall4(MC_NR_prlimit64, 0, limits[i].resource,
                         reinterpret_cast<long>(&limits[i].cur), 0),
          "prlimit of resource", limits[i].resource);
}

// --- each thread ---------------------------------------------------------------

// Per-thread kernel state; errors are recorded, the leader reports them.
void restore_thread_state(Args* a, const Thread* t) {
  long r;
  mc_syscall1(MC_NR_set_tid_address, t->clear_child_tid);
  if (t->robust_list &&
      (r = mc_syscall2(MC_NR_set_robust_list, t->robust_list, t->robust_list_len)) < 0)
    set_error(a, "set_robust_list of thread", t->tid, r, false);
  if ((r = mc_syscall2(MC_NR_arch_prctl, kArchSetFs, t->fs_base)) < 0)
    set_error(a, "ARCH_SET_FS of thread", t->tid, r, false);
  if (t->gs_base && (r = mc_syscall2(MC_NR_arch_prctl, kArchSetGs, t->gs_base)) < 0)
    set_error(a, "ARCH_SET_GS of thread", t->tid, r, false);
  mc_syscall2(MC_NR_prctl, kPrSetName, reinterpret_cast<long>(t->comm));
  // Before the credentials: a lower nice or a real-time policy needs CAP_SYS_NICE.
  if (t->sched.size &&
      (r = mc_syscall3(MC_NR_sched_setattr, 0, reinterpret_cast<long>(&t->sched), 0)) < 0)
    set_error(a, "sched_setattr of thread", t->tid, r, false);
  if (t->rseq_addr &&
      (r = mc_syscall4(MC_NR_rseq, t->rseq_addr, t->rseq_len, 0, t->rseq_sig)) < 0)
    set_error(a, "rseq registration of thread", t->tid, r, false);
  // Every signal is blocked until rt_sigreturn sets the dumped mask, so these
  // stay queued, as they were at the dump.
  const SigInfo* pending = reinterpret_cast<const SigInfo*>(t->pending);
  for (uint32_t i = 0; i < t->n_pending; i++) {
    int32_t signo;
    mc_memcpy(&signo, pending[i].raw, sizeof(signo));
    r = mc_syscall4(MC_NR_rt_tgsigqueueinfo, a->pid, t->tid, signo, reinterpret_cast<long>(pending[i].raw));
    if (r < 0) set_error(a, "re-queueing a pending signal of thread", t->tid, r, false);
  }
}

// Whether this thread's supplementary groups are already c's (both lists as
// the kernel keeps them: sorted).
bool same_groups(const Creds& c) {
  uint32_t mine[kMaxGroups];
  long n = mc_syscall2(MC_NR_getgroups, kMaxGroups, reinterpret_cast<long>(mine));
  if (n != static_cast<long>(c.n_groups)) return false;
  for (long i = 0; i < n; i++)
    if (mine[i] != c.groups[i]) return false;
  return true;
}

// This thread's credentials, as dumped: the bounding set and securebits while
// CAP_SETPCAP is still ours, ids with SECBIT_KEEP_CAPS so that leaving uid 0
// keeps the capabilities to set, then the capability sets themselves. What is
// already as dumped is left alone: a user without CAP_SETPCAP or CAP_SETGID
// restoring their own process (proc/privileges.cc checked the rest) changes
// only what needs no privilege.
void restore_creds(Args* a, const Thread* t) {
  const Creds& c = a->creds;
  if (!c.apply) return;
  constexpr long kPrCapbsetRead = 23, kPrCapbsetDrop = 24, kPrGetSecurebits = 27, kPrSetSecurebits = 28,
                 kPrSetKeepcaps = 8, kPrCapAmbient = 47, kAmbientRaise = 2, kAmbientClearAll = 4;
  constexpr uint32_t kSecbitKeepCaps = 1u << 4;
  long r;
  for (long cap = 0; cap < 64; cap++) {
    if (c.cap_bnd >> cap & 1) continue;
    if (mc_syscall2(MC_NR_prctl, kPrCapbsetRead, cap) != 1) continue;  // not held, or past the last cap
    if ((r = mc_syscall2(MC_NR_prctl, kPrCapbsetDrop, cap)) < 0)
      return set_error(a, "dropping a bounding capability of thread", t->tid, r, false);
  }
  long secure = mc_syscall1(MC_NR_prctl, kPrGetSecurebits);
  if (secure < 0 || (static_cast<uint32_t>(secure) & ~kSecbitKeepCaps) != (c.securebits & ~kSecbitKeepCaps)) {
    if ((r = mc_syscall2(MC_NR_prctl, kPrSetSecurebits, c.securebits | kSecbitKeepCaps)) < 0)
      return set_error(a, "securebits of thread", t->tid, r, false);
  } else if ((r = mc_syscall2(MC_NR_prctl, kPrSetKeepcaps, 1)) < 0) {
    return set_error(a, "keepcaps of thread", t->tid, r, false);
  }
  if (!same_groups(c) && (r = mc_syscall2(MC_NR_setgroups, c.n_groups, reinterpret_cast<long>(c.groups))) < 0)
    return set_error(a, "setgroups of thread", t->tid, r, false);
  if ((r = mc_syscall3(MC_NR_setresgid, c.gids[0], c.gids[1], c.gids[2])) < 0)
    return set_error(a, "setresgid of thread", t->tid, r, false);
  mc_syscall1(MC_NR_setfsgid, c.gids[3]);
  if ((r = mc_syscall3(MC_NR_setresuid, c.uids[0], c.uids[1], c.uids[2])) < 0)
    return set_error(a, "setresuid of thread", t->tid, r, false);
  mc_syscall1(MC_NR_setfsuid, c.uids[3]);
  struct { uint32_t version; int32_t pid; } header{0x20080522, 0};  // _LINUX_CAPABILITY_VERSION_3
  struct { uint32_t effective, permitted, inheritable; } data[2] = {
      {static_cast<uint32_t>(c.cap_eff), static_cast<uint32_t>(c.cap_prm), static_cast<uint32_t>(c.cap_inh)},
      {static_cast<uint32_t>(c.cap_eff >> 32), static_cast<uint32_t>(c.cap_prm >> 32),
       static_cast<uint32_t>(c.cap_inh >> 32)}};
  if ((r = mc_syscall2(MC_NR_capset, reinterpret_cast<long>(&header), reinterpret_cast<long>(data))) < 0)
    return set_error(a, "capset of thread", t->tid, r, false);
  mc_syscall5(MC_NR_prctl, kPrCapAmbient, kAmbientClearAll, 0, 0, 0);
  for (long cap = 0; cap < 64; cap++)
    if (c.cap_amb >> cap & 1) mc_syscall5(MC_NR_prctl, kPrCapAmbient, kAmbientRaise, cap, 0, 0);
  // Unprivileged, unlike securebits: drops KEEP_CAPS unless it was dumped.
  mc_syscall2(MC_NR_prctl, kPrSetKeepcaps, (c.securebits & kSecbitKeepCaps) ? 1 : 0);
}

// seccomp, last: after go, while minicriu traces every thread with
// PTRACE_O_SUSPEND_SECCOMP, so that nothing the filters forbid can stop the
// thread on its way out (futex, munmap, rt_sigreturn). Errors are recorded;
// the leader reports them and takes the process down: it never runs without
// the filters it had.
constexpr long kSeccompSetModeStrict = 0, kSeccompSetModeFilter = 1, kSeccompFlagTsync = 1;

long install_filter(Args* a, uint32_t index, long extra_flags) {
  const SeccompFilter& f = reinterpret_cast<const SeccompFilter*>(a->filters)[index];
  struct {
    uint16_t len;
    uint16_t pad[3];
    uint64_t filter;
  } prog{static_cast<uint16_t>(f.len), {0, 0, 0}, f.program};
  return mc_syscall3(MC_NR_seccomp, kSeccompSetModeFilter, f.flags | extra_flags, reinterpret_cast<long>(&prog));
}

// The leader, before it lets the threads go: the filters they all share, once.
void restore_shared_seccomp(Args* a) {
  const uint32_t* shared = reinterpret_cast<const uint32_t*>(a->shared_filters);
  for (uint32_t i = 0; i < a->n_shared_filters; i++) {
    long r = install_filter(a, shared[i], kSeccompFlagTsync);
    // TSYNC answers the tid of a thread it could not synchronise.
    if (r != 0) set_error(a, "seccomp filter (TSYNC) of the process, failing for thread", r > 0 ? r : 0, r < 0 ? r : 0, false);
  }
}

void restore_own_seccomp(Args* a, const Thread* t) {
  const uint32_t* own = reinterpret_cast<const uint32_t*>(t->filters);
  long r;
  for (uint32_t i = 0; i < t->n_filters; i++)
    if ((r = install_filter(a, own[i], 0)) != 0) set_error(a, "seccomp filter of thread", t->tid, r, false);
  if (t->seccomp_mode == 1 && (r = mc_syscall3(MC_NR_seccomp, kSeccompSetModeStrict, 0, 0)) != 0)
    set_error(a, "seccomp strict mode of thread", t->tid, r, false);
}

[[noreturn]] void resume(Args* a, const Thread* t) {
  mc_jump_tail(a->tail, t->sigreturn_sp, &a->in_blob, a->blob_start, a->blob_size);
}

extern "C" __attribute__((used)) void restorer_thread_main(Args* a, unsigned long index) {
  const Thread* t = &reinterpret_cast<const Thread*>(a->threads)[index];
  restore_thread_state(a, t);
  restore_creds(a, t);
  __atomic_add_fetch(&a->ready, 1, __ATOMIC_SEQ_CST);
  futex_wake(&a->ready);
  while (!__atomic_load_n(&a->go, __ATOMIC_SEQ_CST)) futex_wait(&a->go, 0);
  restore_own_seccomp(a, t);
  __atomic_add_fetch(&a->sealed, 1, __ATOMIC_SEQ_CST);
  futex_wake(&a->sealed);
  resume(a, t);
}

void create_threads(Args* a) {
  const Thread* threads = reinterpret_cast<const Thread*>(a->threads);
  for (uint32_t i = 1; i < a->n_threads; i++) {
    uint64_t tid = threads[i].tid;
    CloneArgs c{};
    c.flags = kCloneThreadFlags;
    c.stack = threads[i].stack_top - kBlobStackSize;
    c.stack_size = kBlobStackSize;
    c.set_tid = reinterpret_cast<uint64_t>(&tid);
    c.set_tid_size = 1;
    long r = mc_clone3_thread(&c, sizeof(c), restorer_thread_main, a, i);
    if (r < 0) {
      set_error(a, "clone3 of thread", tid, r, false);
      die(a);
    }
  }
}

// POSIX timers that notify a thread other than the leader (SIGEV_THREAD_ID):
// that thread exists now. With the ids they had (PR_TIMER_CREATE_RESTORE_IDS:
// timer_create takes the id from the timer_t it writes to).
void restore_thread_timers(Args* a) {
  if (!a->n_timers) return;
  constexpr long kPrTimerCreateRestoreIds = 77;
  check(a, mc_syscall2(MC_NR_prctl, kPrTimerCreateRestoreIds, 1), "prctl(PR_TIMER_CREATE_RESTORE_IDS)", 1);
  const PosixTimer* timers = reinterpret_cast<const PosixTimer*>(a->timers);
  for (uint32_t i = 0; i < a->n_timers; i++) {
    const PosixTimer& t = timers[i];
    struct {
      uint64_t value;
      int32_t signo;
      int32_t notify;
      int32_t tid;
      int32_t pad[11];
    } sev{t.sigev_value, t.signo, t.notify, t.tid, {}};
    static_assert(sizeof(sev) == 64);
    int32_t id = t.id;
    check(a, mc_syscall3(MC_NR_timer_create, t.clock_id, reinterpret_cast<long>(&sev), reinterpret_cast<long>(&id)),
          "timer_create of timer", static_cast<uint64_t>(t.id));
    if (id != t.id) {
      set_error(a, "timer_create gave another id than timer", static_cast<uint64_t>(t.id), -22, false);
      die(a);
    }
    if (t.value_sec || t.value_nsec)
      check(a, mc_syscall4(MC_NR_timer_settime, t.id, 0, reinterpret_cast<long>(&t.interval_sec), 0),
            "timer_settime of timer", static_cast<uint64_t>(t.id));
  }
  mc_syscall2(MC_NR_prctl, kPrTimerCreateRestoreIds, 0);
}

void wait_threads_sealed(Args* a) {
  int32_t want = static_cast<int32_t>(a->n_threads) - 1;
  for (int32_t v; (v = __atomic_load_n(&a->sealed, __ATOMIC_SEQ_CST)) != want;) futex_wait(&a->sealed, v);
}

void wait_threads_ready(Args* a) {
  int32_t want = static_cast<int32_t>(a->n_threads) - 1;
  for (int32_t v; (v = __atomic_load_n(&a->ready, __ATOMIC_SEQ_CST)) != want;) futex_wait(&a->ready, v);
}

}  // namespace

extern "C" __attribute__((used)) void restorer_main(Args* a) {
  if (a->magic != kArgsMagic || a->version != kArgsVersion) mc_syscall1(MC_NR_exit_group, 2);
  restore_memory(a);
  restore_process_state(a);
  // Every mapping of the process is in place: only what it maps from now on
  // is locked (MCL_FUTURE without MCL_CURRENT locks nothing yet).
  if (a->mlockall) check(a, mc_syscall1(MC_NR_mlockall, a->mlockall), "mlockall with flags", a->mlockall);
  create_threads(a);
  restore_thread_timers(a);
  restore_rlimits(a);
  const Thread* leader = reinterpret_cast<const Thread*>(a->threads);
  restore_thread_state(a, leader);
  const SigInfo* shared = reinterpret_cast<const SigInfo*>(a->shared_pending);
  for (uint32_t i = 0; i < a->n_shared_pending; i++) {
    int32_t signo;
    mc_memcpy(&signo, shared[i].raw, sizeof(signo));
    long r = mc_syscall3(MC_NR_rt_sigqueueinfo, a->pid, signo, reinterpret_cast<long>(shared[i].raw));
    if (r < 0) set_error(a, "re-queueing a shared pending signal", static_cast<uint64_t>(signo), r, false);
  }
  restore_creds(a, leader);
  wait_threads_ready(a);
  if (a->failed) die(a);

  Msg m{};
  m.type = MSG_READY;
  m.tail = a->tail;
  m.tail_size = a->tail_size;
  m.tail_syscall = a->tail_syscall;
  mc_syscall3(MC_NR_write, a->sock_fd, reinterpret_cast<long>(&m), sizeof(m));
  long n = mc_syscall3(MC_NR_read, a->sock_fd, reinterpret_cast<long>(&m), sizeof(m));
  if (n <= 0 || m.type != MSG_GO) mc_syscall1(MC_NR_exit_group, 1);  // the parent gave up
  // SIGKILL was set by minicriu so that a restore whose parent dies takes this
  // task along. The dumped value replaces it before the channel closes: the
  // parent may exit as soon as it sees the channel close (restore -d).
  mc_syscall2(MC_NR_prctl, kPrSetPdeathsig, a->pdeathsig);
  restore_shared_seccomp(a);
  __atomic_store_n(&a->go, 1, __ATOMIC_SEQ_CST);
  futex_wake(&a->go);
  wait_threads_sealed(a);
  restore_own_seccomp(a, leader);
  // A thread that could not get its seccomp state back must not run without
  // it: the error goes to the parent (which still reads the channel), and
  // the whole process with it.
  if (__atomic_load_n(&a->failed, __ATOMIC_SEQ_CST)) die(a);
  mc_syscall1(MC_NR_close, a->sock_fd);
  resume(a, leader);
}

// restorer_entry: the host switches to the leader's blob stack (16-byte
// aligned) with rdi = args and jumps here.
//
// mc_clone3_thread(args, size, fn, a, index): clone3 that runs fn(a, index) on
// the new thread's stack. syscall clobbers rcx and r11, so the arguments wait
// in rdx, r10 and r8, which it keeps (a clone child starts with a copy of them).
//
// restorer_tail..restorer_tail_end: copied by the host into the tail mapping,
// which holds the sigframes and outlives the blob. Entered with rdi = frame
// rsp, rsi = &in_blob, rdx/r10 = the blob's range: the thread leaves the blob's
// stack, counts itself out, and the last one out unmaps the blob (no thread
// runs its code any more), then each rt_sigreturns. The tail cannot unmap
// itself (munmap would return into nothing): the parent does it through ptrace
// from restorer_tail_syscall once every thread has left (tail_unmap.hpp).
asm(R"(
  .section .text.entry,"ax"
  .globl restorer_entry
  .hidden restorer_entry
restorer_entry:
  call restorer_main
  ud2

  .globl mc_clone3_thread
  .hidden mc_clone3_thread
mc_clone3_thread:
  mov %rcx, %r10
  mov $435, %eax
  syscall
  test %rax, %rax
  jz 1f
  ret
1:
  xor %ebp, %ebp
  mov %r10, %rdi
  mov %r8, %rsi
  call *%rdx
  ud2

  .globl mc_jump_tail
  .hidden mc_jump_tail
mc_jump_tail:
  mov %rdi, %rax
  mov %rsi, %rdi
  mov %rdx, %rsi
  mov %rcx, %rdx
  mov %r8, %r10
  jmp *%rax

  .globl restorer_tail
  .hidden restorer_tail
  .p2align 4
restorer_tail:
  mov %rdi, %rsp
  lock decl (%rsi)
  jnz 2f
  mov %rdx, %rdi
  mov %r10, %rsi
  mov $11, %eax
  syscall
2:
  mov $15, %eax
  .globl restorer_tail_syscall
  .hidden restorer_tail_syscall
restorer_tail_syscall:
  syscall
  ud2
  .globl restorer_tail_end
  .hidden restorer_tail_end
restorer_tail_end:
  .text
)");
