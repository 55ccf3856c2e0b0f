/* A runtime that checkpoints one of its ranks and restarts it while it stays
 * alive itself (Open MPI's orted checkpointing its ranks), with the C ABI.
 *
 * The rank holds, as a rank of a job does, its stdin, stdout and stderr as
 * pipes whose other ends are the runtime's, a unix stream socket to the
 * runtime and a TCP connection to it over loopback. Only the rank is dumped,
 * so all of them reach outside the dumped tree:
 *   - the dump hook accepts the pipes and the socket as external;
 *   - the TCP connection is dumped with TCP_REPAIR (tcp_established: its
 *     peer, the runtime's end, stays open while the rank is gone, held
 *     silent by the network lock from the kill until the restore);
 *   - a question the runtime wrote into the rank's stdin and its TCP
 *     connection while the rank was not reading them is carried in the
 *     checkpoint (the pipe's queue, the connection's receive queue).
 * The dump kills the rank. The restore hook hands the restored rank fresh
 * pipes and a fresh socket; its TCP connection comes back against the
 * runtime's own end, which never closed. The runtime goes on talking to the
 * rank on all of them, and the rank's counters go on from where they were.
 *   runtime_rank DIR [CHECKPOINTS]
 * Exits 0 only if every answer came as expected and the rank exited cleanly. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <minicriu/minicriu.h>

/* The rank's channels, by the fd it holds each on. */
enum { STDIN_FD = 0, STDOUT_FD = 1, STDERR_FD = 2, UNIX_FD = 3, TCP_FD = 4, RANK_FDS = 5 };

/* One line, byte by byte (what follows stays queued); -1 at the end. */
static int read_line(int fd, char* buf, size_t size) {
  size_t n = 0;
  while (n + 1 < size) {
    ssize_t r = read(fd, buf + n, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    if (buf[n++] == '\n') break;
  }
  buf[n] = 0;
  return (int)n;
}

/* Lines are short: one write each (SIGPIPE is ignored: a closed peer is an
 * error here). */
static int send_line(int fd, const char* line) {
  size_t len = strlen(line);
  return write(fd, line, len) == (ssize_t)len ? 0 : -1;
}

/* ---- the rank --------------------------------------------------------------
 * Questions "ask K" come on stdin (answered on stdout, and noted on
 * stderr), on the unix socket and on the TCP connection (answered there);
 * each answer "CHANNEL K COUNT" carries that channel's count. On the unix
 * socket, "pause" stops it reading stdin and TCP until "resume", and
 * "quit" ends it. */
static int rank_main(void) {
  static const char* const names[3] = {"stdin", "unix", "tcp"};
  const int reply_fd[3] = {STDOUT_FD, UNIX_FD, TCP_FD};
  unsigned count[3] = {0, 0, 0};
  int paused = 0;
  for (;;) {
    struct pollfd p[3] = {{STDIN_FD, POLLIN, 0}, {UNIX_FD, POLLIN, 0}, {TCP_FD, POLLIN, 0}};
    if (paused) p[0].fd = p[2].fd = -1;
    if (poll(p, 3, -1) < 0) {
      if (errno == EINTR) continue;
      return 5;
    }
    for (int i = 0; i < 3; i++) {
      if (!(p[i].revents & (POLLIN | POLLHUP))) continue;
      char line[64], reply[96];
      if (read_line(p[i].fd, line, sizeof line) < 0) return 4;
      if (i == 1 && strcmp(line, "quit\n") == 0) return 0;
      if (i == 1 && (strcmp(line, "pause\n") == 0 || strcmp(line, "resume\n") == 0)) {
        paused = line[0] == 'p';
        if (send_line(UNIX_FD, paused ? "paused\n" : "resumed\n")) return 3;
        continue;
      }
      unsigned k;
      if (sscanf(line, "ask %u", &k) != 1) return 2;
      snprintf(reply, sizeof reply, "%s %u %u\n", names[i], k, count[i]++);
      if (send_line(reply_fd[i], reply)) return 3;
      if (i == 0) {
        snprintf(reply, sizeof reply, "rank: stdin question %u\n", k);
        if (send_line(STDERR_FD, reply)) return 3;
      }
    }
  }
}

/* ---- the runtime ---------------------------------------------------------- */

/* The runtime's ends of the rank's channels, and the rank's ends (until
 * the rank has them). */
struct channels {
  int in, out, err, unix_sk, tcp;   /* ours */
  int rank[4];                      /* the rank's stdin, stdout, stderr, unix socket */
};

static int fresh_channels(struct channels* c) {
  int in[2], out[2], err[2], sk[2];
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) ||
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sk))
    return -1;
  c->in = in[1], c->out = out[0], c->err = err[0], c->unix_sk = sk[0];
  c->rank[STDIN_FD] = in[0], c->rank[STDOUT_FD] = out[1], c->rank[STDERR_FD] = err[1];
  c->rank[UNIX_FD] = sk[1];
  return 0;
}

static void close_rank_ends(struct channels* c) {
  for (int i = 0; i < 4; i++) {
    if (c->rank[i] >= 0) close(c->rank[i]);
    c->rank[i] = -1;
  }
}

/* A TCP connection over loopback: *ours the accepted end, *theirs the
 * connecting one, for the rank. */
static int loopback_connection(int* ours, int* theirs) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0 || c < 0 || bind(l, (struct sockaddr*)&a, sizeof a) || listen(l, 1) ||
      getsockname(l, (struct sockaddr*)&a, &len) || connect(c, (struct sockaddr*)&a, sizeof a))
    return -1;
  *ours = accept4(l, NULL, NULL, SOCK_CLOEXEC);
  *theirs = c;
  close(l);
  return *ours < 0 ? -1 : 0;
}

static pid_t start_rank(struct channels* c, int tcp_end) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  /* Above every number we install, then in place: 0-4 and nothing else. */
  int from[RANK_FDS] = {c->rank[0], c->rank[1], c->rank[2], c->rank[3], tcp_end};
  for (int i = 0; i < RANK_FDS; i++) from[i] = fcntl(from[i], F_DUPFD, 10);
  for (int i = 0; i < RANK_FDS; i++) dup2(from[i], i);
  close_range(RANK_FDS, ~0u, 0);
  _exit(rank_main());
}

/* Reads one line on fd, within 10 s, and compares it. */
static int expect(int fd, const char* want) {
  struct pollfd p = {fd, POLLIN, 0};
  char line[96];
  if (poll(&p, 1, 10000) != 1 || read_line(fd, line, sizeof line) < 0) {
    fprintf(stderr, "no answer, expected \"%s\"\n", want);
    return -1;
  }
  line[strcspn(line, "\n")] = 0;
  if (strcmp(line, want) != 0) {
    fprintf(stderr, "answer \"%s\", expected \"%s\"\n", line, want);
    return -1;
  }
  return 0;
}

/* Counts the runtime expects, per channel. */
static unsigned asked[3];

/* The answer to question k on channel ch (0 stdin, 1 unix, 2 tcp). */
static int expect_answer(const struct channels* c, int ch, unsigned k) {
  static const char* const names[3] = {"stdin", "unix", "tcp"};
  const int fd[3] = {c->out, c->unix_sk, c->tcp};
  char want[96];
  snprintf(want, sizeof want, "%s %u %u", names[ch], k, asked[ch]++);
  if (expect(fd[ch], want)) return -1;
  if (ch == 0) {
    snprintf(want, sizeof want, "rank: stdin question %u", k);
    return expect(c->err, want);
  }
  return 0;
}

static int ask_all(const struct channels* c, unsigned k) {
  char q[32];
  snprintf(q, sizeof q, "ask %u\n", k);
  const int fd[3] = {c->in, c->unix_sk, c->tcp};
  for (int ch = 0; ch < 3; ch++)
    if (send_line(fd[ch], q) || expect_answer(c, ch, k)) return -1;
  printf("rank answered question %u on stdin, unix and tcp (counts %u %u %u)\n", k, asked[0], asked[1],
         asked[2]);
  return 0;
}

static void on_log(int level, const char* line, void* arg) {
  (void)arg;
  if (level <= MINICRIU_LOG_WARN) fprintf(stderr, "[minicriu] %s\n", line);
}

/* What the dump accepted, by the rank's fd, and what the restore gives. */
struct hooks {
  char key[4][64];
  int stand_in[4];
};

static int accept_external(const minicriu_external* obj, void* arg) {
  struct hooks* h = arg;
  if ((strcmp(obj->kind, "pipe") != 0 && strcmp(obj->kind, "unix") != 0) || obj->fd < 0 || obj->fd >= 4)
    return 0;
  printf("dump asks about %s (%s): accepted\n", obj->key, obj->description);
  snprintf(h->key[obj->fd], sizeof h->key[obj->fd], "%s", obj->key);
  return 1;
}

static int give_stand_in(const minicriu_external* obj, void* arg) {
  const struct hooks* h = arg;
  for (int fd = 0; fd < 4; fd++)
    if (strcmp(obj->key, h->key[fd]) == 0) {
      printf("restore asks for %s: the rank's fd %d gets a fresh %s\n", obj->key, fd,
             fd == UNIX_FD ? "socket" : "pipe");
      return h->stand_in[fd];
    }
  return -1;
}

/* Checkpoints the rank (which dies), and restores it on fresh channels. */
static pid_t checkpoint_and_restart(pid_t rank, const char* dir, struct channels* c) {
  struct hooks h;
  memset(&h, 0, sizeof h);
  minicriu_dump_opts* d = minicriu_dump_opts_new();
  minicriu_dump_opts_set_pid(d, rank);
  minicriu_dump_opts_set_images_dir(d, dir);
  minicriu_dump_opts_set_log(d, MINICRIU_LOG_WARN, on_log, NULL);
  minicriu_dump_opts_set_external_hook(d, accept_external, &h);
  minicriu_dump_opts_set_tcp_established(d, 1);
  int rc = minicriu_dump(d);
  minicriu_dump_opts_free(d);
  if (rc != 0) {
    fprintf(stderr, "checkpoint failed: %s\n", minicriu_last_error());
    return -1;
  }
  /* The dump killed our child: reaped, so that its pid is free again. */
  int status;
  waitpid(rank, &status, 0);
  printf("rank %d checkpointed into %s and killed\n", rank, dir);
  /* Its old pipes and socket are done with; the TCP connection is not. */
  close(c->in), close(c->out), close(c->err), close(c->unix_sk);
  if (fresh_channels(c)) return -1;
  for (int fd = 0; fd < 4; fd++) h.stand_in[fd] = c->rank[fd];

  minicriu_restore_opts* r = minicriu_restore_opts_new();
  minicriu_restore_opts_set_images_dir(r, dir);
  minicriu_restore_opts_set_detach(r, 1);
  minicriu_restore_opts_set_log(r, MINICRIU_LOG_WARN, on_log, NULL);
  minicriu_restore_opts_set_external_hook(r, give_stand_in, &h);
  pid_t restored = 0;
  rc = minicriu_restore(r, &restored, NULL);
  minicriu_restore_opts_free(r);
  close_rank_ends(c);
  if (rc != 0) {
    fprintf(stderr, "restore failed: %s\n", minicriu_last_error());
    return -1;
  }
  printf("rank %d restored\n", restored);
  return restored;
}

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s DIR [CHECKPOINTS]\n", argv[0]);
    return 2;
  }
  int checkpoints = argc > 2 ? atoi(argv[2]) : 1;
  signal(SIGPIPE, SIG_IGN);
  struct channels c;
  int tcp_rank;
  if (fresh_channels(&c) || loopback_connection(&c.tcp, &tcp_rank)) return 1;
  pid_t rank = start_rank(&c, tcp_rank);
  close_rank_ends(&c);
  close(tcp_rank);
  unsigned k = 1;
  if (ask_all(&c, k++)) return 1;

  for (int i = 0; i < checkpoints; i++) {
    if (ask_all(&c, k++)) return 1;
    /* A question waits, unread, in the rank's stdin and in its TCP receive
     * queue at the dump: the checkpoint carries both. */
    if (send_line(c.unix_sk, "pause\n") || expect(c.unix_sk, "paused")) return 1;
    unsigned queued = k++;
    char q[32];
    snprintf(q, sizeof q, "ask %u\n", queued);
    if (send_line(c.in, q) || send_line(c.tcp, q)) return 1;

    char dir[4096];
    snprintf(dir, sizeof dir, "%s/checkpoint-%d", argv[1], i + 1);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return 1;
    pid_t restored = checkpoint_and_restart(rank, dir, &c);
    if (restored != rank) return 1;

    if (send_line(c.unix_sk, "resume\n") || expect(c.unix_sk, "resumed")) return 1;
    if (expect_answer(&c, 0, queued) || expect_answer(&c, 2, queued)) return 1;
    printf("restored rank answered the queued question %u on stdin and tcp\n", queued);
    if (ask_all(&c, k++)) return 1;
  }

  if (send_line(c.unix_sk, "quit\n")) return 1;
  int status = 0;
  if (waitpid(rank, &status, 0) != rank) return 1;
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  printf("rank %d exited with %d after %d checkpoint(s); counts stdin %u, unix %u, tcp %u\n", rank, code,
         checkpoints, asked[0], asked[1], asked[2]);
  return code == 0 ? 0 : 1;
}
