/* inotify watches on files with no name left:
 *
 *   inotifygone READY DIR [mapped]
 *
 * An inotify (blocking) watches DIR/d (IN_CREATE: watch 1), DIR/gone.txt
 * (IN_MODIFY | IN_CLOSE_WRITE | IN_DELETE_SELF: watch 2, held open as an fd)
 * and DIR/gone-dir (IN_CREATE | IN_DELETE_SELF: watch 3, held open as an fd),
 * then removes the names of both. After SIGUSR1: the numbers are the same,
 * and a write to the file, a file made in the removed directory (refused:
 * it is removed, ENOENT, no event), a file made in DIR/d and the closes of
 * both give exactly the events of those watches, in order: IN_MODIFY on 2,
 * IN_CREATE on 1, then IN_CLOSE_WRITE, IN_DELETE_SELF, IN_IGNORED on 2, and
 * IN_DELETE_SELF, IN_IGNORED on 3.
 * "mapped": the removed file is held by a mapping only (no fd): a dump must
 * refuse it. */
#include "prog_common.h"

#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>

struct want {
  int wd;
  uint32_t mask;
  const char* name;
};

static void expect_events(int in, const struct want* w, int n) {
  char buf[4096] __attribute__((aligned(8)));
  int seen = 0;
  while (seen < n) {
    ssize_t len = read(in, buf, sizeof buf);
    if (len <= 0) {
      CHECK(0, "read of the inotify: %zd (%s), %d of %d events seen", len, strerror(errno), seen, n);
      return;
    }
    for (char* p = buf; p < buf + len;) {
      struct inotify_event* e = (struct inotify_event*)p;
      if (seen < n) {
        CHECK(e->wd == w[seen].wd && e->mask == w[seen].mask &&
                  strcmp(e->len ? e->name : "", w[seen].name) == 0,
              "event %d: wd %d mask %#x name '%s', want wd %d mask %#x name '%s'", seen, e->wd, e->mask,
              e->len ? e->name : "", w[seen].wd, w[seen].mask, w[seen].name);
      } else {
        CHECK(0, "an event more: wd %d mask %#x", e->wd, e->mask);
      }
      seen++;
      p += sizeof *e + e->len;
    }
  }
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  int mapped = argc > 3 && strcmp(argv[3], "mapped") == 0;
  prog_install_usr1();
  char d[4096], file[4096], dir[4096], made[4200], in_gone[4200];
  snprintf(d, sizeof d, "%s/d", argv[2]);
  snprintf(file, sizeof file, "%s/gone.txt", argv[2]);
  snprintf(dir, sizeof dir, "%s/gone-dir", argv[2]);
  snprintf(made, sizeof made, "%s/made", d);
  snprintf(in_gone, sizeof in_gone, "%s/made", dir);
  if (mkdir(d, 0755) != 0 || mkdir(dir, 0755) != 0) return 2;
  int f = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (f < 0 || write(f, "data", 4) != 4) return 2;
  int df = open(dir, O_RDONLY | O_DIRECTORY);
  if (df < 0) return 2;
  int in = inotify_init1(0);
  if (in < 0) return 2;
  if (inotify_add_watch(in, d, IN_CREATE) != 1) return 2;
  if (inotify_add_watch(in, file, IN_MODIFY | IN_CLOSE_WRITE | IN_DELETE_SELF) != 2) return 2;
  if (inotify_add_watch(in, dir, IN_CREATE | IN_DELETE_SELF) != 3) return 2;
  void* map = NULL;
  if (mapped) {
    map = mmap(NULL, 4096, PROT_READ, MAP_SHARED, f, 0);
    if (map == MAP_FAILED || close(f) != 0) return 2;
    f = -1;
  }
  if (unlink(file) != 0 || rmdir(dir) != 0) return 2;
  /* No watch asked for what the removals did (IN_ATTRIB, IN_DELETE). */
  int queued = -1;
  if (ioctl(in, FIONREAD, &queued) != 0 || queued != 0) return 3;
  prog_ready(argv[1]);
  prog_wait_usr1();

  if (mapped) {
    CHECK(memcmp(map, "data", 4) == 0, "the mapping: %.4s", (const char*)map);
    return prog_finish();
  }
  CHECK(write(f, "more", 4) == 4, "write: %s", strerror(errno));
  CHECK(open(in_gone, O_RDWR | O_CREAT, 0600) < 0 && errno == ENOENT, "a file made in the removed directory: %s",
        strerror(errno));
  int m = open(made, O_RDWR | O_CREAT, 0600);
  CHECK(m >= 0, "open %s: %s", made, strerror(errno));
  close(m);
  close(f);
  close(df);
  static const struct want events[] = {
      {2, IN_MODIFY, ""},      {1, IN_CREATE, "made"}, {2, IN_CLOSE_WRITE, ""}, {2, IN_DELETE_SELF, ""},
      {2, IN_IGNORED, ""},     {3, IN_DELETE_SELF, ""}, {3, IN_IGNORED, ""},
  };
  expect_events(in, events, (int)(sizeof events / sizeof events[0]));
  return prog_finish();
}
