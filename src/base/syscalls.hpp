// Typed wrappers for the raw syscalls that glibc 2.36 lacks. Everything else goes
// through glibc.
#pragma once

#include <linux/sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace minicriu::sys {

inline long clone3(struct clone_args* args, size_t size) {
  return ::syscall(SYS_clone3, args, size);
}
inline int pidfd_open(pid_t pid, unsigned flags) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, flags));
}
inline int pidfd_getfd(int pidfd, int fd, unsigned flags) {
  return static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, fd, flags));
}
inline int kcmp(pid_t pid1, pid_t pid2, int type, unsigned long idx1, unsigned long idx2) {
  return static_cast<int>(::syscall(SYS_kcmp, pid1, pid2, type, idx1, idx2));
}
inline long get_robust_list(pid_t tid, void** head, size_t* len) {
  return ::syscall(SYS_get_robust_list, tid, head, len);
}
// io_setup(2) and io_destroy(2): an aio_context_t is the address of its ring.
inline int io_setup(unsigned nr_events, uint64_t* ctx) {
  return static_cast<int>(::syscall(SYS_io_setup, nr_events, ctx));
}
inline int io_destroy(uint64_t ctx) { return static_cast<int>(::syscall(SYS_io_destroy, ctx)); }
inline int userfaultfd(int flags) { return static_cast<int>(::syscall(SYS_userfaultfd, flags)); }
inline pid_t gettid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }
inline int tgkill(pid_t tgid, pid_t tid, int sig) {
  return static_cast<int>(::syscall(SYS_tgkill, tgid, tid, sig));
}

}  // namespace minicriu::sys
