/* Unix sockets whose names no longer lead to them:
 *
 *   - a datagram socket bound by the relative path "rel.sock" in DIR/a, the
 *     process's cwd moved to DIR since (the name does not name it from there);
 *   - a datagram socket bound to DIR/gone/abs.sock with a datagram queued, its
 *     file unlinked and its directory removed since;
 *   - a datagram socket bound by the relative path "r2.sock" in DIR/b, its
 *     file unlinked and DIR/b removed since.
 *
 *   unixgone READY DIR
 *
 * After SIGUSR1 each socket has the same name (getsockname), the first one
 * still receives at DIR/a/rel.sock, the second still holds its datagram, and
 * the removed directories are still gone. Exit 0 only if all held. */
#include "prog_common.h"  /* first: _GNU_SOURCE */

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>


static int bound(const char* name) {
  struct sockaddr_un a = {0};
  a.sun_family = AF_UNIX;
  snprintf(a.sun_path, sizeof a.sun_path, "%s", name);
  int s = socket(AF_UNIX, SOCK_DGRAM, 0);
  if (s < 0 || bind(s, (struct sockaddr*)&a, sizeof a) != 0) {
    perror(name);
    exit(2);
  }
  return s;
}

static int name_is(int s, const char* want) {
  struct sockaddr_un a = {0};
  socklen_t len = sizeof a;
  if (getsockname(s, (struct sockaddr*)&a, &len) != 0) return 0;
  return strcmp(a.sun_path, want) == 0;
}

static int send_to(const char* path, const char* msg) {
  struct sockaddr_un a = {0};
  a.sun_family = AF_UNIX;
  snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
  int s = socket(AF_UNIX, SOCK_DGRAM, 0);
  int ok = s >= 0 && sendto(s, msg, strlen(msg), 0, (struct sockaddr*)&a, sizeof a) == (ssize_t)strlen(msg);
  close(s);
  return ok;
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const char* dir = argv[2];
  prog_install_usr1();
  char a[4096], b[4096], gone[4096], abs_path[4096], rel_path[4096], r2[4096];
  snprintf(a, sizeof a, "%s/a", dir);
  snprintf(b, sizeof b, "%s/b", dir);
  snprintf(gone, sizeof gone, "%s/gone", dir);
  snprintf(abs_path, sizeof abs_path, "%s/abs.sock", gone);
  snprintf(rel_path, sizeof rel_path, "%s/rel.sock", a);
  snprintf(r2, sizeof r2, "%s/r2.sock", b);
  if (mkdir(a, 0700) != 0 || mkdir(b, 0700) != 0 || mkdir(gone, 0700) != 0) return 2;

  if (chdir(a) != 0) return 2;
  int rel = bound("rel.sock");
  if (chdir(b) != 0) return 2;
  int rel2 = bound("r2.sock");
  if (chdir(dir) != 0) return 2;
  if (unlink(r2) != 0 || rmdir(b) != 0) return 2;

  int abs = bound(abs_path);
  if (!send_to(abs_path, "kept")) return 3;
  if (unlink(abs_path) != 0 || rmdir(gone) != 0) return 2;

  prog_ready(argv[1]);
  prog_wait_usr1();

  CHECK(name_is(rel, "rel.sock"), "the relative name");
  CHECK(send_to(rel_path, "still"), "send to %s", rel_path);
  char buf[16] = {0};
  CHECK(recv(rel, buf, sizeof buf, MSG_DONTWAIT) == 5 && memcmp(buf, "still", 5) == 0,
        "the socket bound by a relative path still receives at its path");
  CHECK(name_is(rel2, "r2.sock"), "the relative name in a removed directory");
  CHECK(name_is(abs, abs_path), "the name in a removed directory");
  memset(buf, 0, sizeof buf);
  CHECK(recv(abs, buf, sizeof buf, MSG_DONTWAIT) == 4 && memcmp(buf, "kept", 4) == 0, "its queued datagram");
  struct stat st;
  CHECK(stat(gone, &st) != 0 && errno == ENOENT, "%s is still gone", gone);
  CHECK(stat(b, &st) != 0 && errno == ENOENT, "%s is still gone", b);
  return prog_failures ? 1 : 0;
}
