/* A chrooted process holding namespace files:
 *
 *   rootns READY DIR            - fds on /proc/self/ns/net and uts (read) and
 *                                 mnt (O_PATH), then chroot DIR/jail, cwd
 *                                 /in (a directory of the jail)
 *   rootns READY DIR other-ns   - (no chroot) also an fd on a uts namespace
 *                                 that no process is in any more: refused
 *
 * After SIGUSR1: the root is the jail (stat("/") is its inode, /inside reads
 * its data), the cwd is /in, each namespace fd is on the same namespace as
 * at the start (inode) with its flags, and setns() through the uts one works.
 * Exit 0 only if everything held. */
#include "prog_common.h"

#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>

static const char data[] = "inside the jail";

struct nsfd {
  const char* name;
  int flags;
  int fd;
  ino_t ino;
};

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  int other = argc > 3 && strcmp(argv[3], "other-ns") == 0;
  prog_install_usr1();
  struct nsfd ns[] = {{"net", O_RDONLY, -1, 0}, {"uts", O_RDONLY, -1, 0}, {"mnt", O_PATH, -1, 0}};
  for (int i = 0; i < 3; i++) {
    char p[64];
    snprintf(p, sizeof p, "/proc/self/ns/%s", ns[i].name);
    struct stat st;
    ns[i].fd = open(p, ns[i].flags);
    if (ns[i].fd < 0 || fstat(ns[i].fd, &st) != 0) return 2;
    ns[i].ino = st.st_ino;
  }
  if (other) {
    /* A namespace only a child was in; the child is gone. */
    int pfd[2];
    if (pipe(pfd) != 0) return 2;
    pid_t child = fork();
    if (child == 0) {
      if (unshare(CLONE_NEWUTS) != 0) _exit(1);
      if (write(pfd[1], "x", 1) != 1) _exit(1);
      pause();
      _exit(0);
    }
    char c;
    if (read(pfd[0], &c, 1) != 1) return 2;
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/ns/uts", (int)child);
    int fd = open(p, O_RDONLY);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    if (fd < 0) return 2;
    prog_ready(argv[1]);
    prog_wait_usr1();
    return prog_finish();
  }

  char jail[4096], path[4096];
  snprintf(jail, sizeof jail, "%s/jail", argv[2]);
  mkdir(jail, 0755);
  snprintf(path, sizeof path, "%s/in", jail);
  mkdir(path, 0755);
  snprintf(path, sizeof path, "%s/inside", jail);
  int w = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (w < 0 || write(w, data, sizeof data) != (ssize_t)sizeof data) return 2;
  close(w);
  struct stat jail_st, in_st;
  if (stat(jail, &jail_st) != 0) return 2;
  /* The ready file is outside the jail: written through a directory fd. */
  char ready_dir[4096];
  snprintf(ready_dir, sizeof ready_dir, "%s", argv[1]);
  char* slash = strrchr(ready_dir, '/');
  if (!slash) return 2;
  *slash = 0;
  const char* ready_name = slash + 1;
  int rd = open(ready_dir, O_RDONLY | O_DIRECTORY);
  if (rd < 0) return 2;
  if (chroot(jail) != 0 || chdir("/in") != 0 || stat(".", &in_st) != 0) return 2;

  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", ready_name);
  int rf = openat(rd, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (rf < 0 || dprintf(rf, "%d\n", (int)getpid()) <= 0 || close(rf) != 0 || renameat(rd, tmp, rd, ready_name) != 0)
    return 2;
  close(rd);
  prog_wait_usr1();

  struct stat st;
  CHECK(stat("/", &st) == 0 && st.st_ino == jail_st.st_ino && st.st_dev == jail_st.st_dev,
        "the root is no longer the jail (inode %lu, jail %lu)", (unsigned long)st.st_ino,
        (unsigned long)jail_st.st_ino);
  CHECK(stat(".", &st) == 0 && st.st_ino == in_st.st_ino, "the cwd is no longer /in of the jail");
  char buf[64] = {0};
  int r = open("/inside", O_RDONLY);
  CHECK(r >= 0 && read(r, buf, sizeof buf) == (ssize_t)sizeof data && strcmp(buf, data) == 0,
        "/inside of the jail: %s", buf);
  CHECK(stat("/jail", &st) != 0, "the file system outside the jail is reachable");
  for (int i = 0; i < 3; i++) {
    CHECK(fstat(ns[i].fd, &st) == 0 && st.st_ino == ns[i].ino, "ns %s: inode %lu, was %lu", ns[i].name,
          (unsigned long)st.st_ino, (unsigned long)ns[i].ino);
    int fl = fcntl(ns[i].fd, F_GETFL);
    CHECK(fl >= 0 && (fl & (O_ACCMODE | O_PATH)) == ns[i].flags, "ns %s: flags %#o", ns[i].name, fl);
  }
  CHECK(setns(ns[1].fd, CLONE_NEWUTS) == 0, "setns through the uts fd: %s", strerror(errno));
  return prog_finish();
}
