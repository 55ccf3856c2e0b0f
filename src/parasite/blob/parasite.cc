// The parasite: runs inside a stopped target process, on its own stack in a
// shared memfd mapping, for one dump. It serves the dumper's commands over a
// unix socket and, told to finish, says so in its control block and waits
// for the dumper to stop it (PTRACE_INTERRUPT). Freestanding: no libc,
// no globals that need relocation, no vector registers (-mgeneral-regs-only),
// so the target's FPU/AVX state is never touched.
#include "common/blob/syscall.h"
#include "parasite/parasite_protocol.h"

extern "C" {
// gcc may emit calls to these even in freestanding code.
__attribute__((used)) void* memcpy(void* d, const void* s, unsigned long n) { return mc_memcpy(d, s, n); }
__attribute__((used)) void* memset(void* d, int c, unsigned long n) { return mc_memset(d, c, n); }
}

namespace {

constexpr long kSolSocket = 1;
constexpr long kScmRights = 1;
constexpr long kAfUnix = 1;
constexpr long kSockSeqpacket = 5;
constexpr long kSockCloexec = 02000000;
constexpr long kEintr = 4;
constexpr long kEagain = 11;

struct Iovec { void* base; unsigned long len; };
struct MsgHdr {
  void* name; int namelen; int pad0;
  Iovec* iov; unsigned long iovlen;
  void* control; unsigned long controllen;
  int flags; int pad1;
};
struct CmsgHdr { unsigned long len; int level; int type; };
struct SockaddrUn { unsigned short family; char path[108]; };

constexpr unsigned long kCmsgSpace = sizeof(CmsgHdr) + MC_PARASITE_MAX_FDS * sizeof(int);

long send_msg(int sock, ParasiteMsg* msg, const int* fds, int nfds) {
  Iovec iov{msg, sizeof(*msg)};
  alignas(8) unsigned char control[kCmsgSpace];
  MsgHdr hdr{};
  hdr.iov = &iov;
  hdr.iovlen = 1;
  if (nfds > 0) {
    CmsgHdr* c = reinterpret_cast<CmsgHdr*>(control);
    c->len = sizeof(CmsgHdr) + nfds * sizeof(int);
    c->level = kSolSocket;
    c->type = kScmRights;
    mc_memcpy(control + sizeof(CmsgHdr), fds, nfds * sizeof(int));
    hdr.control = control;
    hdr.controllen = (c->len + 7) & ~7ul;
  }
  // MSG_NOSIGNAL: a SIGPIPE raised here would stay pending in the target and
  // kill it once its signal mask is put back.
  constexpr long kMsgNoSignal = 0x4000;
  long r;
  do r = mc_syscall3(MC_NR_sendmsg, sock, (long)&hdr, kMsgNoSignal); while (r == -kEintr);
  return r;
}

// Receives a command and at most one fd with it.
long recv_msg(int sock, ParasiteMsg* msg, int* fd) {
  Iovec iov{msg, sizeof(*msg)};
  alignas(8) unsigned char control[kCmsgSpace];
  MsgHdr hdr{};
  hdr.iov = &iov;
  hdr.iovlen = 1;
  hdr.control = control;
  hdr.controllen = sizeof(control);
  long r;
  // MSG_CMSG_CLOEXEC: an fd we receive must not leak into an exec of the target.
  do r = mc_syscall3(MC_NR_recvmsg, sock, (long)&hdr, 0x40000000);
  while (r == -kEintr);
  *fd = -1;
  if (r > 0 && hdr.controllen >= sizeof(CmsgHdr)) {
    CmsgHdr* c = reinterpret_cast<CmsgHdr*>(control);
    if (c->level == kSolSocket && c->type == kScmRights && c->len >= sizeof(CmsgHdr) + sizeof(int))
      mc_memcpy(fd, control + sizeof(CmsgHdr), sizeof(int));
  }
  return r;
}

// vmsplice every iovec whole; the dumper drains the pipe meanwhile, so a full
// pipe only blocks us until it reads.
long dump_pages(int pipe_fd, ParasiteIovec* iovs, unsigned long n) {
  constexpr unsigned long kMaxIov = 512;  // well under UIO_MAXIOV
  unsigned long i = 0;
  while (i < n) {
    unsigned long batch = n - i < kMaxIov ? n - i : kMaxIov;
    long r = mc_syscall4(MC_NR_vmsplice, pipe_fd, (long)&iovs[i], batch, 0);
    if (r == -kEintr || r == -kEagain) continue;
    if (r < 0) return r;
    // Skip what went in; a partial iovec is shortened in place.
    unsigned long done = (unsigned long)r;
    while (done > 0 && i < n) {
      if (done >= iovs[i].len) {
        done -= iovs[i].len;
        i++;
      } else {
        iovs[i].base += done;
        iovs[i].len -= done;
        done = 0;
      }
    }
  }
  return 0;
}

// Each iovec into the pipe it names, in order; a run of iovecs for one pipe
// goes in one vmsplice (up to kBatch at a time), so that a pipe that is full
// waits for its own worker while the others drain theirs.
long dump_pages_lanes(const int32_t* pipes, const ParasiteLaneIovec* iovs, unsigned long n) {
  constexpr unsigned long kBatch = 64;
  ParasiteIovec batch[kBatch];
  unsigned long i = 0;
  while (i < n) {
    uint32_t pipe = iovs[i].pipe;
    if (pipe >= MC_PARASITE_MAX_PIPES || pipes[pipe] < 0) return -9;  // EBADF
    unsigned long k = 0;
    while (i < n && k < kBatch && iovs[i].pipe == pipe) {
      batch[k++] = ParasiteIovec{iovs[i].base, iovs[i].len};
      i++;
    }
    long r = dump_pages(pipes[pipe], batch, k);
    if (r < 0) return r;
  }
  return 0;
}

// MC_PARASITE_FAULT_STALL: never returns by itself. pause() with every signal
// blocked sleeps until the dumper's PTRACE_INTERRUPT wakes it into a stop;
// it sets no restart_block (a nanosleep would, and the restart of a syscall
// the target itself was stopped in would then run ours).
[[noreturn]] void stall() {
  for (;;) mc_syscall0(MC_NR_pause);
}

// The end of the parasite: the dumper polls ctl->exited and stops the
// thread where it waits. (Returning to an int3 would leave a thread in the
// SIGTRAP's signal-delivery-stop until the dumper collects it: a dumper
// killed then leaves the SIGTRAP to the target, which dies of it.)
[[noreturn]] void finish(ParasiteCtl* ctl, long code) {
  ctl->exit_code = (int32_t)code;
  __atomic_store_n(&ctl->exited, 1, __ATOMIC_RELEASE);
  stall();
}

long send_fds(int sock, const int32_t* fds, unsigned long n) {
  for (unsigned long i = 0; i < n; i += MC_PARASITE_MAX_FDS) {
    int batch = (int)(n - i < MC_PARASITE_MAX_FDS ? n - i : MC_PARASITE_MAX_FDS);
    ParasiteMsg m{PARASITE_CMD_SEND_FDS, 0, (uint64_t)batch, i};
    long r = send_msg(sock, &m, fds + i, batch);
    if (r < 0) return r;
  }
  return 0;
}

void get_misc(ParasiteMisc* misc) {
  for (int sig = 1; sig <= 64; sig++) {
    misc->sigaction_status[sig - 1] =
        (int32_t)mc_syscall4(MC_NR_rt_sigaction, sig, 0, (long)&misc->sigactions[sig - 1], 8);
  }
  for (int which = 0; which < 3; which++)
    mc_syscall2(MC_NR_getitimer, which, (long)&misc->itimers[which]);
  misc->brk = (uint64_t)mc_syscall1(MC_NR_brk, 0);
  long old = mc_syscall1(MC_NR_umask, 0);
  mc_syscall1(MC_NR_umask, old);
  misc->umask = (uint32_t)old;
  misc->personality = (uint32_t)mc_syscall1(MC_NR_personality, 0xffffffff);
  // prctl numbers from include/uapi/linux/prctl.h.
  constexpr long kGetPdeathsig = 2, kGetDumpable = 3, kGetSecurebits = 27,
                 kGetChildSubreaper = 37, kGetNoNewPrivs = 39, kGetThpDisable = 42;
  mc_syscall2(MC_NR_prctl, kGetPdeathsig, (long)&misc->pdeathsig);
  misc->dumpable = (int32_t)mc_syscall1(MC_NR_prctl, kGetDumpable);
  mc_syscall2(MC_NR_prctl, kGetChildSubreaper, (long)&misc->child_subreaper);
  misc->securebits = (int32_t)mc_syscall1(MC_NR_prctl, kGetSecurebits);
  misc->no_new_privs = (int32_t)mc_syscall1(MC_NR_prctl, kGetNoNewPrivs);
  misc->thp_disable = (int32_t)mc_syscall1(MC_NR_prctl, kGetThpDisable);
  // <linux/membarrier.h>
  constexpr long kGetRegistrations = 1 << 9, kPrivate = 1 << 3, kRegPrivate = 1 << 4,
                 kSyncCore = 1 << 5, kRegSyncCore = 1 << 6, kRseq = 1 << 7, kRegRseq = 1 << 8;
  long regs = mc_syscall3(MC_NR_membarrier, kGetRegistrations, 0, 0);
  misc->membarrier_probed = 0;
  if (regs == -22) {  // EINVAL: an older kernel; the commands tell
    misc->membarrier_probed = 1;
    regs = 0;
    if (mc_syscall3(MC_NR_membarrier, kPrivate, 0, 0) == 0) regs |= kRegPrivate;
    if (mc_syscall3(MC_NR_membarrier, kSyncCore, 0, 0) == 0) regs |= kRegSyncCore;
    if (mc_syscall3(MC_NR_membarrier, kRseq, 0, 0) == 0) regs |= kRegRseq;
  }
  misc->membarrier = (int32_t)regs;
}

void get_timers(ParasiteTimer* timers, unsigned long n) {
  for (unsigned long i = 0; i < n; i++) {
    ParasiteTimer* t = &timers[i];
    t->status = (int32_t)mc_syscall2(MC_NR_timer_gettime, t->id, (long)&t->interval_sec);
    t->overrun = (int32_t)mc_syscall1(MC_NR_timer_getoverrun, t->id);
  }
}

// A userfaultfd of this mm in asynchronous write-protect mode (writes are
// only recorded, never stopped), registered over each range that can be.
// WP_UNPOPULATED: anonymous memory counts as write-protect-allowed for
// PAGEMAP_SCAN (PAGE_IS_WPALLOWED, PM_SCAN_CHECK_WPASYNC) only with it.
// sync: synchronous mode instead (no features: a write to a protected page
// waits for the dumper; pages absent at the freeze are not in the dump, so
// writes to them need not stop).
// cmd PARASITE_CMD_UFFD_PREARM: synchronous, with remove events, registered
// for missing pages too.
long make_uffd(int dev, const ParasiteIovec* iovs, unsigned long n, int32_t* status, int* out, uint32_t cmd) {
  constexpr long kOCloexec = 02000000, kONonblock = 04000;
  long uffd = mc_syscall3(MC_NR_ioctl, dev, MC_USERFAULTFD_IOC_NEW, kOCloexec | kONonblock);
  if (uffd < 0) return uffd;
  uint64_t features = cmd == PARASITE_CMD_UFFD        ? MC_UFFD_FEATURE_WP_ASYNC | MC_UFFD_FEATURE_WP_UNPOPULATED
                      : cmd == PARASITE_CMD_UFFD_PREARM ? MC_UFFD_FEATURE_EVENT_REMOVE
                                                        : 0;
  uint64_t mode = MC_UFFDIO_REGISTER_MODE_WP | (cmd == PARASITE_CMD_UFFD_PREARM ? MC_UFFDIO_REGISTER_MODE_MISSING : 0);
  struct { uint64_t api, features, ioctls; } api{MC_UFFD_API, features, 0};
  long r = mc_syscall3(MC_NR_ioctl, uffd, MC_UFFDIO_API, (long)&api);
  if (r < 0) {
    mc_syscall1(MC_NR_close, uffd);
    return r;
  }
  for (unsigned long i = 0; i < n; i++) {
    struct { uint64_t start, len, mode, ioctls; } reg{iovs[i].base, iovs[i].len, mode, 0};
    status[i] = (int32_t)mc_syscall3(MC_NR_ioctl, uffd, MC_UFFDIO_REGISTER, (long)&reg);
  }
  *out = (int)uffd;
  return 0;
}

}  // namespace

extern "C" __attribute__((used, visibility("hidden"))) long parasite_main(ParasiteCtl* ctl) {
  if (ctl->magic != MC_PARASITE_CTL_MAGIC) return -22;  // not our control block: nobody to tell
  long sock = mc_syscall3(MC_NR_socket, kAfUnix, kSockSeqpacket | kSockCloexec, 0);
  if (sock < 0) finish(ctl, sock);
  SockaddrUn addr{};
  addr.family = kAfUnix;
  mc_memcpy(addr.path, ctl->sun_path, sizeof(addr.path));
  long r = mc_syscall3(MC_NR_connect, sock, (long)&addr, ctl->addr_len);
  if (r < 0) {
    mc_syscall1(MC_NR_close, sock);
    finish(ctl, r);
  }
  ctl->sock_fd = (int32_t)sock;
  for (int p = 0; p < MC_PARASITE_MAX_PIPES; p++) ctl->pipe_fds[p] = -1;
  ctl->lane_drains = 0;
  char* args = reinterpret_cast<char*>(ctl->args);
  for (;;) {
    ParasiteMsg msg{};
    int fd = -1;
    r = recv_msg((int)sock, &msg, &fd);
    // The dumper went away without FINI: it died (SIGKILL, OOM). Returning
    // would hit our int3 with no tracer to catch it, and the SIGTRAP would
    // kill the process; waiting here, the group stop the dumper set up stops
    // this thread, and its guardian puts the registers back.
    if (r <= 0) stall();
    // The test fault: hung at its first command, in a blocking syscall.
    if (ctl->fault == MC_PARASITE_FAULT_STALL && msg.cmd != PARASITE_CMD_FINI) stall();
    ParasiteMsg reply{msg.cmd, 0, 0, 0};
    switch (msg.cmd) {
      case PARASITE_CMD_SET_PIPE:
        if (fd < 0 || msg.arg >= MC_PARASITE_MAX_PIPES) {
          reply.status = -22;
          break;
        }
        if (ctl->pipe_fds[msg.arg] >= 0) mc_syscall1(MC_NR_close, ctl->pipe_fds[msg.arg]);
        ctl->pipe_fds[msg.arg] = fd;
        fd = -1;
        break;
      case PARASITE_CMD_DUMP_PAGES_LANES:
        // The test fault: half the ranges of the second drain, then EFAULT.
        if (ctl->fault == MC_PARASITE_FAULT_SPLICE && ++ctl->lane_drains == 2) {
          long r = dump_pages_lanes(ctl->pipe_fds, reinterpret_cast<ParasiteLaneIovec*>(args), msg.arg / 2);
          reply.status = (int32_t)(r < 0 ? r : -14);
          break;
        }
        reply.status = (int32_t)dump_pages_lanes(ctl->pipe_fds, reinterpret_cast<ParasiteLaneIovec*>(args), msg.arg);
        break;
      case PARASITE_CMD_DUMP_PAGES:
        reply.status = ctl->pipe_fds[0] < 0
                           ? -9
                           : (int32_t)dump_pages(ctl->pipe_fds[0],
                                                 reinterpret_cast<ParasiteIovec*>(args), msg.arg);
        break;
      case PARASITE_CMD_SEND_FDS:
        reply.status = (int32_t)send_fds((int)sock, reinterpret_cast<int32_t*>(args), msg.arg);
        break;
      case PARASITE_CMD_GET_MISC:
        get_misc(reinterpret_cast<ParasiteMisc*>(args));
        break;
      case PARASITE_CMD_GET_TIMERS:
        get_timers(reinterpret_cast<ParasiteTimer*>(args), msg.arg);
        break;
      case PARASITE_CMD_UFFD:
      case PARASITE_CMD_UFFD_SYNC:
      case PARASITE_CMD_UFFD_PREARM: {
        int uffd = -1;
        auto* iovs = reinterpret_cast<ParasiteIovec*>(args);
        reply.status = fd < 0 ? -9
                              : (int32_t)make_uffd(fd, iovs, msg.arg, reinterpret_cast<int32_t*>(iovs + msg.arg),
                                                   &uffd, msg.cmd);
        mc_syscall1(MC_NR_close, fd);
        fd = -1;
        send_msg((int)sock, &reply, &uffd, uffd >= 0 ? 1 : 0);
        if (uffd >= 0) mc_syscall1(MC_NR_close, uffd);
        continue;
      }
      case PARASITE_CMD_FINI:
        break;
      default:
        reply.status = -22;
    }
    if (fd >= 0) mc_syscall1(MC_NR_close, fd);
    send_msg((int)sock, &reply, 0, 0);
    if (msg.cmd == PARASITE_CMD_FINI) break;
  }
  for (int p = 0; p < MC_PARASITE_MAX_PIPES; p++)
    if (ctl->pipe_fds[p] >= 0) mc_syscall1(MC_NR_close, ctl->pipe_fds[p]);
  mc_syscall1(MC_NR_close, sock);
  finish(ctl, 0);
}

// The dumper sets rsp to the top of our stack (16-byte aligned) and rdi to the
// control block, then lets us run; parasite_main never returns (finish()),
// but for a control block that is not ours (the int3 then hands control back
// with rax = -EINVAL). parasite_syscall is a syscall;int3 gadget for the
// dumper's remote syscalls, which stop at the syscall's exit (PTRACE_SYSCALL)
// before the int3.
asm(R"(
  .section .text.entry,"ax"
  .globl parasite_entry
  .hidden parasite_entry
parasite_entry:
  call parasite_main
  int3
  .globl parasite_syscall
  .hidden parasite_syscall
parasite_syscall:
  syscall
  int3
  .text
)");
