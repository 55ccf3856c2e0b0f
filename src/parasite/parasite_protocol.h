// The command protocol between the dumper (host) and the parasite blob. Shared
// by both sides; only fixed-size types, checked by static_asserts.
//
// The parasite's memory is one shared memfd mapped in the target and in the
// dumper: [blob code/data][ParasiteCtl][args area][stack]. Commands and replies
// travel as ParasiteMsg over a SOCK_SEQPACKET unix socket that the parasite
// connects to the dumper's abstract address; fds ride on them with SCM_RIGHTS.
// Bulk arguments (iovecs, fd numbers) and results (sigactions) sit in the args
// area.
#pragma once

#ifdef __cplusplus
#include <cstdint>
#define MC_STATIC_ASSERT static_assert
#else
#include <stdint.h>
#define MC_STATIC_ASSERT _Static_assert
#endif

#define MC_PARASITE_ARGS_SIZE (1u << 20)
#define MC_PARASITE_STACK_SIZE (64u << 10)
#define MC_PARASITE_MAX_FDS 16  // fds per SCM_RIGHTS message
#define MC_PARASITE_MAX_PIPES 16  // page pipes: one per lane of a page image

enum ParasiteCommand : uint32_t {
  PARASITE_CMD_SET_PIPE = 1,   // take the pipe write end sent with the message as pipe arg
  PARASITE_CMD_DUMP_PAGES = 2, // vmsplice args.iov[0..arg) into pipe 0
  PARASITE_CMD_SEND_FDS = 3,   // send fds args.fds[0..arg) back, 16 per message
  PARASITE_CMD_GET_MISC = 4,   // fill args.misc
  PARASITE_CMD_FINI = 5,       // close everything and trap back to the dumper
  PARASITE_CMD_GET_TIMERS = 6, // timer_gettime/getoverrun for args.timers[0..arg)
  // With an fd of /dev/userfaultfd: a new userfaultfd of the target's mm in
  // asynchronous write-protect mode, registered (write-protect mode) over each
  // of args.iov[0..arg); each range's status (0 or a negative errno) follows
  // the iovecs as int32s. The reply carries the new userfaultfd (and the
  // parasite closes its own): result 0; or status < 0 and no fd.
  PARASITE_CMD_UFFD = 7,
  // The same in synchronous write-protect mode (a background dump: a write
  // to a protected page stops the writer until the dumper copied the page
  // and lifted the protection).
  PARASITE_CMD_UFFD_SYNC = 8,
  // The same, armed before the freeze (a background dump whose frozen time
  // does not grow with memory): synchronous write-protect with remove events
  // (MADV_DONTNEED), each range registered for missing pages as well, so
  // that every change to the pages present reaches the dumper's handler.
  PARASITE_CMD_UFFD_PREARM = 9,
  // vmsplice args.lane_iov[0..arg) in order, each into the pipe it names
  // (a page image written by several workers, one pipe and file each).
  PARASITE_CMD_DUMP_PAGES_LANES = 10,
};

// userfaultfd ABI (linux/userfaultfd.h; the parasite has no headers).
#define MC_USERFAULTFD_IOC_NEW 0xAA00u                 /* _IO(0xAA, 0x00) */
#define MC_UFFDIO_API 0xC018AA3Fu                      /* _IOWR(0xAA, 0x3F, struct uffdio_api) */
#define MC_UFFDIO_REGISTER 0xC020AA00u                 /* _IOWR(0xAA, 0x00, struct uffdio_register) */
#define MC_UFFD_API 0xAAu
#define MC_UFFD_FEATURE_WP_UNPOPULATED (1ull << 13)
#define MC_UFFD_FEATURE_WP_ASYNC (1ull << 15)
#define MC_UFFDIO_REGISTER_MODE_WP (1ull << 1)
#define MC_UFFDIO_REGISTER_MODE_MISSING (1ull << 0)
#define MC_UFFD_FEATURE_EVENT_REMOVE (1ull << 3)
#define MC_UFFDIO_WRITEPROTECT 0xC018AA06u             /* _IOWR(0xAA, 0x06, struct uffdio_writeprotect) */

struct ParasiteMsg {
  uint32_t cmd;
  int32_t status;  // in replies: 0 or a negative errno
  uint64_t arg;
  uint64_t result;
};
MC_STATIC_ASSERT(sizeof(struct ParasiteMsg) == 24, "ParasiteMsg layout");

struct ParasiteIovec {
  uint64_t base;
  uint64_t len;
};
MC_STATIC_ASSERT(sizeof(struct ParasiteIovec) == 16, "iovec layout");

struct ParasiteLaneIovec {
  uint64_t base;
  uint32_t len;
  uint32_t pipe;  // < MC_PARASITE_MAX_PIPES
};
MC_STATIC_ASSERT(sizeof(struct ParasiteLaneIovec) == 16, "lane iovec layout");

// struct sigaction as the kernel's rt_sigaction takes it on x86_64.
struct ParasiteSigaction {
  uint64_t handler;
  uint64_t flags;
  uint64_t restorer;
  uint64_t mask;
};
MC_STATIC_ASSERT(sizeof(struct ParasiteSigaction) == 32, "kernel sigaction layout");

struct ParasiteITimer {
  int64_t interval_sec, interval_usec, value_sec, value_usec;
};

struct ParasiteMisc {
  struct ParasiteSigaction sigactions[64];  // index signo-1
  int32_t sigaction_status[64];
  struct ParasiteITimer itimers[3];
  uint64_t brk;
  uint32_t umask;
  uint32_t personality;
  int32_t pdeathsig;
  int32_t dumpable;
  int32_t child_subreaper;
  int32_t securebits;
  int32_t no_new_privs;
  int32_t thp_disable;
  // MEMBARRIER_CMD_GET_REGISTRATIONS: the MEMBARRIER_CMD_REGISTER_* commands
  // the process made; or, on a kernel without it (< 6.3), what the private
  // expedited commands tell (they fail with EPERM unregistered). Negative:
  // an errno, membarrier unknown to the kernel.
  int32_t membarrier;
  int32_t membarrier_probed;  // 1: from the probe (the global registration is not seen)
};

// One POSIX timer: the dumper fills id, the parasite the rest.
struct ParasiteTimer {
  int32_t id;
  int32_t status;        // 0 or a negative errno of timer_gettime
  int32_t overrun;
  int32_t pad;
  int64_t interval_sec, interval_nsec, value_sec, value_nsec;
};
MC_STATIC_ASSERT(sizeof(struct ParasiteTimer) == 48, "ParasiteTimer layout");

// Faults a test may inject (ParasiteOptions, parasite_session.hpp).
// STALL: at its first DUMP_PAGES the parasite stops answering for good, in a
// blocking syscall, holding its socket and the page pipe: what a parasite
// stuck in the kernel looks like to the dumper.
#define MC_PARASITE_FAULT_STALL 1u
// SPLICE: at its second DUMP_PAGES_LANES the parasite vmsplices the first
// half of the ranges, then fails with EFAULT, as on memory get_user_pages
// refuses.
#define MC_PARASITE_FAULT_SPLICE 2u

// The control block at a fixed offset of the shared area.
struct ParasiteCtl {
  uint32_t magic;
  uint32_t addr_len;           // of the socket address below
  char sun_path[108];          // abstract: starts with '\0'
  uint32_t fault;              // MC_PARASITE_FAULT_*, 0 outside tests
  uint64_t args;               // remote address of the args area
  int32_t pipe_fds[MC_PARASITE_MAX_PIPES];  // set by SET_PIPE; -1: none
  int32_t sock_fd;
  // Set last by a parasite that is done (after FINI, its fds closed) or that
  // could not start (exit_code < 0): it then waits in pause() for the
  // dumper's PTRACE_INTERRUPT. There is no int3 to return to: a thread
  // stopped at a trap of ours when the dumper dies would get the SIGTRAP.
  int32_t exited;
  int32_t exit_code;
  uint32_t lane_drains;        // DUMP_PAGES_LANES served (MC_PARASITE_FAULT_SPLICE)
};
MC_STATIC_ASSERT(sizeof(struct ParasiteCtl) == 208, "ParasiteCtl layout");

#define MC_PARASITE_CTL_MAGIC 0x50415243u  // "PARC"
