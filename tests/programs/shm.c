/* Shared memory between a parent and its child: 16 MiB of MAP_SHARED|
 * MAP_ANONYMOUS memory and an 8 MiB sealed memfd mapped by both (the parent
 * also holds the memfd at an offset). Each writes its half before the dump;
 * after SIGUSR1 each checks the other's half and that new writes still cross. */
#include "prog_common.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define ANON (16u << 20)
#define MEMFD (8u << 20)

struct flags {
  volatile int child_ready, parent_token, child_ack;
};

static size_t check_half(const uint64_t* mem, size_t bytes, int half, uint64_t salt) {
  size_t words = bytes / 16, bad = 0;
  for (size_t i = 0; i < words; i++) bad += mem[half * words + i] != prog_hash(i + salt);
  return bad;
}

static void fill_half(uint64_t* mem, size_t bytes, int half, uint64_t salt) {
  size_t words = bytes / 16;
  for (size_t i = 0; i < words; i++) mem[half * words + i] = prog_hash(i + salt);
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  prog_install_usr1();
  uint64_t* anon = mmap(NULL, ANON, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  struct flags* fl = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  int mfd = memfd_create("mc-test", MFD_ALLOW_SEALING);
  if (anon == MAP_FAILED || fl == MAP_FAILED || mfd < 0 || ftruncate(mfd, MEMFD) != 0) return 2;
  uint64_t* mem = mmap(NULL, MEMFD, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  if (mem == MAP_FAILED) return 2;
  if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) return 2;
  lseek(mfd, 4096, SEEK_SET);
  pid_t child = fork();
  if (child == 0) {
    fill_half(anon, ANON, 1, 11);
    fill_half(mem, MEMFD, 1, 22);
    fl->child_ready = 1;
    prog_wait_usr1();
    CHECK(check_half(anon, ANON, 0, 33) == 0, "child: parent's anon half");
    CHECK(check_half(mem, MEMFD, 0, 44) == 0, "child: parent's memfd half");
    for (int i = 0; i < 5000 && fl->parent_token != 42; i++) usleep(1000);
    CHECK(fl->parent_token == 42, "child: the parent's new write is not seen");
    fl->child_ack = 43;
    return prog_finish();
  }
  fill_half(anon, ANON, 0, 33);
  fill_half(mem, MEMFD, 0, 44);
  while (!fl->child_ready) usleep(1000);
  prog_ready(argv[1]);
  prog_wait_usr1();
  kill(child, SIGUSR1);
  CHECK(check_half(anon, ANON, 1, 11) == 0, "parent: child's anon half");
  CHECK(check_half(mem, MEMFD, 1, 22) == 0, "parent: child's memfd half");
  fl->parent_token = 42;
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "child failed: %#x", status);
  CHECK(fl->child_ack == 43, "the child's new write is not seen");
  CHECK(fcntl(mfd, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW), "seals %#x", fcntl(mfd, F_GET_SEALS));
  CHECK(lseek(mfd, 0, SEEK_CUR) == 4096, "memfd offset");
  uint64_t word;
  CHECK(pread(mfd, &word, 8, 0) == 8 && word == prog_hash(44), "memfd fd and mapping disagree");
  return prog_finish();
}
