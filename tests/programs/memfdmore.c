/* What a memfd holds beyond its bytes, and what its mappings hold:
 *  - "sealed": written, then chmod 0640 and chown 123:456, then sealed
 *    F_SEAL_WRITE|SHRINK|GROW, then mapped MAP_SHARED PROT_READ (the kernel
 *    clears VM_MAYWRITE: mprotect(PROT_WRITE) fails with EACCES);
 *  - "future": mapped MAP_SHARED read-write, then F_SEAL_FUTURE_WRITE|SEAL;
 *    a child forked after the seal shares the writable mapping; a read-only
 *    shared mapping made after the seal cannot be made writable;
 *  - "private": mapped MAP_PRIVATE; one page of the mapping written (its copy
 *    is the mapping's, not the file's), one page of the file written after
 *    (the mapping sees the file there);
 *  - "plain": created without MFD_ALLOW_SEALING (F_GET_SEALS is F_SEAL_SEAL).
 * After SIGUSR1 every piece is checked: contents of the files and of the
 * mappings, seals, mode, owner, the errors of writes the seals forbid, and
 * that the private mapping's untouched pages still follow the file. */
#include "prog_common.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define PG 4096

static char page_byte(int file, int page) { return (char)('a' + file * 8 + page); }

static int make(const char* name, unsigned flags, int pages, int file) {
  int fd = memfd_create(name, flags);
  if (fd < 0) exit(2);
  char buf[PG];
  for (int p = 0; p < pages; p++) {
    memset(buf, page_byte(file, p), PG);
    if (pwrite(fd, buf, PG, (off_t)p * PG) != PG) exit(2);
  }
  return fd;
}

static int page_is(const char* at, char c) {
  for (int i = 0; i < PG; i++)
    if (at[i] != c) return 0;
  return 1;
}

static int file_page_is(int fd, int page, char c) {
  char buf[PG];
  return pread(fd, buf, PG, (off_t)page * PG) == PG && page_is(buf, c);
}

/* Anonymous: of the mapping at addr (its own copies, not the file's pages
 * that it maps), in kB (-1: not found). */
static long anonymous_kb(const void* addr) {
  FILE* f = fopen("/proc/self/smaps", "r");
  char line[512];
  long kb = -1;
  int in = 0;
  unsigned long want = (unsigned long)addr;
  while (f && fgets(line, sizeof(line), f)) {
    unsigned long s, e;
    if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) in = s == want;
    else if (in && sscanf(line, "Anonymous: %ld kB", &kb) == 1) break;
  }
  if (f) fclose(f);
  return kb;
}

static void check_sealed(int fd, const char* ro) {
  struct stat st;
  CHECK(fstat(fd, &st) == 0 && (st.st_mode & 07777) == 0640, "sealed: mode %o", st.st_mode & 07777);
  CHECK(st.st_uid == 123 && st.st_gid == 456, "sealed: owner %u:%u", st.st_uid, st.st_gid);
  CHECK(st.st_size == 3 * PG, "sealed: size %lld", (long long)st.st_size);
  int seals = fcntl(fd, F_GET_SEALS);
  CHECK(seals == (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW), "sealed: seals %#x", seals);
  for (int p = 0; p < 3; p++) {
    CHECK(file_page_is(fd, p, page_byte(0, p)), "sealed: file page %d", p);
    CHECK(page_is(ro + p * PG, page_byte(0, p)), "sealed: mapped page %d", p);
  }
  errno = 0;
  CHECK(pwrite(fd, "x", 1, 0) < 0 && errno == EPERM, "sealed: a write is not refused (errno %d)", errno);
  errno = 0;
  CHECK(mprotect((void*)ro, 3 * PG, PROT_READ | PROT_WRITE) != 0 && errno == EACCES,
        "sealed: the read-only shared mapping can be made writable (errno %d)", errno);
  CHECK(ftruncate(fd, PG) != 0, "sealed: it shrank");
}

static void check_future(int fd, char* rw, const char* ro, char child_byte) {
  int seals = fcntl(fd, F_GET_SEALS);
  CHECK(seals == (F_SEAL_FUTURE_WRITE | F_SEAL_SEAL), "future: seals %#x", seals);
  struct stat st;
  CHECK(fstat(fd, &st) == 0 && (st.st_mode & 07777) == 0600, "future: mode %o", st.st_mode & 07777);
  CHECK(page_is(ro + PG, page_byte(1, 1)), "future: read-only mapping, page 1");
  CHECK(rw[0] == child_byte, "future: the child's write through its mapping: %#x", rw[0]);
  rw[PG] = 'Z';  /* the writable mapping made before the seal stays writable */
  char c = 0;
  CHECK(pread(fd, &c, 1, PG) == 1 && c == 'Z', "future: a write through the mapping is not in the file");
  CHECK(ro[PG] == 'Z', "future: the read-only mapping does not see it");
  errno = 0;
  CHECK(pwrite(fd, "x", 1, 0) < 0 && errno == EPERM, "future: a write is not refused (errno %d)", errno);
  errno = 0;
  void* m = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  CHECK(m == MAP_FAILED && errno == EPERM, "future: a new writable mapping is not refused (errno %d)", errno);
  errno = 0;
  CHECK(mprotect((void*)ro, 2 * PG, PROT_READ | PROT_WRITE) != 0 && errno == EACCES,
        "future: the read-only mapping can be made writable (errno %d)", errno);
}

static void check_private(int fd, char* pm) {
  struct stat st;
  CHECK(fstat(fd, &st) == 0 && (st.st_mode & 07777) == 0604, "private: mode %o", st.st_mode & 07777);
  CHECK(page_is(pm, page_byte(2, 0)), "private: mapped page 0");
  CHECK(page_is(pm + PG, 'P'), "private: the mapping's own copy of page 1");
  CHECK(file_page_is(fd, 1, page_byte(2, 1)), "private: the file's page 1 took the mapping's copy");
  CHECK(page_is(pm + 2 * PG, 'g'), "private: page 2 written to the file after the copy");
  CHECK(page_is(pm + 3 * PG, page_byte(2, 3)), "private: mapped page 3");
  long anon = anonymous_kb(pm);
  CHECK(anon == 4, "private: %ld kB of copies in the mapping, not its one page: the file's pages were copied", anon);
  /* Pages not copied still follow the file; the copied one does not. */
  char buf[PG];
  memset(buf, 'h', PG);
  CHECK(pwrite(fd, buf, PG, 0) == PG && page_is(pm, 'h'), "private: page 0 does not follow the file");
  memset(buf, 'i', PG);
  CHECK(pwrite(fd, buf, PG, PG) == PG && page_is(pm + PG, 'P'), "private: page 1 follows the file");
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  prog_install_usr1();

  int sealed = make("mc-sealed", MFD_ALLOW_SEALING, 3, 0);
  if (fchmod(sealed, 0640) || fchown(sealed, 123, 456)) return 2;
  if (fcntl(sealed, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW)) return 2;
  const char* sealed_ro = mmap(NULL, 3 * PG, PROT_READ, MAP_SHARED, sealed, 0);

  int future = make("mc-future", MFD_ALLOW_SEALING, 2, 1);
  if (fchmod(future, 0600)) return 2;
  char* future_rw = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, future, 0);
  if (future_rw == MAP_FAILED || fcntl(future, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SEAL)) return 2;
  const char* future_ro = mmap(NULL, 2 * PG, PROT_READ, MAP_SHARED, future, 0);

  int priv = make("mc-private", 0, 4, 2);
  if (fchmod(priv, 0604)) return 2;
  char* pm = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, priv, 0);
  int plain = make("mc-plain", 0, 1, 3);
  if (sealed_ro == MAP_FAILED || future_ro == MAP_FAILED || pm == MAP_FAILED) return 2;
  volatile char touch = pm[0];  /* page 0 mapped, still the file's */
  (void)touch;
  memset(pm + PG, 'P', PG);     /* page 1 copied on write */
  char buf[PG];
  memset(buf, 'g', PG);
  if (pwrite(priv, buf, PG, 2 * PG) != PG) return 2;

  int ready[2];
  if (pipe(ready)) return 2;
  pid_t child = fork();
  if (child == 0) {
    close(ready[0]);
    if (write(ready[1], "r", 1) != 1) return 3;
    close(ready[1]);
    prog_wait_usr1();
    CHECK(fcntl(future, F_GET_SEALS) == (F_SEAL_FUTURE_WRITE | F_SEAL_SEAL), "child: seals");
    CHECK(page_is(future_rw + PG, page_byte(1, 1)), "child: future page 1");
    future_rw[0] = 'C';
    return prog_finish();
  }
  close(ready[1]);
  char r;
  if (read(ready[0], &r, 1) != 1) return 2;
  close(ready[0]);
  prog_ready(argv[1]);
  prog_wait_usr1();

  check_sealed(sealed, sealed_ro);
  check_private(priv, pm);
  CHECK(fcntl(plain, F_GET_SEALS) == F_SEAL_SEAL, "plain: seals %#x", fcntl(plain, F_GET_SEALS));
  CHECK(file_page_is(plain, 0, page_byte(3, 0)), "plain: its page");
  kill(child, SIGUSR1);
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "child failed: %#x", status);
  check_future(future, future_rw, future_ro, 'C');
  return prog_finish();
}
