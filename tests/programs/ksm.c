/* KSM's process-wide merge flag (prctl PR_SET_MEMORY_MERGE, Linux 6.4):
 *
 *   ksm READY DIR
 *
 * The process sets it; its child, forked after and so born with it, clears
 * it again. After SIGUSR1 each checks PR_GET_MEMORY_MERGE, and that a mapping
 * made now is mergeable (VmFlags "mg") in the parent only, as the flag makes
 * every new mapping. Exit 0 only if both held. */
#include "prog_common.h"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define PR_SET_MEMORY_MERGE_ 67
#define PR_GET_MEMORY_MERGE_ 68

/* Whether the VMA holding addr shows VmFlags mnemonic mg in smaps. */
static int mergeable(void* addr) {
  FILE* f = fopen("/proc/self/smaps", "r");
  if (!f) return -1;
  char line[512];
  unsigned long a = (unsigned long)addr, start, end;
  int in = 0, found = -1;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      in = start <= a && a < end;
    } else if (in && strncmp(line, "VmFlags:", 8) == 0) {
      found = strstr(line, " mg") != NULL;
      break;
    }
  }
  fclose(f);
  return found;
}

static void check_now(int want, const char* who) {
  int got = prctl(PR_GET_MEMORY_MERGE_, 0, 0, 0, 0);
  CHECK(got == want, "%s: PR_GET_MEMORY_MERGE %d, want %d (%s)", who, got, want, strerror(errno));
  void* m = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(m != MAP_FAILED, "%s: mmap", who);
  if (m != MAP_FAILED) CHECK(mergeable(m) == want, "%s: a new mapping's mg is %d, want %d", who, mergeable(m), want);
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  prog_install_usr1();
  if (prctl(PR_SET_MEMORY_MERGE_, 1, 0, 0, 0) != 0) return 2;
  int ready[2];
  if (pipe(ready) != 0) return 2;
  pid_t child = fork();
  if (child < 0) return 2;
  if (child == 0) {
    close(ready[0]);
    if (prctl(PR_SET_MEMORY_MERGE_, 0, 0, 0, 0) != 0 || write(ready[1], "R", 1) != 1) _exit(2);
    prog_wait_usr1();
    check_now(0, "child");
    _exit(prog_finish());
  }
  close(ready[1]);
  char r;
  if (read(ready[0], &r, 1) != 1) return 2;
  prog_ready(argv[1]);
  prog_wait_usr1();
  check_now(1, "parent");
  kill(child, SIGUSR1);
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "child failed: %#x", status);
  return prog_finish();
}
