/* A three-level tree: root -> {a, b}, a -> c; every process has its own memory
 * pattern. Readiness is counted in a shared anonymous page. SIGUSR1 to the root
 * is passed down; each process checks its pattern, waits for its children and
 * exits 0 only if it and all below it passed. */
#include "prog_common.h"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

static volatile int* ready_count;
static const char* ready_file;

static int run_node(int id, int nchildren_to_make, int grandchildren) {
  pid_t kids[2];
  int nkids = 0;
  for (int i = 0; i < nchildren_to_make; i++) {
    pid_t k = fork();
    if (k == 0) {
      /* The first child of the root makes one child of its own. */
      _exit(run_node(id * 10 + i + 1, i == 0 ? grandchildren : 0, 0));
    }
    kids[nkids++] = k;
  }
  size_t words = 1u << 16;
  uint64_t* mem = malloc(words * sizeof(uint64_t));
  for (size_t i = 0; i < words; i++) mem[i] = prog_hash(i + (uint64_t)id * 1000003);
  __atomic_add_fetch(ready_count, 1, __ATOMIC_SEQ_CST);
  if (id == 0) {
    while (__atomic_load_n(ready_count, __ATOMIC_SEQ_CST) < 4) usleep(1000);
    prog_ready(ready_file);
  }
  prog_wait_usr1();
  for (int i = 0; i < nkids; i++) kill(kids[i], SIGUSR1);
  size_t bad = 0;
  for (size_t i = 0; i < words; i++) bad += mem[i] != prog_hash(i + (uint64_t)id * 1000003);
  CHECK(bad == 0, "node %d: %zu words differ", id, bad);
  for (int i = 0; i < nkids; i++) {
    int st = 0;
    CHECK(waitpid(kids[i], &st, 0) == kids[i], "node %d: waitpid", id);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "node %d: child %d failed (status %#x)", id, i, st);
  }
  return prog_failures ? 1 : 0;
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  prog_install_usr1();
  ready_file = argv[1];
  ready_count = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  /* "extras": a zombie child not reaped until the end, and prctl state. */
  pid_t zombie = -1;
  int extras = argc > 3 && strcmp(argv[3], "extras") == 0;
  if (extras) {
    zombie = fork();
    if (zombie == 0) _exit(7);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    prctl(PR_SET_PDEATHSIG, SIGUSR2);
    umask(027);
  }
  int rc = run_node(0, 2, 1);
  if (extras) {
    int status = 0;
    CHECK(waitpid(zombie, &status, 0) == zombie, "the zombie is gone");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 7, "zombie status %#x", status);
    int v = 0;
    prctl(PR_GET_CHILD_SUBREAPER, &v);
    CHECK(v == 1, "child subreaper lost");
    prctl(PR_GET_PDEATHSIG, &v);
    CHECK(v == SIGUSR2, "pdeathsig lost");
    CHECK(umask(0) == 027, "umask lost");
  }
  return rc ? rc : prog_finish();
}
