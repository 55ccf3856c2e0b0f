/* How a runtime keeps its connection to a rank across a checkpoint, with the
 * C ABI's hooks: the rank's socket to the runtime is outside the dumped tree
 * (the runtime is not dumped), so the dump hook accepts it as external, and at
 * restore the restore hook hands the rank a fresh socket pair's end.
 *   runtime_rank DIR
 * Prints what the rank answers; exits 0 only if the restored rank carried on
 * with its state (its count of answers) and exited cleanly. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <minicriu/minicriu.h>

/* The rank: counts the questions it answers. */
static int rank_main(int fd) {
  unsigned count = 0;
  char line[64];
  for (;;) {
    size_t n = 0;
    while (n + 1 < sizeof line) {
      ssize_t r = read(fd, line + n, 1);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return 4;
      if (line[n++] == '\n') break;
    }
    line[n] = 0;
    if (strcmp(line, "quit\n") == 0) return 0;
    unsigned k;
    if (sscanf(line, "ask %u", &k) != 1) return 2;
    char reply[64];
    int len = snprintf(reply, sizeof reply, "%u %u ok\n", k, count++);
    if (send(fd, reply, (size_t)len, MSG_NOSIGNAL) != len) return 3;
  }
}

static int ask(int fd, unsigned k, char* answer, size_t size) {
  char q[32];
  int len = snprintf(q, sizeof q, "ask %u\n", k);
  if (send(fd, q, (size_t)len, MSG_NOSIGNAL) != len) return -1;
  size_t n = 0;
  while (n + 1 < size) {
    if (recv(fd, answer + n, 1, 0) != 1) return -1;
    if (answer[n] == '\n') break;
    n++;
  }
  answer[n] = 0;
  return 0;
}

static void on_log(int level, const char* line, void* arg) {
  (void)arg;
  if (level <= MINICRIU_LOG_WARN) fprintf(stderr, "[minicriu] %s\n", line);
}

struct hooks {
  char key[64];         /* what the dump accepted */
  int fresh_rank_end;   /* what the restore gets in its place */
};

static int accept_rank_socket(const minicriu_external* obj, void* arg) {
  struct hooks* a = arg;
  printf("dump asks about %s: %s\n", obj->key, obj->description);
  snprintf(a->key, sizeof a->key, "%s", obj->key);
  return 1;
}

static int give_fresh_socket(const minicriu_external* obj, void* arg) {
  const struct hooks* a = arg;
  if (strcmp(obj->key, a->key) != 0) return -1;
  printf("restore asks for %s\n", obj->key);
  return a->fresh_rank_end;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 1;
  pid_t rank = fork();
  if (rank == 0) {
    close(sv[0]);
    _exit(rank_main(sv[1]));
  }
  close(sv[1]);
  char answer[64];
  if (ask(sv[0], 1, answer, sizeof answer) || ask(sv[0], 2, answer, sizeof answer)) return 1;
  printf("rank answered: %s\n", answer);

  struct hooks hooks = {"", -1};
  minicriu_dump_opts* d = minicriu_dump_opts_new();
  minicriu_dump_opts_set_pid(d, rank);
  minicriu_dump_opts_set_images_dir(d, argv[1]);
  minicriu_dump_opts_set_log(d, MINICRIU_LOG_WARN, on_log, NULL);
  minicriu_dump_opts_set_external_hook(d, accept_rank_socket, &hooks);
  int rc = minicriu_dump(d);
  minicriu_dump_opts_free(d);
  if (rc != 0) {
    fprintf(stderr, "checkpoint failed: %s\n", minicriu_last_error());
    return 1;
  }
  /* The dump killed our child: reap it so its pid is free again. */
  int status;
  waitpid(rank, &status, 0);
  close(sv[0]);

  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 1;
  hooks.fresh_rank_end = sv[1];
  minicriu_restore_opts* r = minicriu_restore_opts_new();
  minicriu_restore_opts_set_images_dir(r, argv[1]);
  minicriu_restore_opts_set_detach(r, 1);
  minicriu_restore_opts_set_log(r, MINICRIU_LOG_WARN, on_log, NULL);
  minicriu_restore_opts_set_external_hook(r, give_fresh_socket, &hooks);
  pid_t restored = 0;
  rc = minicriu_restore(r, &restored, NULL);
  minicriu_restore_opts_free(r);
  if (rc != 0) {
    fprintf(stderr, "restore failed: %s\n", minicriu_last_error());
    return 1;
  }
  close(sv[1]);
  if (ask(sv[0], 3, answer, sizeof answer)) return 1;
  printf("restored rank answered: %s\n", answer);
  if (send(sv[0], "quit\n", 5, MSG_NOSIGNAL) != 5) return 1;
  if (waitpid(restored, &status, 0) != restored) return 1;
  printf("rank %d exited with %d\n", restored, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  return restored == rank && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
                 strcmp(answer, "3 2 ok") == 0
             ? 0
             : 1;
}
