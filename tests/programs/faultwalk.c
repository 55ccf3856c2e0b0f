/* The tree the fault walk dumps and restores over and over (tests/e2e/
 * fault_walk_test.cc): two processes of two threads each, a pipe both hold
 * with bytes in flight, a unix stream pair between them with bytes queued
 * both ways, a TCP connection over loopback between them with bytes queued
 * both ways (its listener kept, with no connection pending), a ghost file
 * (unlinked, held open) and a file unlinked in its directory whose other name
 * is elsewhere (the dump links it back: a link remap), both in the root.
 *
 * SIGUSR2 to the root: both processes verify everything without consuming it
 * (the pipe's bytes are read and written back, queued bytes are peeked, the
 * threads must have run since the last time), and the root writes
 * "verified N ok" (or "failed") to DIR/faultwalk.verified, N counting the
 * SIGUSR2s. SIGUSR1 to the root: the same a last time, then both exit, 0
 * only if every check held. */
#include "prog_common.h"

#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define PIPE_BYTES 3000
#define UNIX_BYTES 700
#define TCP_BYTES 900
#define GHOST_BYTES 20000
#define LINKED_BYTES 5000

static volatile sig_atomic_t got_usr2;
static void on_usr2(int sig) { (void)sig; got_usr2 = 1; }

static volatile uint64_t ticks[2];
static void* ticker(void* arg) {
  int i = (int)(intptr_t)arg;
  for (;;) {
    ticks[i]++;
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

static unsigned char byte_at(size_t i, unsigned salt) { return (unsigned char)(prog_hash(i * 7 + salt) & 0xff); }

static void fill(unsigned char* b, size_t n, unsigned salt) {
  for (size_t i = 0; i < n; i++) b[i] = byte_at(i, salt);
}

static int same(const unsigned char* b, size_t n, unsigned salt) {
  for (size_t i = 0; i < n; i++)
    if (b[i] != byte_at(i, salt)) return 0;
  return 1;
}

/* Queued bytes, peeked (left where they are). */
static void check_peek(int fd, size_t n, unsigned salt, const char* what) {
  unsigned char buf[4096];
  size_t got = 0;
  for (int tries = 0; tries < 100 && got < n; tries++) {
    ssize_t r = recv(fd, buf, n, MSG_PEEK | MSG_DONTWAIT);
    got = r > 0 ? (size_t)r : 0;
    if (got < n) usleep(1000);
  }
  CHECK(got == n, "%s: %zu of %zu bytes queued", what, got, n);
  if (got == n) CHECK(same(buf, n, salt), "%s: the queued bytes differ", what);
}

static void check_ticks(int i, uint64_t* last) {
  uint64_t before = ticks[i];
  for (int tries = 0; tries < 200 && ticks[i] == before; tries++) usleep(1000);
  CHECK(ticks[i] != before && ticks[i] != *last, "thread %d does not run", i);
  *last = ticks[i];
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  prog_install_usr1();
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_usr2;
  sigaction(SIGUSR2, &sa, NULL);

  unsigned char buf[GHOST_BYTES];
  int pipefd[2], sv[2], status[2];
  if (pipe(pipefd) || pipe(status) || socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return 2;
  fill(buf, PIPE_BYTES, 1);
  if (write(pipefd[1], buf, PIPE_BYTES) != PIPE_BYTES) return 2;

  int listener = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(addr);
  if (listener < 0 || bind(listener, (struct sockaddr*)&addr, sizeof(addr)) || listen(listener, 4) ||
      getsockname(listener, (struct sockaddr*)&addr, &len))
    return 2;
  int client = socket(AF_INET, SOCK_STREAM, 0);
  if (client < 0 || connect(client, (struct sockaddr*)&addr, sizeof(addr))) return 2;
  int server = accept(listener, NULL, NULL);
  if (server < 0) return 2;

  char path[4096];
  snprintf(path, sizeof(path), "%s/faultwalk.ghost", argv[2]);
  int ghost = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  fill(buf, GHOST_BYTES, 4);
  if (ghost < 0 || write(ghost, buf, GHOST_BYTES) != GHOST_BYTES || unlink(path)) return 2;

  snprintf(path, sizeof(path), "%s/faultwalk.d", argv[2]);
  if (mkdir(path, 0700)) return 2;
  snprintf(path, sizeof(path), "%s/faultwalk.linked", argv[2]);
  char other[4200];
  snprintf(other, sizeof(other), "%s/faultwalk.d/other", argv[2]);
  int linked = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  fill(buf, LINKED_BYTES, 5);
  if (linked < 0 || write(linked, buf, LINKED_BYTES) != LINKED_BYTES || link(path, other) || unlink(path))
    return 2;

  pid_t child = fork();
  if (child < 0) return 2;
  int in_child = child == 0;
  /* A test that fails and kills the root leaves no child behind. */
  if (in_child) prctl(PR_SET_PDEATHSIG, SIGKILL);
  int mine = in_child ? sv[1] : sv[0];
  int tcp = in_child ? client : server;
  close(in_child ? sv[0] : sv[1]);
  close(in_child ? server : client);
  if (in_child) close(listener), close(ghost), close(linked);
  /* What each sends stays queued at the other end, unread. */
  fill(buf, UNIX_BYTES, in_child ? 12 : 11);
  if (write(mine, buf, UNIX_BYTES) != UNIX_BYTES) return 2;
  fill(buf, TCP_BYTES, in_child ? 22 : 21);
  if (write(tcp, buf, TCP_BYTES) != TCP_BYTES) return 2;

  pthread_t t;
  if (pthread_create(&t, NULL, ticker, (void*)(intptr_t)0)) return 2;
  if (pthread_create(&t, NULL, ticker, (void*)(intptr_t)1)) return 2;
  if (!in_child) {
    /* The child is ready when its byte comes. */
    char c;
    if (read(status[0], &c, 1) != 1) return 2;
    prog_ready(argv[1]);
  } else {
    if (write(status[1], "r", 1) != 1) return 2;
  }

  uint64_t last[2] = {0, 0};
  unsigned rounds = 0;
  for (;;) {
    while (!got_usr2 && !prog_usr1) {
      struct timespec ts = {0, 5 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
    int final = prog_usr1;
    got_usr2 = 0;
    rounds++;
    int before = prog_failures;
    check_ticks(0, &last[0]);
    check_ticks(1, &last[1]);
    check_peek(mine, UNIX_BYTES, in_child ? 11 : 12, "unix stream");
    check_peek(tcp, TCP_BYTES, in_child ? 21 : 22, "tcp");
    if (!in_child) {
      CHECK(prog_read_exact(pipefd[0], buf, PIPE_BYTES) == PIPE_BYTES, "pipe bytes");
      CHECK(same(buf, PIPE_BYTES, 1), "the pipe's bytes differ");
      CHECK(write(pipefd[1], buf, PIPE_BYTES) == PIPE_BYTES, "pipe bytes written back");
      CHECK(pread(ghost, buf, GHOST_BYTES, 0) == GHOST_BYTES && same(buf, GHOST_BYTES, 4), "ghost file data");
      CHECK(pread(linked, buf, LINKED_BYTES, 0) == LINKED_BYTES && same(buf, LINKED_BYTES, 5), "linked file data");
      struct pollfd pfd = {listener, POLLIN, 0};
      CHECK(poll(&pfd, 1, 0) == 0, "the listener has a connection pending");
      /* The child verifies too, and says how it went. */
      kill(child, final ? SIGUSR1 : SIGUSR2);
      char c = 0;
      CHECK(read(status[0], &c, 1) == 1 && c == 'y', "the child's checks failed");
      if (final) {
        int st = 0;
        CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's exit %x", st);
        return prog_finish();
      }
      snprintf(path, sizeof(path), "%s/faultwalk.verified", argv[2]);
      char tmp[4200];
      snprintf(tmp, sizeof(tmp), "%s.tmp", path);
      FILE* f = fopen(tmp, "w");
      if (!f) return 3;
      fprintf(f, "verified %u %s\n", rounds, prog_failures == before ? "ok" : "failed");
      fclose(f);
      rename(tmp, path);
    } else {
      char c = prog_failures == before ? 'y' : 'n';
      if (write(status[1], &c, 1) != 1) return 3;
      if (final) return prog_finish();
    }
  }
}
