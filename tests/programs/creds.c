/* Credentials: groups, real/effective/saved gids and uids (all different),
 * and one capability kept (CAP_NET_BIND_SERVICE), in the main thread and in a
 * second thread (credentials are per thread in the kernel). After SIGUSR1 both
 * threads check theirs. */
#include "prog_common.h"

#include <grp.h>
#include <linux/capability.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/stat.h>

static volatile int thread_ok = -1;

static int creds_ok(const char* who) {
  int ok = 1;
  uid_t r, e, s;
  gid_t gr, ge, gs;
  getresuid(&r, &e, &s);
  getresgid(&gr, &ge, &gs);
  if (r != 2000 || e != 2001 || s != 2002) { fprintf(stderr, "%s: uids %d %d %d\n", who, r, e, s); ok = 0; }
  if (gr != 1000 || ge != 1001 || gs != 1002) { fprintf(stderr, "%s: gids %d %d %d\n", who, gr, ge, gs); ok = 0; }
  gid_t groups[8];
  int n = getgroups(8, groups);
  if (n != 2 || groups[0] != 100 || groups[1] != 200) { fprintf(stderr, "%s: %d groups\n", who, n); ok = 0; }
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2];
  syscall(SYS_capget, &h, d);
  uint32_t want = 1u << CAP_NET_BIND_SERVICE;
  if (d[0].effective != want || d[0].permitted != want || d[1].effective || d[1].permitted) {
    fprintf(stderr, "%s: caps eff %#x prm %#x\n", who, d[0].effective, d[0].permitted);
    ok = 0;
  }
  return ok;
}

static int drop(void) {
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2] = {{1u << CAP_NET_BIND_SERVICE, 1u << CAP_NET_BIND_SERVICE, 0}, {0, 0, 0}};
  return (int)syscall(SYS_capset, &h, d);
}

static void* worker(void* arg) {
  (void)arg;
  while (!prog_usr1) {
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  thread_ok = creds_ok("thread");
  return NULL;
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  prog_install_usr1();
  chmod(argv[2], 0777); /* the ready file is written after the drop */
  gid_t groups[2] = {100, 200};
  /* Raw syscalls: glibc's wrappers would change every thread, and the
   * second thread is made after, inheriting these. */
  if (syscall(SYS_setgroups, 2, groups) || syscall(SYS_setresgid, 1000, 1001, 1002) ||
      prctl(PR_SET_KEEPCAPS, 1) || syscall(SYS_setresuid, 2000, 2001, 2002) || drop()) {
    perror("dropping credentials");
    return 2;
  }
  pthread_t t;
  pthread_create(&t, NULL, worker, NULL);
  prog_ready(argv[1]);
  prog_wait_usr1();
  CHECK(creds_ok("main"), "main thread credentials");
  pthread_join(t, NULL);
  CHECK(thread_ok == 1, "second thread credentials");
  return prog_finish();
}
