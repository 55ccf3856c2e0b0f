/* Processes that share their fd table (CLONE_FILES) or their cwd, root and
 * umask (CLONE_FS) with their parent.
 *
 *   shared READY DIR           the root R clones A with CLONE_FILES|CLONE_FS,
 *                              B with CLONE_FILES (B clones B2 with
 *                              CLONE_FILES: one table for R, B and B2) and F
 *                              with CLONE_FS; each child serves commands
 *   shared READY DIR thread    a thread of R with an fd table of its own (refused)
 *   shared READY DIR sibling   a child C whose own child D (CLONE_PARENT, so R's
 *                              child) shares C's table (refused)
 *   shared READY DIR outside   R shares its table with O (CLONE_PARENT: the
 *                              child of R's parent, outside the tree) (refused)
 *
 * Before the dump A opened DIR/early and moved the shared cwd to DIR/d1, and
 * F set the shared umask to 027; A and R each took a POSIX lock through the
 * shared table. After SIGUSR1 R checks that the early fd, the locks (F_GETLK
 * from another process names A and R),
 * cwd and umask are there, that an fd opened by any of R, A, B, B2 is seen
 * by all four and closed for all when one closes it, never by F; that a
 * chdir or umask by A or F moves R's and not B's. The children use raw
 * syscalls only: a raw clone leaves glibc's idea of the thread's tid stale. */
#include "prog_common.h"

#include <pthread.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>

struct cmd {
  char op;      /* O open path, S stat fd, C close fd, L lock fd, D chdir path, U umask, W stat ".", X exit */
  int arg;
  char path[512];
};

struct server {
  const char* name;
  pid_t pid;
  int cmd[2], reply[2];
};

static const char* dir;

static pid_t raw_clone(unsigned long flags) {
  return (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, 0);
}

static void serve(struct server* s) {
  for (;;) {
    struct cmd c;
    if (prog_read_exact(s->cmd[0], &c, sizeof c) != sizeof c) _exit(0);
    long r = -1;
    struct stat st;
    switch (c.op) {
      case 'O': r = open(c.path, O_RDWR | O_CREAT, 0644); break;
      case 'S': r = fstat(c.arg, &st) == 0 ? (long)st.st_ino : 0; break;
      case 'C': r = close(c.arg); break;
      case 'L': {
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
        r = fcntl(c.arg, F_SETLK, &fl);
        break;
      }
      case 'D': r = chdir(c.path); break;
      case 'U': r = umask((mode_t)c.arg); break;
      case 'W': r = stat(".", &st) == 0 ? (long)st.st_ino : 0; break;
      case 'X':
        while (wait(NULL) > 0) {
        }
        _exit(0);
    }
    if (write(s->reply[1], &r, sizeof r) != sizeof r) _exit(1);
  }
}

static long ask(struct server* s, char op, int arg, const char* name) {
  struct cmd c;
  memset(&c, 0, sizeof c);
  c.op = op;
  c.arg = arg;
  if (name) snprintf(c.path, sizeof c.path, "%s/%s", dir, name);
  long r = -2;
  if (write(s->cmd[1], &c, sizeof c) != sizeof c || prog_read_exact(s->reply[0], &r, sizeof r) != sizeof r)
    return -2;
  return r;
}

static long ino_of(const char* name) {
  char p[4096];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  struct stat st;
  return stat(p, &st) == 0 ? (long)st.st_ino : -1;
}

static long fd_ino(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 ? (long)st.st_ino : 0;
}

static long cwd_ino(void) {
  struct stat st;
  return stat(".", &st) == 0 ? (long)st.st_ino : -1;
}

static int wait_status(pid_t pid) {
  int st;
  pid_t r;
  while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR) {
  }
  if (r != pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void new_server(struct server* s, const char* name) {
  s->name = name;
  if (pipe(s->cmd) != 0 || pipe(s->reply) != 0) exit(2);
}

/* ---- the refused shapes ---- */

static volatile int thread_up, thread_stop;
static void* own_table(void* arg) {
  (void)arg;
  if (unshare(CLONE_FILES) != 0) return NULL;
  thread_up = 1;
  while (!thread_stop) usleep(10000);
  return NULL;
}

static void sleep_until_killed(void) {
  for (;;) pause();
}

static int refused_mode(const char* ready, const char* mode) {
  if (strcmp(mode, "thread") == 0) {
    pthread_t t;
    if (pthread_create(&t, NULL, own_table, NULL) != 0) return 2;
    while (!thread_up) usleep(1000);
    prog_ready(ready);
    prog_wait_usr1();
    thread_stop = 1;
    pthread_join(t, NULL);
    return prog_finish();
  }
  if (strcmp(mode, "sibling") == 0) {
    int said[2];
    if (pipe(said) != 0) return 2;
    pid_t c = fork();
    if (c == 0) {
      /* D: R's child (CLONE_PARENT) on C's table. */
      pid_t d = raw_clone(CLONE_FILES | CLONE_PARENT);
      if (d == 0) sleep_until_killed();
      write(said[1], &d, sizeof d);
      sleep_until_killed();
    }
    pid_t d = -1;
    CHECK(prog_read_exact(said[0], &d, sizeof d) == sizeof d && d > 0, "no sibling");
    prog_ready(ready);
    prog_wait_usr1();
    kill(d, SIGKILL);
    kill(c, SIGKILL);
    CHECK(wait_status(d) == 128 + SIGKILL && wait_status(c) == 128 + SIGKILL, "C and D");
    return prog_finish();
  }
  if (strcmp(mode, "outside") == 0) {
    pid_t o = raw_clone(CLONE_FILES | CLONE_PARENT);
    if (o == 0) sleep_until_killed();
    prog_ready(ready);
    prog_wait_usr1();
    CHECK(kill(o, 0) == 0, "O is gone");
    kill(o, SIGKILL);
    return prog_finish();
  }
  return 2;
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  dir = argv[2];
  prog_install_usr1();
  if (argc > 3) return refused_mode(argv[1], argv[3]);
  char d1[4096], d2[4096];
  snprintf(d1, sizeof d1, "%s/d1", dir);
  snprintf(d2, sizeof d2, "%s/d2", dir);
  mkdir(d1, 0755);
  mkdir(d2, 0755);
  long start_cwd = cwd_ino();

  struct server a, b, b2, f;
  new_server(&a, "A");
  new_server(&b, "B");
  new_server(&b2, "B2");
  new_server(&f, "F");
  if ((a.pid = raw_clone(CLONE_FILES | CLONE_FS)) == 0) serve(&a);
  if ((b.pid = raw_clone(CLONE_FILES)) == 0) {
    /* B2's pid comes back over B's reply pipe. */
    pid_t p = raw_clone(CLONE_FILES);
    if (p == 0) serve(&b2);
    if (write(b.reply[1], &p, sizeof p) != sizeof p) _exit(1);
    serve(&b);
  }
  CHECK(prog_read_exact(b.reply[0], &b2.pid, sizeof b2.pid) == sizeof b2.pid && b2.pid > 0, "no B2");
  if ((f.pid = raw_clone(CLONE_FS)) == 0) serve(&f);

  int early = (int)ask(&a, 'O', 0, "early");
  CHECK(early >= 0, "A could not open early");
  /* POSIX locks of one fd table, taken by two of its processes: each names
   * its own pid. */
  int alock = (int)ask(&a, 'O', 0, "alock");
  CHECK(alock >= 0 && ask(&a, 'L', alock, NULL) == 0, "A could not lock");
  char rlock_path[4096];
  snprintf(rlock_path, sizeof rlock_path, "%s/rlock", dir);
  int rlock = open(rlock_path, O_RDWR | O_CREAT, 0644);
  struct flock rl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
  CHECK(fcntl(rlock, F_SETLK, &rl) == 0, "R could not lock");
  CHECK(ask(&a, 'D', 0, "d1") == 0, "A could not chdir");
  CHECK(ask(&f, 'U', 027, NULL) >= 0, "F could not set the umask");

  prog_ready(argv[1]);
  prog_wait_usr1();

  /* What was shared before the dump. */
  CHECK(fd_ino(early) == ino_of("early"), "the fd A opened before the dump is not R's");
  CHECK(cwd_ino() == ino_of("d1"), "R's cwd is not where A moved it");
  mode_t old = umask(022);
  CHECK(old == 027, "R's umask is %03o, F set 027", (unsigned)old);
  CHECK(ask(&f, 'U', 027, NULL) == 022, "F does not see R's umask");

  pid_t prober = fork();
  if (prober == 0) {
    struct flock want = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    struct flock got = want;
    int r_ok = fcntl(open(rlock_path, O_RDWR), F_GETLK, &got) == 0 && got.l_type == F_WRLCK && got.l_pid == getppid();
    char apath[4096];
    snprintf(apath, sizeof apath, "%s/alock", dir);
    got = want;
    int a_ok = fcntl(open(apath, O_RDWR), F_GETLK, &got) == 0 && got.l_type == F_WRLCK && got.l_pid == a.pid;
    _exit(r_ok && a_ok ? 0 : 1);
  }
  CHECK(wait_status(prober) == 0, "the POSIX locks of R and A are not held by R and A");

  /* One fd table for R, A, B and B2; not F's. */
  int fa = (int)ask(&a, 'O', 0, "from-a");
  CHECK(fa >= 0 && fd_ino(fa) == ino_of("from-a"), "R does not see the fd A opened");
  int fb2 = (int)ask(&b2, 'O', 0, "from-b2");
  CHECK(fb2 >= 0 && fd_ino(fb2) == ino_of("from-b2"), "R does not see the fd B2 opened");
  CHECK(ask(&a, 'S', fb2, NULL) == ino_of("from-b2"), "A does not see the fd B2 opened");
  char mine_path[4096];
  snprintf(mine_path, sizeof mine_path, "%s/from-r", dir);
  int mine = open(mine_path, O_RDONLY | O_CREAT, 0644);
  struct server* table[] = {&a, &b, &b2};
  for (int i = 0; i < 3; i++)
    CHECK(ask(table[i], 'S', mine, NULL) == ino_of("from-r"), "%s does not see R's new fd", table[i]->name);
  CHECK(ask(&f, 'S', mine, NULL) != ino_of("from-r"), "F sees R's fd: its table is its own");
  CHECK(ask(&b, 'C', mine, NULL) == 0, "B could not close R's fd");
  CHECK(fcntl(mine, F_GETFD) < 0 && errno == EBADF, "the fd B closed is still open in R");
  CHECK(ask(&a, 'S', mine, NULL) == 0, "the fd B closed is still open in A");

  /* One cwd and umask for R, A and F; not B's. */
  CHECK(ask(&a, 'D', 0, "d2") == 0 && cwd_ino() == ino_of("d2"), "A's chdir did not move R's cwd");
  CHECK(ask(&f, 'W', 0, NULL) == ino_of("d2"), "A's chdir did not move F's cwd");
  CHECK(ask(&b, 'W', 0, NULL) == start_cwd, "B's cwd moved with R's");
  CHECK(ask(&f, 'D', 0, "d1") == 0 && cwd_ino() == ino_of("d1"), "F's chdir did not move R's cwd");
  CHECK(ask(&b, 'D', 0, "d2") == 0 && cwd_ino() == ino_of("d1"), "B's chdir moved R's cwd");
  CHECK(ask(&a, 'U', 077, NULL) == 027 && umask(022) == 077, "A's umask is not R's");

  /* B2 first: B reaps it. */
  struct server* all[] = {&b2, &a, &b, &f};
  for (int i = 0; i < 4; i++) {
    struct cmd c = {'X', 0, {0}};
    CHECK(write(all[i]->cmd[1], &c, sizeof c) == sizeof c, "telling %s to exit", all[i]->name);
    if (all[i] != &b2) CHECK(wait_status(all[i]->pid) == 0, "%s failed", all[i]->name);
    else usleep(50000);
  }
  return prog_finish();
}
