// Raw x86_64 syscalls for freestanding blobs (parasite, restorer): no libc, no
// errno. Each returns the kernel's value: a negative errno on failure.
#pragma once

typedef unsigned long mc_u64;
typedef long mc_s64;

static inline __attribute__((always_inline)) long mc_syscall6(long nr, long a1, long a2, long a3,
                                                              long a4, long a5, long a6) {
  long ret;
  register long r10 asm("r10") = a4;
  register long r8 asm("r8") = a5;
  register long r9 asm("r9") = a6;
  asm volatile("syscall"
               : "=a"(ret)
               : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
               : "rcx", "r11", "memory");
  return ret;
}
static inline __attribute__((always_inline)) long mc_syscall0(long nr) {
  return mc_syscall6(nr, 0, 0, 0, 0, 0, 0);
}
static inline __attribute__((always_inline)) long mc_syscall1(long nr, long a1) {
  return mc_syscall6(nr, a1, 0, 0, 0, 0, 0);
}
static inline __attribute__((always_inline)) long mc_syscall2(long nr, long a1, long a2) {
  return mc_syscall6(nr, a1, a2, 0, 0, 0, 0);
}
static inline __attribute__((always_inline)) long mc_syscall3(long nr, long a1, long a2, long a3) {
  return mc_syscall6(nr, a1, a2, a3, 0, 0, 0);
}
static inline __attribute__((always_inline)) long mc_syscall4(long nr, long a1, long a2, long a3,
                                                              long a4) {
  return mc_syscall6(nr, a1, a2, a3, a4, 0, 0);
}
static inline __attribute__((always_inline)) long mc_syscall5(long nr, long a1, long a2, long a3,
                                                              long a4, long a5) {
  return mc_syscall6(nr, a1, a2, a3, a4, a5, 0);
}

// x86_64 syscall numbers the blobs use (arch/x86/entry/syscalls/syscall_64.tbl).
enum {
  MC_NR_read = 0,
  MC_NR_write = 1,
  MC_NR_close = 3,
  MC_NR_mmap = 9,
  MC_NR_mprotect = 10,
  MC_NR_ioctl = 16,
  MC_NR_munmap = 11,
  MC_NR_brk = 12,
  MC_NR_rt_sigaction = 13,
  MC_NR_rt_sigprocmask = 14,
  MC_NR_rt_sigreturn = 15,
  MC_NR_madvise = 28,
  MC_NR_pause = 34,
  MC_NR_getitimer = 36,
  MC_NR_setitimer = 38,
  MC_NR_getpid = 39,
  MC_NR_socket = 41,
  MC_NR_connect = 42,
  MC_NR_sendmsg = 46,
  MC_NR_recvmsg = 47,
  MC_NR_clone = 56,
  MC_NR_exit = 60,
  MC_NR_umask = 95,
  MC_NR_prctl = 157,
  MC_NR_arch_prctl = 158,
  MC_NR_sigaltstack = 131,
  MC_NR_personality = 135,
  MC_NR_gettid = 186,
  MC_NR_futex = 202,
  MC_NR_set_tid_address = 218,
  MC_NR_exit_group = 231,
  MC_NR_tgkill = 234,
  MC_NR_mremap = 25,
  MC_NR_set_robust_list = 273,
  MC_NR_vmsplice = 278,
  MC_NR_timer_create = 222,
  MC_NR_timer_settime = 223,
  MC_NR_timer_gettime = 224,
  MC_NR_timer_getoverrun = 225,
  MC_NR_rseq = 334,
  MC_NR_clone3 = 435,
  MC_NR_getgroups = 115,
  MC_NR_setgroups = 116,
  MC_NR_setresuid = 117,
  MC_NR_setresgid = 119,
  MC_NR_setfsuid = 122,
  MC_NR_setfsgid = 123,
  MC_NR_capset = 126,
  MC_NR_rt_sigqueueinfo = 129,
  MC_NR_rt_tgsigqueueinfo = 297,
  MC_NR_prlimit64 = 302,
  MC_NR_mlockall = 151,
  MC_NR_sched_setattr = 314,
  MC_NR_seccomp = 317,
  MC_NR_membarrier = 324,
  MC_NR_mlock = 149,
  MC_NR_mlock2 = 325,
  MC_NR_mseal = 462,
};

static inline void* mc_memcpy(void* dst, const void* src, unsigned long n) {
  unsigned char* d = (unsigned char*)dst;
  const unsigned char* s = (const unsigned char*)src;
  while (n--) *d++ = *s++;
  return dst;
}
static inline void* mc_memset(void* dst, int c, unsigned long n) {
  unsigned char* d = (unsigned char*)dst;
  while (n--) *d++ = (unsigned char)c;
  return dst;
}
