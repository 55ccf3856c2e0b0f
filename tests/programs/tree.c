/* A three-level tree: root -> {a, b}, a -> c; every process has its own memory
 * pattern. With "extras", b leads a session of its own with a child d in it,
 * a leads its own process group, and the root holds an unreaped zombie. Readiness is counted in a shared anonymous page. SIGUSR1 to the root
 * is passed down; each process checks its pattern, waits for its children and
 * exits 0 only if it and all below it passed. */
#include "prog_common.h"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

static volatile int* ready_count;
static const char* ready_file;
static int extras;

static int run_node(int id, int nchildren_to_make) {
  pid_t kids[2];
  int nkids = 0;
  if (extras && id == 2 && setsid() < 0) return 3;
  if (extras && id == 1 && setpgid(0, 0) < 0) return 3;
  pid_t sid = getsid(0), pgid = getpgid(0);
  for (int i = 0; i < nchildren_to_make; i++) {
    pid_t k = fork();
    if (k == 0) {
      /* The root's first child makes one child; with extras, its second too. */
      int grandchildren = id == 0 && (i == 0 || extras) ? 1 : 0;
      _exit(run_node(id * 10 + i + 1, grandchildren));
    }
    kids[nkids++] = k;
  }
  /* The root's parent is outside the tree: a pdeathsig is checked one level down. */
  if (extras && id == 1) prctl(PR_SET_PDEATHSIG, SIGUSR2);
  size_t words = 1u << 16;
  uint64_t* mem = malloc(words * sizeof(uint64_t));
  for (size_t i = 0; i < words; i++) mem[i] = prog_hash(i + (uint64_t)id * 1000003);
  __atomic_add_fetch(ready_count, 1, __ATOMIC_SEQ_CST);
  if (id == 0) {
    while (__atomic_load_n(ready_count, __ATOMIC_SEQ_CST) < (extras ? 5 : 4)) usleep(1000);
    prog_ready(ready_file);
  }
  prog_wait_usr1();
  for (int i = 0; i < nkids; i++) kill(kids[i], SIGUSR1);
  size_t bad = 0;
  for (size_t i = 0; i < words; i++) bad += mem[i] != prog_hash(i + (uint64_t)id * 1000003);
  CHECK(bad == 0, "node %d: %zu words differ", id, bad);
  CHECK(getsid(0) == sid && getpgid(0) == pgid, "node %d: session %d group %d, were %d %d", id, getsid(0),
        getpgid(0), sid, pgid);
  if (extras && id == 2) CHECK(sid == getpid(), "node 2 no longer leads its session");
  if (extras && id == 21) CHECK(sid == getppid(), "node 21 is not in its parent's session");
  if (extras && id == 1) {
    int sig = 0;
    prctl(PR_GET_PDEATHSIG, &sig);
    CHECK(sig == SIGUSR2, "node 1: pdeathsig %d", sig);
  }
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
  /* "extras": a zombie child not reaped until the end, prctl state (subreaper,
   * umask here, pdeathsig in node 1). */
  pid_t zombie = -1;
  extras = argc > 3 && strcmp(argv[3], "extras") == 0;
  if (extras) {
    zombie = fork();
    if (zombie == 0) _exit(7);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    umask(027);
  }
  int rc = run_node(0, 2);
  if (extras) {
    int status = 0;
    CHECK(waitpid(zombie, &status, 0) == zombie, "the zombie is gone");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 7, "zombie status %#x", status);
    int v = 0;
    prctl(PR_GET_CHILD_SUBREAPER, &v);
    CHECK(v == 1, "child subreaper lost");
    CHECK(umask(0) == 027, "umask lost");
  }
  return rc ? rc : prog_finish();
}
