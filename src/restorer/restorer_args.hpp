// What the host side of a restore hands to the restorer blob, and the messages
// both send to the restoring parent. Shared by the host (C++23) and the
// freestanding blob (C++20, no libc): fixed-width types only, every size pinned
// by a static_assert so the two sides cannot drift apart.
//
// Every pointer field is an absolute address in the restored process: the host
// writes these structures straight into the blob's memory in the process that
// is being restored (itself, after clone3), at the place the blob will find them.
#pragma once

#include <stdint.h>

namespace minicriu::rst {

inline constexpr uint32_t kArgsMagic = 0x4d435253;  // "SRCM"
inline constexpr uint32_t kArgsVersion = 5;
inline constexpr uint32_t kMaxSignal = 64;
// Each thread's stack while it runs blob code (the leader's too).
inline constexpr uint64_t kBlobStackSize = 64 << 10;

// Messages on the SOCK_SEQPACKET socket between a restoring process and the
// parent: one record each way per message, read()/write() keep boundaries.
enum MsgType : uint32_t {
  MSG_READY = 1,  // child -> parent: every thread is ready to resume
  MSG_ERROR = 2,  // child -> parent: restore failed; text says why
  MSG_WARN = 3,   // child -> parent: something was restored differently
  MSG_GO = 4,     // parent -> child: resume now
};

struct Msg {
  uint32_t type;
  int32_t err;        // errno behind an error, 0 if none
  // MSG_READY: where the tail is, so the parent can unmap it once every
  // thread has left it (tail_unmap.hpp).
  uint64_t tail;
  uint64_t tail_size;
  uint64_t tail_syscall;  // a `syscall` instruction in the tail
  char text[992];     // NUL-terminated
};
static_assert(sizeof(Msg) == 1024);

// What the blob sets on a VMA once it is at its address (Vma.advice): the
// madvise advice, mlock and mseal it had. The same bits as img::VmaAdvice
// (minicriu.proto; blob_setup.cc checks they agree).
inline constexpr uint32_t ADV_DONTFORK = 1;
inline constexpr uint32_t ADV_WIPEONFORK = 2;
inline constexpr uint32_t ADV_DONTDUMP = 4;
inline constexpr uint32_t ADV_HUGEPAGE = 8;
inline constexpr uint32_t ADV_NOHUGEPAGE = 16;
inline constexpr uint32_t ADV_MERGEABLE = 32;
inline constexpr uint32_t ADV_SEQUENTIAL = 64;
inline constexpr uint32_t ADV_RANDOM = 128;
inline constexpr uint32_t ADV_LOCKED = 256;
inline constexpr uint32_t ADV_LOCKONFAULT = 512;
inline constexpr uint32_t ADV_SEALED = 1024;

// One VMA: where it waits (premap), where it goes, its final protection. A
// VMA without premap (0) is anonymous memory with no page in the image: the
// blob maps it fresh at its address, with these mmap flags. A lazy one
// (restore --lazy) is then registered with Args.uffd: its pages come on
// first touch, from the lazy pager. A lazy premapped one (a mapping of a lazy
// shared memory object) is registered once moved to its address.
struct Vma {
  uint64_t premap;
  uint64_t start;
  uint64_t size;
  uint32_t prot;
  uint32_t flags;
  uint32_t advice;  // Advice bits
  uint32_t lazy;    // 1: UFFDIO_REGISTER (MISSING) once at its address
};

// ioctl(UFFDIO_REGISTER) and its struct uffdio_register (linux/userfaultfd.h;
// blob_setup.cc checks they agree).
inline constexpr uint64_t kUffdioRegister = 0xc020aa00;
inline constexpr uint64_t kUffdioRegisterModeMissing = 1;
struct UffdRegister {
  uint64_t start;
  uint64_t len;
  uint64_t mode;
  uint64_t ioctls;
};
static_assert(sizeof(UffdRegister) == 32);
static_assert(sizeof(Vma) == 40);

// [vdso], [vvar], [vvar_vclock]: moved twice, first out of the way of the
// dumped layout (to scratch, inside the premap area), then to their dumped place.
struct Special {
  uint64_t cur;
  uint64_t scratch;
  uint64_t dest;
  uint64_t size;
};
static_assert(sizeof(Special) == 32);

struct Range {
  uint64_t start;
  uint64_t end;
};
static_assert(sizeof(Range) == 16);

// The kernel's struct sigaction for rt_sigaction (not glibc's).
struct KSigaction {
  uint64_t handler;
  uint64_t flags;
  uint64_t restorer;
  uint64_t mask;
};
static_assert(sizeof(KSigaction) == 32);

struct ITimer {
  uint32_t which;
  uint32_t pad;
  int64_t interval_sec, interval_usec, value_sec, value_usec;  // struct itimerval
};
static_assert(sizeof(ITimer) == 40);

struct RLimit {
  uint32_t resource;
  uint32_t pad;
  uint64_t cur;
  uint64_t max;
};
static_assert(sizeof(RLimit) == 24);

struct SigInfo {
  uint8_t raw[128];
};
static_assert(sizeof(SigInfo) == 128);

// The kernel's struct prctl_mm_map (include/uapi/linux/prctl.h).
struct PrctlMmMap {
  uint64_t start_code, end_code, start_data, end_data, start_brk, brk, start_stack;
  uint64_t arg_start, arg_end, env_start, env_end;
  uint64_t auxv;
  uint32_t auxv_size;
  uint32_t exe_fd;
};
static_assert(sizeof(PrctlMmMap) == 104);

// The kernel's struct sched_attr (sched_setattr(2)), SCHED_ATTR_SIZE_VER1.
struct SchedAttr {
  uint32_t size;           // 0: leave the thread's scheduling as it is
  uint32_t policy;
  uint64_t flags;
  int32_t nice;
  uint32_t priority;
  uint64_t runtime, deadline, period;
  uint32_t util_min, util_max;
};
static_assert(sizeof(SchedAttr) == 56);

// One seccomp filter (a struct sock_fprog's program) and its install flags.
struct SeccompFilter {
  uint64_t program;        // struct sock_filter[len]
  uint32_t len;
  uint32_t flags;          // SECCOMP_FILTER_FLAG_LOG
};
static_assert(sizeof(SeccompFilter) == 16);

// A POSIX timer that notifies a thread other than the leader
// (SIGEV_THREAD_ID): created by the blob once that thread exists.
struct PosixTimer {
  int32_t id;
  int32_t clock_id;
  int32_t signo;
  int32_t notify;
  int32_t tid;
  int32_t pad;
  uint64_t sigev_value;
  int64_t interval_sec, interval_nsec, value_sec, value_nsec;  // struct itimerspec
};
static_assert(sizeof(PosixTimer) == 64);

struct Thread {
  uint32_t tid;
  uint32_t n_pending;
  uint64_t stack_top;      // its stack in the blob, 16-byte aligned
  uint64_t sigreturn_sp;   // rsp for rt_sigreturn: its frame in the tail
  uint64_t fs_base;
  uint64_t gs_base;
  uint64_t clear_child_tid;
  uint64_t robust_list;
  uint64_t robust_list_len;
  uint64_t rseq_addr;
  uint32_t rseq_len;
  uint32_t rseq_sig;
  uint64_t pending;        // SigInfo[n_pending], thread-private
  char comm[16];
  SchedAttr sched;         // set before the credentials
  uint32_t seccomp_mode;   // 1: strict, set after its filters, after go
  uint32_t n_filters;      // its own filters (not the shared ones), oldest first
  uint64_t filters;        // uint32_t[n_filters]: indices into Args.filters
};
static_assert(sizeof(Thread) == 176);

// Credentials, applied by every thread for itself (Linux credentials are per
// thread) after every thread exists: creating threads with their tids needs
// privileges the restored process may not keep.
inline constexpr uint32_t kMaxGroups = 256;
struct Creds {
  uint32_t apply;          // 0: the restoring process's are already the dumped ones
  uint32_t n_groups;
  uint32_t uids[4];        // real, effective, saved, fs
  uint32_t gids[4];
  uint32_t groups[kMaxGroups];
  uint64_t cap_inh, cap_prm, cap_eff, cap_bnd, cap_amb;
  uint32_t securebits;
  uint32_t pad;
};
static_assert(sizeof(Creds) == 8 + 32 + kMaxGroups * 4 + 40 + 8);

struct Args {
  uint32_t magic;
  uint32_t version;
  int32_t sock_fd;         // to the parent; closed before resuming
  int32_t exe_fd;          // for PR_SET_MM_MAP; closed after it, -1 if none
  uint32_t pid;
  uint32_t n_vmas;
  uint32_t n_threads;      // the leader is threads[0]
  uint32_t n_keep;
  uint32_t n_rlimits;
  uint32_t n_itimers;
  uint32_t n_shared_pending;
  uint32_t n_specials;
  uint64_t vmas;           // Vma[n_vmas]
  uint64_t threads;        // Thread[n_threads]
  uint64_t keep;           // Range[n_keep], sorted: all that survives the first unmap
  uint64_t rlimits;        // RLimit[n_rlimits]
  uint64_t itimers;        // ITimer[n_itimers]
  uint64_t shared_pending; // SigInfo[n_shared_pending]
  Special specials[3];
  KSigaction sigactions[kMaxSignal];  // index signo-1; SIG_DFL where none was dumped
  PrctlMmMap mm;
  int32_t pdeathsig;       // set once the parent said go (until then SIGKILL)
  uint32_t pad1;
  Creds creds;
  uint64_t premap_start;   // the premap slots: unmapped once every VMA has moved out
  uint64_t premap_end;
  uint64_t blob_start;     // code, args and stacks: unmapped by the last thread
  uint64_t blob_size;
  uint64_t tail;           // tail code: counts threads out, unmaps the blob, sigreturns
  uint64_t tail_size;      // tail code and sigframes
  uint64_t tail_syscall;   // the tail's rt_sigreturn `syscall` instruction
  // Synchronisation between the blob's threads (futex words).
  int32_t ready;           // threads other than the leader that are ready
  int32_t go;              // set by the leader once the parent says go
  int32_t in_blob;         // threads still running blob code (tail counts them out)
  int32_t failed;          // first error wins; it is in `error`
  int32_t sealed;          // threads other than the leader with their seccomp state
  uint32_t n_filters;
  uint64_t filters;        // SeccompFilter[n_filters]: every filter of the process
  uint32_t n_shared_filters;
  uint32_t n_timers;
  uint64_t shared_filters; // uint32_t[n_shared_filters]: installed once with TSYNC, oldest first
  uint64_t timers;         // PosixTimer[n_timers]
  uint32_t mlockall;       // MCL_FUTURE | MCL_ONFAULT, set once the memory is in place
  int32_t uffd;            // restore --lazy: the lazy VMAs register with it, then it closes; -1 if none
  Msg error;
};
static_assert(sizeof(Args) % 8 == 0);
static_assert(__builtin_offsetof(Args, sigactions) % 8 == 0);
static_assert(__builtin_offsetof(Args, mm) % 8 == 0);

}  // namespace minicriu::rst
