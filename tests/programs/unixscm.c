/* Messages in flight in unix socket queues that carry fds (SCM_RIGHTS) and
 * credentials (SCM_CREDENTIALS), the files in flight held by no fd any more:
 *
 *   - a stream pair: "files" with a regular file (offset 3) and a pipe's read
 *     end (its write end kept), then "later" plain, then the sender's end
 *     shut down for writing;
 *   - a seqpacket pair: a unix socket in flight (the other end of a pair kept
 *     here), and a dup of a file this process also holds (one offset);
 *   - a datagram pair whose receiver has SO_PASSCRED: a message sent by a
 *     child of the tree (its pid), one sent as root with another uid/gid,
 *     and one with a file too;
 *   - a datagram pair whose receiver has SO_PASSPIDFD (and not SO_PASSCRED):
 *     a message of the child and one of this process, each received with a
 *     pidfd (SCM_PIDFD) of its sender;
 *   - a datagram socket bound in DIR: a datagram from an unbound socket with
 *     a regular file in flight.
 *
 *   unixscm READY DIR
 *   unixscm READY DIR cycle     also a unix socket in flight in its own queue
 *                               (a dump refuses it in one line)
 *   unixscm READY DIR locked    also a file with a flock() lock only in flight
 *                               (refused in one line)
 *
 * After SIGUSR1 each message is received with the same bytes, files and
 * credentials, each file in flight is the file it was. Exit 0 only if all held. */
#include "prog_common.h"  /* first: _GNU_SOURCE */

#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>


static int send_with(int fd, const char* data, const int* fds, int nfds, const struct ucred* creds,
                     const struct sockaddr_un* to) {
  char cbuf[CMSG_SPACE(sizeof(int) * 4) + CMSG_SPACE(sizeof(struct ucred))];
  memset(cbuf, 0, sizeof cbuf);
  struct iovec iov = {(void*)data, strlen(data)};
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (to) {
    msg.msg_name = (void*)to;
    msg.msg_namelen = sizeof *to;
  }
  size_t clen = (nfds ? CMSG_SPACE(sizeof(int) * nfds) : 0) + (creds ? CMSG_SPACE(sizeof *creds) : 0);
  if (clen) {
    msg.msg_control = cbuf;
    msg.msg_controllen = clen;
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    if (nfds) {
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
      c = CMSG_NXTHDR(&msg, c);
    }
    if (creds) {
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_CREDENTIALS;
      c->cmsg_len = CMSG_LEN(sizeof *creds);
      memcpy(CMSG_DATA(c), creds, sizeof *creds);
    }
  }
  return sendmsg(fd, &msg, 0) == (ssize_t)strlen(data) ? 0 : -1;
}

struct got {
  char data[256];
  int fds[8];
  int nfds;
  int has_creds;
  struct ucred creds;
  int pidfd;  /* SCM_PIDFD, -1 if none */
};

#ifndef SO_PASSPIDFD
#define SO_PASSPIDFD 76
#endif
#define SCM_PIDFD_TYPE 4 /* SCM_PIDFD */

/* The pid a pidfd names (its fdinfo's Pid:), or -2. */
static int pidfd_pid(int pidfd) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", pidfd);
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -2;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -2;
  buf[n] = 0;
  const char* p = strstr(buf, "Pid:");
  return p ? atoi(p + 4) : -2;
}

static int recv_with(int fd, struct got* g) {
  char cbuf[CMSG_SPACE(sizeof(int) * 8) + CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int))];
  memset(g, 0, sizeof *g);
  g->pidfd = -1;
  struct iovec iov = {g->data, sizeof g->data - 1};
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cbuf;
  msg.msg_controllen = sizeof cbuf;
  ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT);
  if (n < 0) return -1;
  g->data[n] = 0;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_type == SCM_RIGHTS) {
      int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      memcpy(g->fds + g->nfds, CMSG_DATA(c), sizeof(int) * k);
      g->nfds += k;
    } else if (c->cmsg_type == SCM_CREDENTIALS) {
      g->has_creds = 1;
      memcpy(&g->creds, CMSG_DATA(c), sizeof g->creds);
    } else if (c->cmsg_type == SCM_PIDFD_TYPE) {
      memcpy(&g->pidfd, CMSG_DATA(c), sizeof g->pidfd);
    }
  }
  return (int)n;
}

static int temp_file(const char* dir, const char* name, const char* text) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) exit(2);
  return fd;
}

static int at_offset(int fd, off_t off, const char* rest) {
  char buf[64] = {0};
  if (lseek(fd, 0, SEEK_CUR) != off) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  return n == (ssize_t)strlen(rest) && memcmp(buf, rest, (size_t)n) == 0;
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const char* dir = argv[2];
  prog_install_usr1();

  /* Stream: a regular file and a pipe's read end in flight. */
  int st[2], pipefd[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) != 0 || pipe(pipefd) != 0) return 2;
  int reg = temp_file(dir, "inflight.txt", "abcdefgh");
  lseek(reg, 3, SEEK_SET);
  int two[2] = {reg, pipefd[0]};
  if (send_with(st[0], "files", two, 2, NULL, NULL) != 0) return 3;
  if (send_with(st[0], "later", NULL, 0, NULL, NULL) != 0) return 3;
  shutdown(st[0], SHUT_WR);
  close(reg);
  close(pipefd[0]);

  /* Seqpacket: a unix socket in flight, and a file also held here. */
  int sp[2], inner[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp) != 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, inner) != 0)
    return 2;
  int held = temp_file(dir, "held.txt", "0123456789");
  lseek(held, 2, SEEK_SET);
  int dupped = dup(held);
  int pair_fds[2] = {inner[1], dupped};
  if (send_with(sp[0], "socket", pair_fds, 2, NULL, NULL) != 0) return 3;
  close(inner[1]);
  close(dupped);

  /* Datagrams with credentials: the receiver has SO_PASSCRED. */
  int dg[2], one = 1;
  if (socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) != 0) return 2;
  if (setsockopt(dg[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0) return 2;
  /* Pidfds of the senders: the receiver has SO_PASSPIDFD only. */
  int pp[2];
  if (socketpair(AF_UNIX, SOCK_DGRAM, 0, pp) != 0) return 2;
  if (setsockopt(pp[1], SOL_SOCKET, SO_PASSPIDFD, &one, sizeof one) != 0) return 2;
  int go[2];
  if (pipe(go) != 0) return 2;
  pid_t child = fork();
  if (child == 0) {
    char c;
    if (send_with(pp[0], "pidfd child", NULL, 0, NULL, NULL) != 0) _exit(3);
    if (send_with(dg[0], "from child", NULL, 0, NULL, NULL) != 0) _exit(3);
    close(go[1]);
    /* Stays, so that its pid is the sender's at restore too. */
    while (read(go[0], &c, 1) != 0) {
    }
    _exit(0);
  }
  close(go[0]);
  /* Wait until the child's message is queued. */
  for (int i = 0; i < 500; i++) {
    struct got peek;
    char b;
    if (recv(dg[1], &b, 1, MSG_PEEK | MSG_DONTWAIT) == 1) break;
    (void)peek;
    usleep(10000);
  }
  if (send_with(pp[0], "pidfd parent", NULL, 0, NULL, NULL) != 0) return 3;
  struct ucred as = {getpid(), 1234, 5678};
  if (send_with(dg[0], "as another", NULL, 0, &as, NULL) != 0) return 3;
  int f3 = temp_file(dir, "dgram.txt", "xyz");
  if (send_with(dg[0], "with file", &f3, 1, NULL, NULL) != 0) return 3;
  close(f3);

  /* A datagram socket bound in DIR, a file in flight from an unbound sender. */
  struct sockaddr_un addr = {0};
  addr.sun_family = AF_UNIX;
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s/scm.sock", dir);
  int named = socket(AF_UNIX, SOCK_DGRAM, 0);
  int anon = socket(AF_UNIX, SOCK_DGRAM, 0);
  if (named < 0 || anon < 0 || bind(named, (struct sockaddr*)&addr, sizeof addr) != 0) return 2;
  int f4 = temp_file(dir, "named.txt", "named!");
  lseek(f4, 1, SEEK_SET);
  if (send_with(anon, "to a name", &f4, 1, NULL, &addr) != 0) return 3;
  close(f4);
  close(anon);

  /* "cycle": a socket in flight in its own queue (and held), which a dump
   * refuses. */
  if (argc > 3 && strcmp(argv[3], "cycle") == 0) {
    int cy[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, cy) != 0 || send_with(cy[0], "self", &cy[1], 1, NULL, NULL) != 0) return 2;
  }

  /* "locked": a file with a flock() lock, only in flight (refused). */
  if (argc > 3 && strcmp(argv[3], "locked") == 0) {
    int lk[2];
    int lf = temp_file(dir, "locked.txt", "locked");
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, lk) != 0 || flock(lf, LOCK_EX) != 0 ||
        send_with(lk[0], "lock", &lf, 1, NULL, NULL) != 0)
      return 2;
    close(lf);
  }

  prog_ready(argv[1]);
  prog_wait_usr1();

  struct got g;
  /* Stream. */
  CHECK(recv_with(st[1], &g) == 5 && strcmp(g.data, "files") == 0 && g.nfds == 2, "stream: '%s', %d fds",
        g.data, g.nfds);
  if (g.nfds == 2) {
    CHECK(at_offset(g.fds[0], 3, "defgh"), "the regular file in flight is at offset 3 with its bytes");
    CHECK(write(pipefd[1], "pipe", 4) == 4, "write to the pipe");
    char pb[8] = {0};
    CHECK(read(g.fds[1], pb, sizeof pb) == 4 && memcmp(pb, "pipe", 4) == 0, "the pipe's read end in flight: '%s'",
          pb);
  }
  CHECK(recv_with(st[1], &g) == 5 && strcmp(g.data, "later") == 0 && g.nfds == 0, "stream, then: '%s'", g.data);
  char eof;
  CHECK(recv(st[1], &eof, 1, MSG_DONTWAIT) == 0, "the stream ends (its sender shut down for writing)");

  /* Seqpacket. */
  CHECK(recv_with(sp[1], &g) == 6 && strcmp(g.data, "socket") == 0 && g.nfds == 2, "seqpacket: '%s', %d fds",
        g.data, g.nfds);
  if (g.nfds == 2) {
    CHECK(write(inner[0], "over", 4) == 4, "write to the socket kept here");
    char sb[8] = {0};
    CHECK(read(g.fds[0], sb, sizeof sb) == 4 && memcmp(sb, "over", 4) == 0,
          "the socket in flight is the other end of the pair: '%s'", sb);
    CHECK(lseek(g.fds[1], 0, SEEK_CUR) == 2, "the dup in flight is at offset 2");
    lseek(held, 7, SEEK_SET);
    CHECK(lseek(g.fds[1], 0, SEEK_CUR) == 7, "the dup in flight shares its offset with the fd held here");
  }

  /* Datagrams with credentials. */
  CHECK(recv_with(dg[1], &g) == 10 && strcmp(g.data, "from child") == 0, "dgram 1: '%s'", g.data);
  CHECK(g.has_creds && g.creds.pid == child && g.creds.uid == getuid() && g.creds.gid == getgid(),
        "dgram 1 credentials: pid %d uid %d gid %d, want %d %d %d", (int)g.creds.pid, (int)g.creds.uid,
        (int)g.creds.gid, (int)child, (int)getuid(), (int)getgid());
  CHECK(recv_with(dg[1], &g) == 10 && strcmp(g.data, "as another") == 0, "dgram 2: '%s'", g.data);
  CHECK(g.has_creds && g.creds.pid == getpid() && g.creds.uid == 1234 && g.creds.gid == 5678,
        "dgram 2 credentials: pid %d uid %d gid %d", (int)g.creds.pid, (int)g.creds.uid, (int)g.creds.gid);
  CHECK(recv_with(dg[1], &g) == 9 && strcmp(g.data, "with file") == 0 && g.nfds == 1, "dgram 3: '%s'", g.data);
  if (g.nfds == 1) CHECK(at_offset(g.fds[0], 3, ""), "dgram 3: the file in flight at its end");
  CHECK(g.has_creds && g.creds.pid == getpid(), "dgram 3 credentials: pid %d", (int)g.creds.pid);

  /* Pidfds of the senders. */
  CHECK(recv_with(pp[1], &g) == 11 && strcmp(g.data, "pidfd child") == 0, "pidfd 1: '%s'", g.data);
  CHECK(g.pidfd >= 0 && pidfd_pid(g.pidfd) == child && !g.has_creds, "pidfd 1: SCM_PIDFD %d names pid %d, want %d",
        g.pidfd, g.pidfd >= 0 ? pidfd_pid(g.pidfd) : -1, (int)child);
  CHECK(recv_with(pp[1], &g) == 12 && strcmp(g.data, "pidfd parent") == 0, "pidfd 2: '%s'", g.data);
  CHECK(g.pidfd >= 0 && pidfd_pid(g.pidfd) == getpid(), "pidfd 2: SCM_PIDFD %d names pid %d, want %d", g.pidfd,
        g.pidfd >= 0 ? pidfd_pid(g.pidfd) : -1, (int)getpid());
  int passcred = -1;
  socklen_t plen = sizeof passcred;
  CHECK(getsockopt(pp[1], SOL_SOCKET, SO_PASSCRED, &passcred, &plen) == 0 && passcred == 0,
        "SO_PASSCRED of the SO_PASSPIDFD receiver: %d", passcred);

  /* The named datagram socket. */
  CHECK(recv_with(named, &g) == 9 && strcmp(g.data, "to a name") == 0 && g.nfds == 1, "named: '%s'", g.data);
  if (g.nfds == 1) CHECK(at_offset(g.fds[0], 1, "amed!"), "named: the file in flight at offset 1");

  close(go[1]);
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "the child ends well");
  return prog_failures ? 1 : 0;
}
