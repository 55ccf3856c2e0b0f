/* File locks and leases held by a tree, checked after SIGUSR1 from processes
 * that hold none: POSIX locks of two processes on one file, an flock() lock
 * and an OFD lock of open file descriptions shared with a child, shared
 * flock() locks of two descriptions, a lease, three leases being broken
 * (by children blocked in open()), and a child blocked in F_SETLKW.
 *
 *   locks READY DIR        everything above, in DIR
 *   locks READY DIR exe    only a POSIX lock on its own executable (refused)
 *
 * After SIGUSR1: F_GETLK / F_OFD_GETLK / flock(LOCK_NB) from a new process
 * see every lock held by its owner (the pid F_GETLK names), the owning
 * descriptions may lock again, F_GETLEASE reads each lease (a breaking one:
 * the type it breaks to), no SIGIO came twice, and then each is released:
 * the waiter gets its lock, the blocked open()s return, and a new
 * conflicting open breaks the last lease with a SIGIO. Exit 0 only if all of
 * it held. */
#include "prog_common.h"

#include <poll.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>

static volatile sig_atomic_t sigio_count;
static void on_sigio(int sig) { (void)sig; sigio_count++; }

static const char* dir;

static void path_of(char* out, const char* name) { snprintf(out, 4096, "%s/%s", dir, name); }

static int open_file(const char* name, int flags) {
  char p[4096];
  path_of(p, name);
  return open(p, flags);
}

static void create_file(const char* name) {
  char p[4096];
  path_of(p, name);
  int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) { perror(p); exit(2); }
  close(fd);
}

static int record_lock(int fd, int cmd, short type, off_t start, off_t len) {
  struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
  return fcntl(fd, cmd, &fl);
}

/* What a lock request of this type would conflict with: l_type F_UNLCK if
 * nothing, else the holder's type and pid. */
static struct flock conflict(int fd, int cmd, short type, off_t start, off_t len) {
  struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
  if (fcntl(fd, cmd, &fl) != 0) fl.l_type = -1;
  return fl;
}

/* A byte from fd within ms, or -1. */
static int read_byte(int fd, int ms) {
  struct pollfd p = {fd, POLLIN, 0};
  char c;
  if (poll(&p, 1, ms) != 1 || read(fd, &c, 1) != 1) return -1;
  return c;
}

static int wait_status(pid_t pid) {
  int st;
  pid_t r;
  while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR) {
  }
  if (r != pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Blocked in syscall nr (as /proc/PID/syscall shows), within 5 s. */
static int wait_blocked(pid_t pid, long nr) {
  char path[64], buf[64];
  snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
  for (int i = 0; i < 500; i++) {
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0) close(fd);
    if (n > 0) {
      buf[n] = 0;
      if (strtol(buf, NULL, 10) == nr) return 1;
    }
    usleep(10000);
  }
  return 0;
}

static int wait_sigio(int count) {
  for (int i = 0; i < 500 && sigio_count < count; i++) usleep(10000);
  return sigio_count == count;
}

struct child {
  pid_t pid;
  int result;  /* read end of a pipe the child writes one byte to */
};

/* A child that opens name with flags (blocked by a lease until it is
 * released), then says 'B'. */
static struct child breaker(const char* name, int flags) {
  int p[2];
  if (pipe(p) != 0) exit(2);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    int fd = open_file(name, flags);
    char c = fd >= 0 ? 'B' : 'E';
    write(p[1], &c, 1);
    _exit(fd >= 0 ? 0 : 1);
  }
  close(p[1]);
  return (struct child){pid, p[0]};
}

static int exe_mode(const char* ready) {
  int exe = open("/proc/self/exe", O_RDONLY);
  CHECK(record_lock(exe, F_SETLK, F_RDLCK, 0, 0) == 0, "F_SETLK on the executable: %s", strerror(errno));
  pid_t me = getpid();
  prog_ready(ready);
  prog_wait_usr1();
  pid_t prober = fork();
  if (prober == 0) {
    struct flock c = conflict(exe, F_GETLK, F_WRLCK, 0, 0);
    _exit(c.l_type == F_RDLCK && c.l_pid == me ? 0 : 1);
  }
  CHECK(wait_status(prober) == 0, "the read lock on the executable is gone");
  return prog_finish();
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  dir = argv[2];
  prog_install_usr1();
  if (argc > 3 && strcmp(argv[3], "exe") == 0) return exe_mode(argv[1]);
  const char* names[] = {"posix", "flock", "ofd", "shared", "lease", "wdown", "runlock", "wunlock"};
  for (unsigned i = 0; i < sizeof names / sizeof *names; i++) create_file(names[i]);
  pid_t me = getpid();

  /* POSIX locks of the root: bytes 10-19 for writing, 100-EOF for reading. */
  int posix = open_file("posix", O_RDWR);
  CHECK(record_lock(posix, F_SETLK, F_WRLCK, 10, 10) == 0, "F_SETLK 10-19: %s", strerror(errno));
  CHECK(record_lock(posix, F_SETLK, F_RDLCK, 100, 0) == 0, "F_SETLK 100-EOF: %s", strerror(errno));
  /* Locks of descriptions the holder child inherits. */
  int flk = open_file("flock", O_RDWR);
  CHECK(flock(flk, LOCK_EX) == 0, "flock LOCK_EX: %s", strerror(errno));
  int ofd = open_file("ofd", O_RDWR);
  CHECK(record_lock(ofd, F_OFD_SETLK, F_WRLCK, 0, 10) == 0, "F_OFD_SETLK 0-9: %s", strerror(errno));
  int shared = open_file("shared", O_RDONLY);
  CHECK(flock(shared, LOCK_SH) == 0, "flock LOCK_SH: %s", strerror(errno));

  /* The holder: a POSIX lock of its own on bytes 50-59 through the inherited
   * fd, and a shared flock() on a description of its own; it waits for go
   * to close. */
  int go[2], said[2];
  if (pipe(go) != 0 || pipe(said) != 0) return 2;
  pid_t holder = fork();
  if (holder == 0) {
    close(go[1]);
    close(said[0]);
    int mine = open_file("shared", O_RDONLY);
    char ok = record_lock(posix, F_SETLK, F_RDLCK, 50, 10) == 0 && flock(mine, LOCK_SH) == 0 ? 'R' : 'E';
    write(said[1], &ok, 1);
    char c;
    while (read(go[0], &c, 1) != 0) {
    }
    _exit(0);
  }
  close(go[0]);
  close(said[1]);
  CHECK(read_byte(said[0], 5000) == 'R', "the holder could not take its locks");

  /* A waiter blocked in F_SETLKW on the root's bytes 10-19. */
  int waited[2];
  if (pipe(waited) != 0) return 2;
  pid_t waiter = fork();
  if (waiter == 0) {
    close(waited[0]);
    int fd = open_file("posix", O_RDWR);
    char c = record_lock(fd, F_SETLKW, F_WRLCK, 10, 10) == 0 ? 'L' : 'E';
    write(waited[1], &c, 1);
    _exit(c == 'L' ? 0 : 1);
  }
  close(waited[1]);
  CHECK(wait_blocked(waiter, SYS_fcntl), "the waiter is not blocked in F_SETLKW");

  /* Leases, and three being broken by children blocked in open(). */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigio;
  sigaction(SIGIO, &sa, NULL);
  int lease = open_file("lease", O_RDONLY);
  CHECK(fcntl(lease, F_SETLEASE, F_RDLCK) == 0, "F_SETLEASE F_RDLCK: %s", strerror(errno));
  int wdown = open_file("wdown", O_RDONLY);
  int runlock = open_file("runlock", O_RDONLY);
  int wunlock = open_file("wunlock", O_RDONLY);
  CHECK(fcntl(wdown, F_SETLEASE, F_WRLCK) == 0, "F_SETLEASE F_WRLCK: %s", strerror(errno));
  CHECK(fcntl(runlock, F_SETLEASE, F_RDLCK) == 0, "F_SETLEASE F_RDLCK: %s", strerror(errno));
  CHECK(fcntl(wunlock, F_SETLEASE, F_WRLCK) == 0, "F_SETLEASE F_WRLCK: %s", strerror(errno));
  /* One at a time: SIGIO does not queue. */
  struct child reader = breaker("wdown", O_RDONLY);     /* a write lease downgraded to read */
  CHECK(wait_sigio(1), "no SIGIO for the first break");
  struct child writer1 = breaker("runlock", O_WRONLY);  /* a read lease broken to unlock */
  CHECK(wait_sigio(2), "no SIGIO for the second break");
  struct child writer2 = breaker("wunlock", O_WRONLY);  /* a write lease broken to unlock */
  CHECK(wait_sigio(3), "no SIGIO for the third break");

  prog_ready(argv[1]);
  prog_wait_usr1();

  CHECK(sigio_count == 3, "%d SIGIO(s) after the restore, 3 before", (int)sigio_count);

  /* From a process that holds no lock. */
  pid_t prober = fork();
  if (prober == 0) {
    prog_failures = 0;
    int p = open_file("posix", O_RDWR);
    struct flock c = conflict(p, F_GETLK, F_WRLCK, 10, 10);
    CHECK(c.l_type == F_WRLCK && c.l_pid == me && c.l_start == 10 && c.l_len == 10,
          "bytes 10-19: type %d pid %d start %ld len %ld", c.l_type, c.l_pid, (long)c.l_start, (long)c.l_len);
    c = conflict(p, F_GETLK, F_WRLCK, 20, 30);
    CHECK(c.l_type == F_UNLCK, "bytes 20-49: type %d pid %d", c.l_type, c.l_pid);
    c = conflict(p, F_GETLK, F_WRLCK, 50, 10);
    CHECK(c.l_type == F_RDLCK && c.l_pid == holder, "bytes 50-59: type %d pid %d (holder %d)", c.l_type,
          c.l_pid, holder);
    c = conflict(p, F_GETLK, F_RDLCK, 100, 0);
    CHECK(c.l_type == F_UNLCK, "bytes 100-EOF for reading: type %d", c.l_type);
    c = conflict(p, F_GETLK, F_WRLCK, 1000, 1);
    CHECK(c.l_type == F_RDLCK && c.l_pid == me && c.l_start == 100 && c.l_len == 0,
          "byte 1000: type %d pid %d start %ld len %ld", c.l_type, c.l_pid, (long)c.l_start, (long)c.l_len);
    int f = open_file("flock", O_RDWR);
    CHECK(flock(f, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK, "flock: another description could lock it");
    int o = open_file("ofd", O_RDWR);
    c = conflict(o, F_OFD_GETLK, F_RDLCK, 0, 1);
    CHECK(c.l_type == F_WRLCK && c.l_pid == -1 && c.l_start == 0 && c.l_len == 10,
          "OFD bytes 0-9: type %d pid %d start %ld len %ld", c.l_type, c.l_pid, (long)c.l_start, (long)c.l_len);
    c = conflict(o, F_OFD_GETLK, F_WRLCK, 10, 0);
    CHECK(c.l_type == F_UNLCK, "OFD bytes 10-EOF: type %d", c.l_type);
    int s = open_file("shared", O_RDONLY);
    CHECK(flock(s, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK, "shared flock: an exclusive lock was free");
    CHECK(flock(s, LOCK_SH | LOCK_NB) == 0, "shared flock: a shared lock was refused");
    _exit(prog_failures ? 1 : 0);
  }
  CHECK(wait_status(prober) == 0, "the prober saw a lock missing or wrong (see above)");

  /* The owning descriptions may lock again: the locks are theirs. */
  CHECK(flock(flk, LOCK_EX | LOCK_NB) == 0, "the flock() description cannot lock again: %s", strerror(errno));
  CHECK(record_lock(ofd, F_OFD_SETLK, F_WRLCK, 0, 10) == 0, "the OFD description cannot lock again: %s",
        strerror(errno));
  CHECK(fcntl(lease, F_GETLEASE) == F_RDLCK, "lease: F_GETLEASE %d", fcntl(lease, F_GETLEASE));
  CHECK(fcntl(wdown, F_GETLEASE) == F_RDLCK, "write lease downgrading: F_GETLEASE %d", fcntl(wdown, F_GETLEASE));
  CHECK(fcntl(runlock, F_GETLEASE) == F_UNLCK, "read lease breaking: F_GETLEASE %d", fcntl(runlock, F_GETLEASE));
  CHECK(fcntl(wunlock, F_GETLEASE) == F_UNLCK, "write lease breaking: F_GETLEASE %d", fcntl(wunlock, F_GETLEASE));
  CHECK(read_byte(reader.result, 0) < 0 && read_byte(writer1.result, 0) < 0 && read_byte(writer2.result, 0) < 0,
        "a breaker's open() returned before its lease was released");
  CHECK(read_byte(waited[0], 0) < 0, "the waiter got its lock before the root released it");

  /* Release: each waiting call completes. */
  CHECK(record_lock(posix, F_SETLK, F_UNLCK, 10, 10) == 0, "F_UNLCK 10-19");
  CHECK(read_byte(waited[0], 5000) == 'L', "the waiter did not get the lock once released");
  CHECK(wait_status(waiter) == 0, "the waiter failed");
  CHECK(fcntl(wdown, F_SETLEASE, F_RDLCK) == 0, "downgrading the write lease: %s", strerror(errno));
  CHECK(fcntl(runlock, F_SETLEASE, F_UNLCK) == 0, "releasing the read lease: %s", strerror(errno));
  CHECK(fcntl(wunlock, F_SETLEASE, F_UNLCK) == 0, "releasing the write lease: %s", strerror(errno));
  struct child all[] = {reader, writer1, writer2};
  for (int i = 0; i < 3; i++) {
    CHECK(read_byte(all[i].result, 5000) == 'B', "breaker %d did not open once its lease went", i);
    CHECK(wait_status(all[i].pid) == 0, "breaker %d failed", i);
  }
  /* The lease still notifies its owner. */
  pid_t opener = fork();
  if (opener == 0) {
    int fd = open_file("lease", O_WRONLY | O_NONBLOCK);
    if (fd >= 0 || errno != EWOULDBLOCK) fprintf(stderr, "open for writing: fd %d, %s\n", fd, strerror(errno));
    _exit(fd < 0 && errno == EWOULDBLOCK ? 0 : 1);
  }
  int opened = wait_status(opener);
  CHECK(opened == 0, "an open for writing did not meet the lease (%d)", opened);
  CHECK(wait_sigio(4), "no SIGIO when the lease was broken (%d)", (int)sigio_count);
  CHECK(fcntl(lease, F_GETLEASE) == F_UNLCK, "the broken lease: F_GETLEASE %d", fcntl(lease, F_GETLEASE));
  CHECK(fcntl(lease, F_SETLEASE, F_UNLCK) == 0, "releasing the lease");

  close(go[1]);
  CHECK(wait_status(holder) == 0, "the holder failed");
  return prog_finish();
}
