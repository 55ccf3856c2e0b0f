/* How a runtime uses the C ABI: checkpoint a process given on the command line
 * into a directory and leave it running.
 *   runtime_checkpoint PID DIR */
#include <stdio.h>
#include <stdlib.h>

#include <minicriu/minicriu.h>

static void on_log(int level, const char* line, void* arg) {
  (void)arg;
  if (level <= MINICRIU_LOG_INFO) fprintf(stderr, "[minicriu] %s\n", line);
}

/* A checkpoint of a large rank takes a while: say how far its pages are. */
static void on_progress(const minicriu_progress* p, void* arg) {
  (void)arg;
  fprintf(stderr, "[progress] %s pid %d: %llu of %llu MiB%s\n", p->phase, (int)p->pid,
          (unsigned long long)(p->bytes_done >> 20), (unsigned long long)(p->bytes_total >> 20),
          p->finished ? ", done" : "");
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s PID DIR\n", argv[0]);
    return 2;
  }
  minicriu_dump_opts* opts = minicriu_dump_opts_new();
  minicriu_dump_opts_set_pid(opts, (pid_t)atoi(argv[1]));
  minicriu_dump_opts_set_images_dir(opts, argv[2]);
  minicriu_dump_opts_set_leave_running(opts, 1);
  /* An MPI job's shared-memory pool under /dev/shm is always carried. */
  minicriu_dump_opts_add_ghost_policy(opts, "/dev/shm/*:copy");
  minicriu_dump_opts_set_log(opts, MINICRIU_LOG_INFO, on_log, NULL);
  minicriu_dump_opts_set_progress(opts, on_progress, NULL, 1000);
  int rc = minicriu_dump(opts);
  minicriu_dump_opts_free(opts);
  if (rc != 0) {
    fprintf(stderr, "checkpoint failed: %s\n", minicriu_last_error());
    return 1;
  }
  printf("checkpointed %s into %s\n", argv[1], argv[2]);
  return 0;
}
