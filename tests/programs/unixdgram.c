/* Named datagram sockets and bound paths that no longer name their socket.
 * A dgram server bound to a path; a client in the child, unbound, connected to
 * it; a sender of ours bound to an abstract name; datagrams queued on the
 * server from both (in the order client, client, named, client). A dgram
 * socket bound to a path that was then unlinked, with a client connected to it
 * before the unlink and a datagram queued. A stream listener bound to a path
 * that was then replaced by a regular file. After SIGUSR1 every name, every
 * datagram (with its sender's name), every connection and every path must be
 * as it was. */
#include "prog_unix.h"

#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

/* The next datagram is `want`, from the sender named (from, from_len); an
 * unbound sender has from_len == 0. */
static void expect_from(int fd, const char* want, const struct sockaddr_un* from, socklen_t from_len,
                        const char* what) {
  char buf[256];
  struct sockaddr_un got;
  socklen_t len = sizeof(got);
  memset(&got, 0, sizeof(got));
  ssize_t r = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr*)&got, &len);
  CHECK(r == (ssize_t)strlen(want) && memcmp(buf, want, (size_t)r) == 0, "%s: got %zd bytes '%.*s', want '%s'",
        what, r, r > 0 ? (int)r : 0, buf, want);
  CHECK(len == from_len && (from_len == 0 || memcmp(&got, from, len) == 0),
        "%s: sender name of length %u, want %u", what, len, from_len);
}

static void expect_empty(int fd, const char* what) {
  char c;
  CHECK(recv(fd, &c, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "%s: more datagrams than were queued", what);
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  prog_install_usr1();
  char spath[200], upath[200], rpath[200];
  snprintf(spath, sizeof(spath), "%s/dgram.sock", argv[2]);
  snprintf(upath, sizeof(upath), "%s/unlinked.sock", argv[2]);
  snprintf(rpath, sizeof(rpath), "%s/replaced.sock", argv[2]);
  struct sockaddr_un sa, ua, ra, na, unbound;
  socklen_t slen = addr_path(&sa, spath), ulen = addr_path(&ua, upath), rlen = addr_path(&ra, rpath);
  memset(&na, 0, sizeof(na));
  na.sun_family = AF_UNIX;
  socklen_t nlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
                               (size_t)snprintf(na.sun_path + 1, sizeof(na.sun_path) - 1, "minicriu-dgram-%d", (int)getpid()));
  memset(&unbound, 0, sizeof(unbound));
  socklen_t unbound_len = 0; /* recvfrom gives no name for an unbound sender */

  int server = socket(AF_UNIX, SOCK_DGRAM, 0), named = socket(AF_UNIX, SOCK_DGRAM, 0);
  int gone = socket(AF_UNIX, SOCK_DGRAM, 0), replaced = socket(AF_UNIX, SOCK_STREAM, 0);
  if (server < 0 || named < 0 || gone < 0 || replaced < 0 || bind(server, (struct sockaddr*)&sa, slen) ||
      bind(named, (struct sockaddr*)&na, nlen) || bind(gone, (struct sockaddr*)&ua, ulen) ||
      bind(replaced, (struct sockaddr*)&ra, rlen) || listen(replaced, 2))
    return 2;
  /* The path of `replaced` now names a regular file. */
  if (unlink(rpath)) return 2;
  FILE* f = fopen(rpath, "w");
  if (!f || fputs("regular", f) < 0 || fclose(f)) return 2;

  int go[2], done[2];
  if (pipe(go) || pipe(done)) return 2;
  pid_t child = fork();
  if (child == 0) {
    close(go[1]);
    close(done[0]);
    int c = socket(AF_UNIX, SOCK_DGRAM, 0), c2 = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (c < 0 || c2 < 0 || connect(c, (struct sockaddr*)&sa, slen) || connect(c2, (struct sockaddr*)&ua, ulen))
      return 2;
    char r;
    /* c, c, (the parent's named sender), c: in that order on the server. */
    if (send(c, "client-1", 8, 0) != 8 || send(c, "client-2", 8, 0) != 8 || write(done[1], "1", 1) != 1 ||
        read(go[0], &r, 1) != 1 || send(c, "client-3", 8, 0) != 8 || send(c2, "to-unlinked", 11, 0) != 11 ||
        write(done[1], "2", 1) != 1)
      return 2;
    close(done[1]);
    prog_wait_usr1();
    check_name(c, 1, &sa, slen, "client's peer");
    check_name(c2, 1, &ua, ulen, "client of the unlinked socket: its peer");
    CHECK(send(c, "client-after", 12, 0) == 12, "client send after: %s", strerror(errno));
    CHECK(send(c2, "unlinked-after", 14, 0) == 14, "client of the unlinked socket: send after: %s", strerror(errno));
    return prog_finish();
  }
  close(go[0]);
  close(done[1]);
  char r;
  if (read(done[0], &r, 1) != 1 || sendto(named, "named-1", 7, 0, (struct sockaddr*)&sa, slen) != 7 ||
      write(go[1], "g", 1) != 1 || read(done[0], &r, 1) != 1)
    return 2;
  /* The client connected before the path went. */
  if (unlink(upath)) return 2;
  close(go[1]);
  close(done[0]);
  prog_ready(argv[1]);
  prog_wait_usr1();

  check_name(server, 0, &sa, slen, "server");
  check_name(named, 0, &na, nlen, "named sender");
  check_name(gone, 0, &ua, ulen, "socket whose path was unlinked");
  check_name(replaced, 0, &ra, rlen, "listener whose path was replaced");
  struct stat st;
  CHECK(stat(spath, &st) == 0 && S_ISSOCK(st.st_mode), "%s is not a socket", spath);
  CHECK(lstat(upath, &st) != 0 && errno == ENOENT, "%s exists again", upath);
  CHECK(lstat(rpath, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 7, "%s is not the regular file", rpath);
  char text[16] = {0};
  FILE* rf = fopen(rpath, "r");
  CHECK(rf && fread(text, 1, sizeof(text) - 1, rf) == 7 && strcmp(text, "regular") == 0, "%s: '%s'", rpath, text);
  if (rf) fclose(rf);
  int acc = 0;
  socklen_t acclen = sizeof(acc);
  CHECK(getsockopt(replaced, SOL_SOCKET, SO_ACCEPTCONN, &acc, &acclen) == 0 && acc == 1,
        "the listener whose path was replaced does not listen");

  expect_from(server, "client-1", &unbound, unbound_len, "server 1");
  expect_from(server, "client-2", &unbound, unbound_len, "server 2");
  expect_from(server, "named-1", &na, nlen, "server 3");
  expect_from(server, "client-3", &unbound, unbound_len, "server 4");
  expect_empty(server, "server");
  expect_from(gone, "to-unlinked", &unbound, unbound_len, "unlinked socket");
  expect_empty(gone, "unlinked socket");
  CHECK(sendto(named, "named-after", 11, 0, (struct sockaddr*)&sa, slen) == 11, "named sender after");
  expect_from(server, "named-after", &na, nlen, "server after, named");
  kill(child, SIGUSR1);
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "child failed: %#x", status);
  expect_from(server, "client-after", &unbound, unbound_len, "server after, client");
  expect_from(gone, "unlinked-after", &unbound, unbound_len, "unlinked socket after");
  unlink(spath);
  unlink(rpath);
  return prog_finish();
}
