/* What has no name left, or whose directory is gone, all in DIR:
 *
 *   deleted READY DIR
 *
 * - its cwd, a directory removed since (mode 0751);
 * - an fd on another removed directory (mode 0705), at an offset of its own;
 * - an fd on a character device node (1:3, /dev/null's numbers), unlinked;
 * - a fifo with no name left, held by a reader and a writer, 5 bytes queued;
 * - an fd on a file whose directory was removed (the file with no name left,
 *   a ghost), at an offset;
 * - an fd on a file whose directory was removed while another name of it
 *   survives elsewhere (DIR/other): still the same inode as that name.
 *
 * After SIGUSR1 each is checked: type, mode, numbers, no name (nlink 0) or
 * the surviving name's inode, the fifo's bytes and that the two ends still
 * talk, the data and offsets. Exit 0 only if everything held. */
#include "prog_common.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

static const char data[] = "data of a file whose directory is gone";

static int mkdir_in(const char* dir, const char* name, mode_t mode, char* out) {
  snprintf(out, 4096, "%s/%s", dir, name);
  rmdir(out);
  return mkdir(out, mode) == 0 && chmod(out, mode) == 0 ? 0 : -1;
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  prog_install_usr1();
  const char* dir = argv[2];
  char path[4096], sub[4096], file[4096], other[4096];

  /* The cwd, removed. */
  if (mkdir_in(dir, "cwd", 0751, path) != 0 || chdir(path) != 0 || rmdir(path) != 0) return 2;
  /* A removed directory held open, its offset moved by a readdir. */
  if (mkdir_in(dir, "held", 0705, path) != 0) return 2;
  int held = open(path, O_RDONLY | O_DIRECTORY);
  if (held < 0 || rmdir(path) != 0) return 2;
  /* A device node with no name left. */
  snprintf(path, sizeof path, "%s/null", dir);
  unlink(path);
  if (mknod(path, S_IFCHR | 0640, makedev(1, 3)) != 0) return 2;
  int dev = open(path, O_RDWR);
  if (dev < 0 || unlink(path) != 0) return 2;
  /* A fifo with no name left, bytes in it. */
  snprintf(path, sizeof path, "%s/fifo", dir);
  unlink(path);
  if (mkfifo(path, 0620) != 0 || chmod(path, 0620) != 0) return 2;
  int fifo_r = open(path, O_RDONLY | O_NONBLOCK);
  int fifo_w = open(path, O_WRONLY | O_NONBLOCK);
  if (fifo_r < 0 || fifo_w < 0 || write(fifo_w, "hello", 5) != 5 || unlink(path) != 0) return 2;
  /* A ghost file whose directory was removed. */
  if (mkdir_in(dir, "sub", 0755, sub) != 0) return 2;
  snprintf(file, sizeof file, "%s/f", sub);
  int ghost = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (ghost < 0 || write(ghost, data, sizeof data) != (ssize_t)sizeof data || lseek(ghost, 7, SEEK_SET) != 7)
    return 2;
  if (unlink(file) != 0 || rmdir(sub) != 0) return 2;
  /* A file whose directory was removed, another name of it left. */
  if (mkdir_in(dir, "sub2", 0755, sub) != 0) return 2;
  snprintf(file, sizeof file, "%s/f", sub);
  snprintf(other, sizeof other, "%s/other", dir);
  unlink(other);
  int linked = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (linked < 0 || write(linked, data, sizeof data) != (ssize_t)sizeof data || link(file, other) != 0) return 2;
  if (lseek(linked, 3, SEEK_SET) != 3 || unlink(file) != 0 || rmdir(sub) != 0) return 2;
  struct stat other_st;
  if (stat(other, &other_st) != 0) return 2;

  prog_ready(argv[1]);
  prog_wait_usr1();

  struct stat st;
  CHECK(stat(".", &st) == 0 && S_ISDIR(st.st_mode) && st.st_nlink == 0 && (st.st_mode & 07777) == 0751,
        "cwd: mode %#o, nlink %lu", st.st_mode, (unsigned long)st.st_nlink);
  char buf[4096];
  errno = 0;
  CHECK(getcwd(buf, sizeof buf) == NULL && errno == ENOENT, "getcwd of a removed cwd: %s", strerror(errno));
  CHECK(open("new", O_WRONLY | O_CREAT, 0600) < 0 && errno == ENOENT, "a file made in the removed cwd");

  CHECK(fstat(held, &st) == 0 && S_ISDIR(st.st_mode) && st.st_nlink == 0 && (st.st_mode & 07777) == 0705,
        "held directory: mode %#o, nlink %lu", st.st_mode, (unsigned long)st.st_nlink);
  CHECK(openat(held, "new", O_WRONLY | O_CREAT, 0600) < 0 && errno == ENOENT, "a file made in the removed directory");

  CHECK(fstat(dev, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3) && st.st_nlink == 0 &&
            (st.st_mode & 07777) == 0640,
        "device: mode %#o, rdev %lx, nlink %lu", st.st_mode, (unsigned long)st.st_rdev, (unsigned long)st.st_nlink);
  CHECK(write(dev, "x", 1) == 1 && read(dev, buf, 1) == 0, "the device is not /dev/null's");

  CHECK(fstat(fifo_r, &st) == 0 && S_ISFIFO(st.st_mode) && st.st_nlink == 0 && (st.st_mode & 07777) == 0620,
        "fifo: mode %#o, nlink %lu", st.st_mode, (unsigned long)st.st_nlink);
  memset(buf, 0, 8);
  CHECK(read(fifo_r, buf, 8) == 5 && memcmp(buf, "hello", 5) == 0, "the fifo's queued bytes: %.5s", buf);
  CHECK(write(fifo_w, "again", 5) == 5 && read(fifo_r, buf, 8) == 5 && memcmp(buf, "again", 5) == 0,
        "the fifo's two ends no longer talk");
  CHECK((fcntl(fifo_r, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == (O_RDONLY | O_NONBLOCK), "fifo reader flags");

  CHECK(fstat(ghost, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 0 && st.st_size == sizeof data,
        "ghost in a removed directory: nlink %lu, size %ld", (unsigned long)st.st_nlink, (long)st.st_size);
  CHECK(lseek(ghost, 0, SEEK_CUR) == 7, "ghost offset");
  CHECK(pread(ghost, buf, sizeof data, 0) == (ssize_t)sizeof data && memcmp(buf, data, sizeof data) == 0,
        "ghost data");

  CHECK(fstat(linked, &st) == 0 && st.st_ino == other_st.st_ino && st.st_dev == other_st.st_dev &&
            st.st_nlink >= 1, /* 2 after a --leave-running dump: its link remap waits for a restore */
        "the file of the removed directory is no longer the one named other: ino %lu (other %lu), nlink %lu",
        (unsigned long)st.st_ino, (unsigned long)other_st.st_ino, (unsigned long)st.st_nlink);
  CHECK(lseek(linked, 0, SEEK_CUR) == 3, "linked offset");
  CHECK(pwrite(linked, "W", 1, 0) == 1, "write");
  int o = open(other, O_RDONLY);
  CHECK(o >= 0 && read(o, buf, 1) == 1 && buf[0] == 'W', "a write through the fd is not seen through other");
  return prog_finish();
}
