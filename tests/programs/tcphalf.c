/* A half-closed TCP connection between two processes: the client sends
 * DATA_LEN bytes and shuts down its side (FIN_WAIT2), the server reads
 * nothing before SIGUSR1 (CLOSE_WAIT, the bytes and the FIN queued). After
 * SIGUSR1 the server reads every byte, then the end of the stream, answers,
 * and closes; the client reads the answer, then the end of the stream.
 * Exit 0 only if everything held. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "prog_common.h"

#define DATA_LEN 20000

static int at_eof(int fd) {
  char c;
  ssize_t r;
  do r = read(fd, &c, 1);
  while (r < 0 && errno == EINTR);
  return r == 0;
}

static int state_of(int fd) {
  struct tcp_info ti;
  socklen_t len = sizeof(ti);
  memset(&ti, 0, sizeof(ti));
  getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len);
  return ti.tcpi_state;
}

int main(int argc, char** argv) {
  (void)argc;
  prog_install_usr1();
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (bind(lfd, (struct sockaddr*)&a, sizeof(a)) != 0 || listen(lfd, 1) != 0) { perror("listen"); return 1; }
  getsockname(lfd, (struct sockaddr*)&a, &len);
  int sync[2];
  if (pipe(sync) != 0) return 1;
  pid_t child = fork();
  if (child == 0) {
    close(lfd);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr*)&a, sizeof(a)) != 0) { perror("connect"); _exit(1); }
    uint8_t data[DATA_LEN];
    for (int i = 0; i < DATA_LEN; i++) data[i] = (uint8_t)prog_hash((uint64_t)i + 5);
    if (write(c, data, DATA_LEN) != DATA_LEN || shutdown(c, SHUT_WR) != 0) _exit(1);
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    if (state_of(c) != TCP_FIN_WAIT2) { fprintf(stderr, "client: state %d\n", state_of(c)); _exit(1); }
    if (write(sync[1], "r", 1) != 1) _exit(1);
    prog_wait_usr1();
    char answer[3];
    int ok = prog_read_exact(c, answer, 3) == 3 && memcmp(answer, "bye", 3) == 0;
    if (!ok) fprintf(stderr, "client: no answer\n");
    if (!at_eof(c)) { fprintf(stderr, "client: no end of stream\n"); ok = 0; }
    _exit(ok ? 0 : 1);
  }
  int s = accept(lfd, NULL, NULL);
  char c;
  if (s < 0 || read(sync[0], &c, 1) != 1) return 1;
  CHECK(state_of(s) == TCP_CLOSE_WAIT, "server state %d before the dump", state_of(s));
  prog_ready(argv[1]);
  prog_wait_usr1();
  CHECK(state_of(s) == TCP_CLOSE_WAIT, "server state %d after", state_of(s));
  uint8_t data[DATA_LEN];
  CHECK(prog_read_exact(s, data, DATA_LEN) == DATA_LEN, "reading %d bytes", DATA_LEN);
  int bad = 0;
  for (int i = 0; i < DATA_LEN; i++) bad += data[i] != (uint8_t)prog_hash((uint64_t)i + 5);
  CHECK(bad == 0, "%d bytes differ", bad);
  CHECK(at_eof(s), "the end of the client's stream");
  CHECK(write(s, "bye", 3) == 3, "answer");
  close(s);
  kill(child, SIGUSR1);
  int st = 0;
  waitpid(child, &st, 0);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
  return prog_finish();
}
