/* A listening socket with a connection waiting to be accepted.
 *
 *   tcppending READY DIR tree     a child connects and writes DATA_LEN bytes;
 *                                 the parent does not accept before SIGUSR1,
 *                                 then accepts, reads them exactly, answers,
 *                                 and the child reads the answer.
 *   tcppending READY DIR tree-fin the same, and the child shuts down its side
 *                                 after its data: the parent then reads the
 *                                 end of the stream after the data.
 *   tcppending READY DIR alone    only the listener (on 127.0.0.1:PORT of
 *                                 DIR/port): someone outside connects; after
 *                                 SIGUSR1 it accepts one and reads "outside".
 * Exit 0 only if everything held. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "prog_common.h"

#define DATA_LEN 5000

int main(int argc, char** argv) {
  if (argc < 4) return 2;
  prog_install_usr1();
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr*)&a, sizeof(a)) != 0 || listen(lfd, 4) != 0) { perror("listen"); return 1; }
  socklen_t len = sizeof(a);
  getsockname(lfd, (struct sockaddr*)&a, &len);
  if (strcmp(argv[3], "alone") == 0) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/port", argv[2]);
    FILE* f = fopen(path, "w");
    fprintf(f, "%d\n", ntohs(a.sin_port));
    fclose(f);
    prog_ready(argv[1]);
    prog_wait_usr1();
    int c = accept(lfd, NULL, NULL);
    char buf[7];
    CHECK(c >= 0 && prog_read_exact(c, buf, 7) == 7 && memcmp(buf, "outside", 7) == 0, "the outside connection");
    return prog_finish();
  }
  int sync[2];
  if (pipe(sync) != 0) return 1;
  pid_t child = fork();
  if (child == 0) {
    close(lfd);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr*)&a, sizeof(a)) != 0) { perror("connect"); _exit(1); }
    uint8_t data[DATA_LEN];
    for (int i = 0; i < DATA_LEN; i++) data[i] = (uint8_t)prog_hash((uint64_t)i);
    if (write(c, data, DATA_LEN) != DATA_LEN) _exit(1);
    if (strcmp(argv[3], "tree-fin") == 0 && shutdown(c, SHUT_WR) != 0) _exit(1);
    if (write(sync[1], "r", 1) != 1) _exit(1);
    prog_wait_usr1();
    char answer[6];
    if (prog_read_exact(c, answer, 6) != 6 || memcmp(answer, "thanks", 6) != 0) {
      fprintf(stderr, "child: no answer\n");
      _exit(1);
    }
    _exit(0);
  }
  char c;
  if (read(sync[0], &c, 1) != 1) return 1;
  /* Give the data time to land in the accept queue's socket. */
  struct timespec ts = {0, 50 * 1000 * 1000};
  nanosleep(&ts, NULL);
  prog_ready(argv[1]);
  prog_wait_usr1();
  int s = accept(lfd, NULL, NULL);
  CHECK(s >= 0, "accept: %s", strerror(errno));
  uint8_t data[DATA_LEN];
  CHECK(s >= 0 && prog_read_exact(s, data, DATA_LEN) == DATA_LEN, "reading %d bytes", DATA_LEN);
  int bad = 0;
  for (int i = 0; i < DATA_LEN; i++) bad += data[i] != (uint8_t)prog_hash((uint64_t)i);
  CHECK(bad == 0, "%d bytes differ", bad);
  /* Nothing more than what was sent, then the end of the stream if the
   * child shut down. */
  int more = 0;
  if (strcmp(argv[3], "tree-fin") == 0) {
    CHECK(recv(s, &more, sizeof(more), 0) == 0, "the end of the stream after the data");
  } else {
    CHECK(recv(s, &more, sizeof(more), MSG_DONTWAIT) < 0 && errno == EAGAIN, "no byte beyond the data");
  }
  CHECK(write(s, "thanks", 6) == 6, "answer");
  kill(child, SIGUSR1);
  int st = 0;
  waitpid(child, &st, 0);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
  return prog_finish();
}
