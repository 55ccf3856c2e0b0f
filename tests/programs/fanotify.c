/* A fanotify group and its marks:
 *
 *   fanotify READY DIR [deleted]
 *
 * fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE,
 * O_RDONLY | O_LARGEFILE), then marks: an inode mark on DIR/a.txt
 * (FAN_MODIFY | FAN_CLOSE_WRITE), an inode mark on DIR/b.txt with only an
 * ignore mask (FAN_MODIFY, FAN_MARK_IGNORED_SURV_MODIFY), a mount mark on
 * DIR's mount (FAN_OPEN_EXEC) and a file system mark on DIR's file system
 * (FAN_MODIFY). After SIGUSR1: the group's fdinfo shows the same flags and
 * the same marks (compared line by line, sorted), and a write to b.txt then
 * to a.txt gives FAN_MODIFY events for a.txt (the inode mark and the file
 * system mark) and none for b.txt (its ignore mask).
 * "deleted": also a mark on a file held open whose name is removed (a dump
 * must refuse it). Exit 0 only if all held. */
#include "prog_common.h"

#include <sys/fanotify.h>
#include <sys/stat.h>

static char lines[32][512];

/* The "fanotify " lines of the group's fdinfo, sorted; how many. */
static int mark_lines(int fd, char out[][512]) {
  char path[64], buf[8192];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  int f = open(path, O_RDONLY);
  if (f < 0) return -1;
  ssize_t n = read(f, buf, sizeof buf - 1);
  close(f);
  if (n <= 0) return -1;
  buf[n] = 0;
  int k = 0;
  for (char* line = strtok(buf, "\n"); line && k < 32; line = strtok(NULL, "\n"))
    if (strncmp(line, "fanotify ", 9) == 0) snprintf(out[k++], 512, "%s", line);
  for (int i = 0; i < k; i++)
    for (int j = i + 1; j < k; j++)
      if (strcmp(out[i], out[j]) > 0) {
        char t[512];
        memcpy(t, out[i], 512);
        memcpy(out[i], out[j], 512);
        memcpy(out[j], t, 512);
      }
  return k;
}

/* Reads events (closing their fds) until a FAN_MODIFY of the file of inode
 * want arrives; counts those of the inode never. */
static void read_until(int g, ino_t want, ino_t never, int* got_want, int* got_never) {
  char buf[8192] __attribute__((aligned(8)));
  for (int tries = 0; tries < 500 && !*got_want; tries++) {
    ssize_t len = read(g, buf, sizeof buf);
    if (len <= 0) {
      usleep(10000);
      continue;
    }
    for (struct fanotify_event_metadata* m = (struct fanotify_event_metadata*)buf; FAN_EVENT_OK(m, len);
         m = FAN_EVENT_NEXT(m, len)) {
      if (m->fd < 0) continue;
      struct stat st;
      if (fstat(m->fd, &st) == 0) {
        if (st.st_ino == want && (m->mask & FAN_MODIFY)) *got_want = 1;
        if (st.st_ino == never) (*got_never)++;
      }
      close(m->fd);
    }
  }
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  int deleted = argc > 3 && strcmp(argv[3], "deleted") == 0;
  prog_install_usr1();
  char a[4200], b[4200], c[4200];
  snprintf(a, sizeof a, "%s/a.txt", argv[2]);
  snprintf(b, sizeof b, "%s/b.txt", argv[2]);
  snprintf(c, sizeof c, "%s/c.txt", argv[2]);
  int fa = open(a, O_RDWR | O_CREAT | O_TRUNC, 0600), fb = open(b, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fa < 0 || fb < 0) return 2;
  int g = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE, O_RDONLY | O_LARGEFILE);
  if (g < 0) return 2;
  if (fanotify_mark(g, FAN_MARK_ADD, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, a) != 0) return 3;
  if (fanotify_mark(g, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_MODIFY, AT_FDCWD,
                    b) != 0)
    return 4;
  if (fanotify_mark(g, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_OPEN_EXEC, AT_FDCWD, argv[2]) != 0) return 5;
  if (fanotify_mark(g, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_MODIFY, AT_FDCWD, argv[2]) != 0) return 6;
  if (deleted) {
    int fc = open(c, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fc < 0 || fanotify_mark(g, FAN_MARK_ADD, FAN_CLOSE_WRITE, AT_FDCWD, c) != 0 || unlink(c) != 0) return 7;
  }
  int n = mark_lines(g, lines);
  if (n != (deleted ? 6 : 5)) return 8;
  prog_ready(argv[1]);
  prog_wait_usr1();

  char now[32][512];
  int k = mark_lines(g, now);
  CHECK(k == n, "%d fanotify lines in fdinfo, were %d", k, n);
  for (int i = 0; i < k && i < n; i++) CHECK(strcmp(now[i], lines[i]) == 0, "now '%s', was '%s'", now[i], lines[i]);
  int fl = fcntl(g, F_GETFL);
  CHECK(fl >= 0 && (fl & O_NONBLOCK), "the group's flags %#x: not O_NONBLOCK", fl);
  struct stat sa, sb;
  if (fstat(fa, &sa) != 0 || fstat(fb, &sb) != 0) return 2;
  CHECK(write(fb, "b", 1) == 1 && write(fa, "a", 1) == 1, "write: %s", strerror(errno));
  int got_a = 0, got_b = 0;
  read_until(g, sa.st_ino, sb.st_ino, &got_a, &got_b);
  CHECK(got_a, "no FAN_MODIFY event of a.txt");
  CHECK(got_b == 0, "%d event(s) of b.txt, whose FAN_MODIFY is ignored", got_b);
  return prog_finish();
}
