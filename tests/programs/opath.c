/* O_PATH fds: on a file, on a directory, and on a symlink itself
 * (O_PATH|O_NOFOLLOW), all in DIR.
 *
 *   opath READY DIR
 *
 * After SIGUSR1 each fd is checked: still O_PATH (and O_NOFOLLOW for the
 * symlink), on the same inode (fstatat AT_EMPTY_PATH), the symlink's target
 * readable through it (readlinkat ""), the file's data through openat() of
 * the directory fd and through /proc/self/fd of the file fd. Exit 0 only if
 * everything held. */
#include "prog_common.h"

#include <sys/stat.h>

static const char data[] = "held by an O_PATH fd";

struct held {
  int fd;
  ino_t ino;
  const char* what;
};

static void check_same(const struct held* h, int want_flags) {
  struct stat st;
  CHECK(fstatat(h->fd, "", &st, AT_EMPTY_PATH) == 0 && st.st_ino == h->ino, "%s: inode %lu, was %lu", h->what,
        (unsigned long)st.st_ino, (unsigned long)h->ino);
  int fl = fcntl(h->fd, F_GETFL);
  CHECK(fl >= 0 && (fl & want_flags) == want_flags, "%s: flags %#o lack %#o", h->what, fl, want_flags);
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  prog_install_usr1();
  char path[4096];
  snprintf(path, sizeof path, "%s/file", argv[2]);
  int w = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (w < 0 || write(w, data, sizeof data) != (ssize_t)sizeof data) return 2;
  close(w);
  char link[4096];
  snprintf(link, sizeof link, "%s/link", argv[2]);
  unlink(link);
  if (symlink("file", link) != 0) return 2;

  struct held file = {open(path, O_PATH), 0, "file"};
  struct held dir = {open(argv[2], O_PATH | O_DIRECTORY), 0, "directory"};
  struct held sym = {open(link, O_PATH | O_NOFOLLOW), 0, "symlink"};
  struct held *all[] = {&file, &dir, &sym};
  for (int i = 0; i < 3; i++) {
    struct stat st;
    if (all[i]->fd < 0 || fstatat(all[i]->fd, "", &st, AT_EMPTY_PATH) != 0) return 2;
    all[i]->ino = st.st_ino;
  }
  prog_ready(argv[1]);
  prog_wait_usr1();

  check_same(&file, O_PATH);
  check_same(&dir, O_PATH);
  check_same(&sym, O_PATH | O_NOFOLLOW);
  char target[64] = {0};
  CHECK(readlinkat(sym.fd, "", target, sizeof target - 1) == 4 && strcmp(target, "file") == 0,
        "symlink: readlinkat gives '%s'", target);
  char buf[64] = {0};
  int r = openat(dir.fd, "file", O_RDONLY);
  CHECK(r >= 0 && read(r, buf, sizeof buf) == (ssize_t)sizeof data && memcmp(buf, data, sizeof data) == 0,
        "directory: openat of its file");
  if (r >= 0) close(r);
  char self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", file.fd);
  memset(buf, 0, sizeof buf);
  r = open(self, O_RDONLY);
  CHECK(r >= 0 && read(r, buf, sizeof buf) == (ssize_t)sizeof data && memcmp(buf, data, sizeof data) == 0,
        "file: reopened through /proc/self/fd");
  if (r >= 0) close(r);
  /* An O_PATH fd has no offset and cannot be read. */
  CHECK(read(file.fd, buf, 1) < 0 && errno == EBADF, "file: read on an O_PATH fd must fail with EBADF");
  return prog_finish();
}
