/* System V shared memory between a parent and its child: one segment with a
 * key, one already removed (IPC_RMID) while both stay attached, as runtimes
 * do. Each writes its half; after SIGUSR1 each checks the other's half and
 * that writes still cross; the parent checks the key still finds its segment
 * and the removed one is still marked removed. */
#include "prog_common.h"

#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define SEG (4u << 20)

struct flags { volatile int child_ready, token, ack; };

static size_t check_half(const uint64_t* m, int half, uint64_t salt) {
  size_t words = SEG / 16, bad = 0;
  for (size_t i = 8; i < words; i++) bad += m[half * words + i] != prog_hash(i + salt);
  return bad;
}
static void fill_half(uint64_t* m, int half, uint64_t salt) {
  size_t words = SEG / 16;
  for (size_t i = 8; i < words; i++) m[half * words + i] = prog_hash(i + salt);
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  prog_install_usr1();
  key_t key = (key_t)(0x4d430000 | (getpid() & 0xffff));
  int keyed = shmget(key, SEG, IPC_CREAT | IPC_EXCL | 0640);
  int removed = shmget(IPC_PRIVATE, SEG, IPC_CREAT | 0600);
  if (keyed < 0 || removed < 0) { perror("shmget"); return 2; }
  uint64_t* a = shmat(keyed, NULL, 0);
  uint64_t* b = shmat(removed, NULL, 0);
  if (a == (void*)-1 || b == (void*)-1) return 2;
  shmctl(removed, IPC_RMID, NULL);
  struct flags* fl = (struct flags*)b;
  pid_t child = fork();
  if (child == 0) {
    fill_half(a, 1, 1);
    fill_half(b, 1, 2);
    fl->child_ready = 1;
    prog_wait_usr1();
    CHECK(check_half(a, 0, 3) == 0 && check_half(b, 0, 4) == 0, "child: the parent's halves");
    for (int i = 0; i < 5000 && fl->token != 42; i++) usleep(1000);
    CHECK(fl->token == 42, "child: the parent's new write is not seen");
    fl->ack = 43;
    return prog_finish();
  }
  fill_half(a, 0, 3);
  fill_half(b, 0, 4);
  while (!fl->child_ready) usleep(1000);
  prog_ready(argv[1]);
  prog_wait_usr1();
  kill(child, SIGUSR1);
  CHECK(check_half(a, 1, 1) == 0 && check_half(b, 1, 2) == 0, "parent: the child's halves");
  fl->token = 42;
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %#x", status);
  CHECK(fl->ack == 43, "the child's new write is not seen");
  CHECK(shmget(key, 0, 0) == keyed, "the key no longer finds segment %d", keyed);
  struct shmid_ds ds;
  CHECK(shmctl(removed, IPC_STAT, &ds) == 0 && (ds.shm_perm.mode & SHM_DEST), "segment %d is not marked removed", removed);
  CHECK(shmctl(keyed, IPC_STAT, &ds) == 0 && (ds.shm_perm.mode & 0777) == 0640, "mode %o", ds.shm_perm.mode);
  shmdt(a);
  shmdt(b);
  shmctl(keyed, IPC_RMID, NULL);
  return prog_finish();
}
