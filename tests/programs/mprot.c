/* Shared mappings whose protection can or cannot be raised again: what
 * mprotect(PROT_WRITE) allows is VM_MAYWRITE, set by how the file was opened
 * when it was mapped, not by the protection now. Each fd is closed once its
 * mapping is made. After SIGUSR1:
 *  - a file opened O_RDONLY, mapped MAP_SHARED PROT_READ: EACCES;
 *  - the same file opened O_RDWR, mapped MAP_SHARED PROT_READ: allowed, and
 *    the write reaches the file;
 *  - mapped MAP_SHARED read-write, then mprotect()ed read-only: allowed;
 *  - opened O_RDONLY, mapped MAP_PRIVATE: allowed, the write stays private;
 *  - a memfd reopened O_RDONLY, mapped MAP_SHARED: EACCES;
 *  - shared anonymous memory made read-only: allowed;
 *  - a System V segment attached SHM_RDONLY: EACCES; attached read-write
 *    and made read-only: allowed. */
#include "prog_common.h"

#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>

#define PG 4096

struct mapping {
  const char* name;
  char* at;
  int may_write;
  int file_fd;  /* reopened after restore to look at the file; -1: none */
  char byte;
};

static int raise_write(struct mapping* m) {
  errno = 0;
  int r = mprotect(m->at, PG, PROT_READ | PROT_WRITE);
  if (m->may_write) {
    CHECK(r == 0, "%s: mprotect(PROT_WRITE) failed (errno %d)", m->name, errno);
    return r == 0;
  }
  CHECK(r != 0 && errno == EACCES, "%s: mprotect(PROT_WRITE) gave %d (errno %d), not EACCES", m->name, r, errno);
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  prog_install_usr1();
  char path[4096];
  snprintf(path, sizeof path, "%s/mprot.data", argv[2]);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  char buf[4 * PG];
  for (int p = 0; p < 4; p++) memset(buf + p * PG, 'A' + p, PG);
  if (fd < 0 || write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) return 2;
  close(fd);

  struct mapping maps[8];
  int n = 0;
  int ro = open(path, O_RDONLY), rw = open(path, O_RDWR);
  maps[n++] = (struct mapping){"file O_RDONLY shared", mmap(NULL, PG, PROT_READ, MAP_SHARED, ro, 0), 0, -1, 'A'};
  maps[n++] = (struct mapping){"file O_RDWR shared read-only", mmap(NULL, PG, PROT_READ, MAP_SHARED, rw, PG), 1, 1, 'B'};
  char* lowered = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 2 * PG);
  maps[n++] = (struct mapping){"file shared made read-only", lowered, 1, 2, 'C'};
  maps[n++] = (struct mapping){"file O_RDONLY private", mmap(NULL, PG, PROT_READ, MAP_PRIVATE, ro, 3 * PG), 1, -3, 'D'};
  close(ro);
  close(rw);

  int mfd = memfd_create("mprot", 0);
  memset(buf, 'M', PG);
  if (mfd < 0 || write(mfd, buf, PG) != PG) return 2;
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", mfd);
  int mro = open(proc, O_RDONLY);
  maps[n++] = (struct mapping){"memfd O_RDONLY shared", mmap(NULL, PG, PROT_READ, MAP_SHARED, mro, 0), 0, -1, 'M'};
  close(mro);
  close(mfd);

  char* anon = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  memset(anon, 'S', PG);
  maps[n++] = (struct mapping){"shared anonymous made read-only", anon, 1, -1, 'S'};

  int shm_ro = shmget(IPC_PRIVATE, PG, IPC_CREAT | 0600), shm_rw = shmget(IPC_PRIVATE, PG, IPC_CREAT | 0600);
  if (shm_ro < 0 || shm_rw < 0) return 2;
  char* w = shmat(shm_ro, NULL, 0);
  memset(w, 'R', PG);
  shmdt(w);
  char* sro = shmat(shm_ro, NULL, SHM_RDONLY);
  char* srw = shmat(shm_rw, NULL, 0);
  memset(srw, 'W', PG);
  shmctl(shm_ro, IPC_RMID, NULL);
  shmctl(shm_rw, IPC_RMID, NULL);
  maps[n++] = (struct mapping){"System V SHM_RDONLY", sro, 0, -1, 'R'};
  maps[n++] = (struct mapping){"System V made read-only", srw, 1, -1, 'W'};
  for (int i = 0; i < n; i++)
    if (maps[i].at == MAP_FAILED || maps[i].at == (char*)-1) return 2;
  if (mprotect(lowered, PG, PROT_READ) || mprotect(anon, PG, PROT_READ) || mprotect(srw, PG, PROT_READ)) return 2;

  prog_ready(argv[1]);
  prog_wait_usr1();

  for (int i = 0; i < n; i++) {
    struct mapping* m = &maps[i];
    CHECK(m->at[0] == m->byte && m->at[PG - 1] == m->byte, "%s: contents %c", m->name, m->at[0]);
    if (!raise_write(m)) continue;
    m->at[0] = 'z';
    if (m->file_fd == -1) continue;
    /* A shared file mapping writes through to the file; a private one not. */
    int f = open(path, O_RDONLY);
    char c = 0;
    int page = m->file_fd < 0 ? -m->file_fd : m->file_fd;
    CHECK(f >= 0 && pread(f, &c, 1, (off_t)page * PG) == 1, "%s: reading the file", m->name);
    if (m->file_fd > 0) CHECK(c == 'z', "%s: the write did not reach the file (%c)", m->name, c);
    else CHECK(c == m->byte, "%s: a private write reached the file (%c)", m->name, c);
    close(f);
  }
  return prog_finish();
}
