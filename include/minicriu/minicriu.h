/* libminicriu C ABI: for runtimes written in C (MPI launchers, PMIx servers).
 *
 * Options are opaque handles. Calls return 0 on success and -1 on failure;
 * minicriu_last_error() then gives the one-line message of the last failure in
 * the calling thread, and minicriu_last_errno() the errno behind it (or 0). */
#ifndef MINICRIU_H
#define MINICRIU_H

#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

enum minicriu_log_level {
  MINICRIU_LOG_ERROR = 0,
  MINICRIU_LOG_WARN = 1,
  MINICRIU_LOG_INFO = 2,
  MINICRIU_LOG_DEBUG = 3,
};

/* Receives each log line (already timestamped, no newline). */
typedef void (*minicriu_log_fn)(int level, const char* line, void* arg);

typedef struct minicriu_dump_opts minicriu_dump_opts;
minicriu_dump_opts* minicriu_dump_opts_new(void);
void minicriu_dump_opts_free(minicriu_dump_opts* opts);
int minicriu_dump_opts_set_pid(minicriu_dump_opts* opts, pid_t pid);
int minicriu_dump_opts_set_images_dir(minicriu_dump_opts* opts, const char* dir);
int minicriu_dump_opts_set_leave_running(minicriu_dump_opts* opts, int leave_running);
int minicriu_dump_opts_set_log(minicriu_dump_opts* opts, int level, minicriu_log_fn fn, void* arg);
/* Ghost files: the largest allocated size one may carry ("64M", "2G"; NULL or
 * "" for the default, 1G), and rules by path that win over it, first match
 * first ("/tmp/ompi-SESSION:copy" where SESSION is a glob, "/scratch/...:fail").
 * Checked by minicriu_dump. */
int minicriu_dump_opts_set_ghost_limit(minicriu_dump_opts* opts, const char* size);
int minicriu_dump_opts_add_ghost_policy(minicriu_dump_opts* opts, const char* rule);
/* TCP connections to peers outside the tree are dumped (the peer must stay),
 * instead of refused. */
int minicriu_dump_opts_set_tcp_established(minicriu_dump_opts* opts, int on);
/* Connections waiting to be accepted, from outside the tree, are dropped
 * instead of refused. */
int minicriu_dump_opts_set_tcp_drop_pending(minicriu_dump_opts* opts, int on);
/* Checkpoints the tree; on failure the tree keeps running. */
int minicriu_dump(const minicriu_dump_opts* opts);

typedef struct minicriu_restore_opts minicriu_restore_opts;
minicriu_restore_opts* minicriu_restore_opts_new(void);
void minicriu_restore_opts_free(minicriu_restore_opts* opts);
int minicriu_restore_opts_set_images_dir(minicriu_restore_opts* opts, const char* dir);
int minicriu_restore_opts_set_detach(minicriu_restore_opts* opts, int detach);
int minicriu_restore_opts_set_log(minicriu_restore_opts* opts, int level, minicriu_log_fn fn, void* arg);
/* Where to recreate ghost files whose directory is gone. */
int minicriu_restore_opts_set_ghost_dir(minicriu_restore_opts* opts, const char* dir);
/* Restores the tree. root_pid (may be NULL) receives the restored root; unless
 * detached, wait_status (may be NULL) receives its wait status. */
int minicriu_restore(const minicriu_restore_opts* opts, pid_t* root_pid, int* wait_status);

const char* minicriu_last_error(void);
int minicriu_last_errno(void);

#ifdef __cplusplus
}
#endif

#endif /* MINICRIU_H */
