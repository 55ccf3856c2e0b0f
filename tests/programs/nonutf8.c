/* Names that are not UTF-8, which a Linux process may have and proto3
 * strings may not: a file with a Latin-1 name held open, a unix socket bound
 * at a path with bytes 0xff 0xfe in it, a working directory named in Latin-1,
 * a comm cut by the kernel inside a UTF-8 character (15 bytes of a longer
 * name), and a thread whose comm is not UTF-8 at all. After SIGUSR1 it checks
 * every name and the file's data. */
#include "prog_common.h"

#include <pthread.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

/* 0xe9 is é in Latin-1. */
#define FILE_NAME "caf\xe9.latin1"
#define DIR_NAME "r\xe9pertoire"
#define SOCK_NAME "sock\xff\xfe"
/* Eight é (two bytes each): the kernel keeps 15 bytes, the last one the
 * first half of the eighth. */
#define LONG_COMM "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
#define THREAD_COMM "t\xff\xfe"

static volatile int thread_done;
static char thread_comm[16];

static void* thread_main(void* arg) {
  (void)arg;
  prctl(PR_SET_NAME, THREAD_COMM);
  while (!prog_usr1) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  prctl(PR_GET_NAME, thread_comm);
  thread_done = 1;
  return NULL;
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  prog_install_usr1();
  char path[4096], link[4096], expect[4096];

  snprintf(path, sizeof(path), "%s/%s", argv[2], DIR_NAME);
  if (mkdir(path, 0700) || chdir(path)) return 2;
  char cwd_before[4096];
  if (!getcwd(cwd_before, sizeof(cwd_before))) return 2;

  snprintf(path, sizeof(path), "%s/%s", argv[2], FILE_NAME);
  int file = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (file < 0 || write(file, "latin-1", 7) != 7) return 2;

  int sk = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/%s", argv[2], SOCK_NAME);
  if (sk < 0 || bind(sk, (struct sockaddr*)&addr, sizeof(addr)) || listen(sk, 1)) return 2;

  if (prctl(PR_SET_NAME, LONG_COMM)) return 2;
  char comm_before[16] = {0};
  prctl(PR_GET_NAME, comm_before);
  if (strlen(comm_before) != 15) return 2;

  pthread_t t;
  if (pthread_create(&t, NULL, thread_main, NULL)) return 2;

  prog_ready(argv[1]);
  prog_wait_usr1();
  pthread_join(t, NULL);

  snprintf(link, sizeof(link), "/proc/self/fd/%d", file);
  ssize_t n = readlink(link, expect, sizeof(expect) - 1);
  expect[n > 0 ? n : 0] = 0;
  CHECK(strcmp(expect, path) == 0, "the file is now named %s", expect);
  char data[8] = {0};
  CHECK(pread(file, data, 7, 0) == 7 && memcmp(data, "latin-1", 7) == 0, "the file's data");

  struct sockaddr_un got = {0};
  socklen_t len = sizeof(got);
  CHECK(getsockname(sk, (struct sockaddr*)&got, &len) == 0 && strcmp(got.sun_path, addr.sun_path) == 0,
        "the socket is bound at %s", got.sun_path);
  struct stat st;
  CHECK(stat(addr.sun_path, &st) == 0 && S_ISSOCK(st.st_mode), "no socket file at the bound path");

  char cwd[4096];
  CHECK(getcwd(cwd, sizeof(cwd)) && strcmp(cwd, cwd_before) == 0, "the working directory is %s", cwd);
  char comm[16] = {0};
  prctl(PR_GET_NAME, comm);
  CHECK(memcmp(comm, comm_before, 16) == 0, "the comm is %s", comm);
  CHECK(thread_done && strcmp(thread_comm, THREAD_COMM) == 0, "the thread's comm is %s", thread_comm);
  return prog_finish();
}
