/* libminicriu C ABI: for runtimes written in C (MPI launchers, PMIx servers).
 *
 * Options are opaque handles. Calls return 0 on success and -1 on failure;
 * minicriu_last_error() then gives the one-line message of the last failure in
 * the calling thread, and minicriu_last_errno() the errno behind it (or 0). */
#ifndef MINICRIU_H
#define MINICRIU_H

#include <stdint.h>
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

/* How far the pages of a dump or a restore have moved (see minicriu.hpp's
 * Progress): reported at most every ~100 ms while they move, and once with
 * finished set, for transfers longer than after_ms. Called in the thread that
 * called minicriu_dump or minicriu_restore; phase is valid during the call. */
typedef struct minicriu_progress {
  const char* phase;       /* "dump", "restore" */
  pid_t pid;               /* dump: the process whose pages move; restore: the root */
  uint64_t bytes_done;
  uint64_t bytes_total;    /* dump: an estimate (resident + swapped memory) */
  double elapsed_s;
  double bytes_per_s;
  double eta_s;            /* -1 when unknown */
  int finished;
} minicriu_progress;
typedef void (*minicriu_progress_fn)(const minicriu_progress* progress, void* arg);

/* Stops a dump or a restore while it runs (minicriu::Cancel): from another
 * thread, or from a signal handler (minicriu_cancel_request is one atomic
 * store, async-signal-safe). The dump then fails as any failed dump does, its
 * tree released and running on; a restore whose tree does not run yet kills
 * what it made. signo names the cause in the error (0: a call). */
typedef struct minicriu_cancel minicriu_cancel;
minicriu_cancel* minicriu_cancel_new(void);
void minicriu_cancel_free(minicriu_cancel* cancel);
void minicriu_cancel_request(minicriu_cancel* cancel, int signo);

typedef struct minicriu_dump_opts minicriu_dump_opts;
minicriu_dump_opts* minicriu_dump_opts_new(void);
void minicriu_dump_opts_free(minicriu_dump_opts* opts);
int minicriu_dump_opts_set_pid(minicriu_dump_opts* opts, pid_t pid);
int minicriu_dump_opts_set_images_dir(minicriu_dump_opts* opts, const char* dir);
int minicriu_dump_opts_set_leave_running(minicriu_dump_opts* opts, int leave_running);
/* With leave_running: a background checkpoint (DumpOptions::background): the
 * pages of private anonymous memory are copied once the tree runs again,
 * write-protected until then; the images are of the moment of the freeze. */
int minicriu_dump_opts_set_background(minicriu_dump_opts* opts, int background);
int minicriu_dump_opts_set_log(minicriu_dump_opts* opts, int level, minicriu_log_fn fn, void* arg);
/* fn NULL: no progress reports. */
int minicriu_dump_opts_set_progress(minicriu_dump_opts* opts, minicriu_progress_fn fn, void* arg,
                                    unsigned after_ms);
/* Ghost files: the largest allocated size one may carry ("64M", "2G"; NULL or
 * "" for the default, 1G), and rules by path that win over it, first match
 * first ("/tmp/ompi-SESSION:copy" where SESSION is a glob, "/scratch/...:fail").
 * Checked by minicriu_dump. */
int minicriu_dump_opts_set_ghost_limit(minicriu_dump_opts* opts, const char* size);
int minicriu_dump_opts_add_ghost_policy(minicriu_dump_opts* opts, const char* rule);
/* "HOST:PORT" of a `minicriu page-server`: the pages stream there (then the
 * other images); NULL or "" for none (DumpOptions::page_server). */
int minicriu_dump_opts_set_page_server(minicriu_dump_opts* opts, const char* host_port);
/* An object of the tree reaching outside it (see minicriu.hpp's
 * ExternalObject): a unix socket whose peer is held outside the tree, a pipe
 * or fifo also held outside it (kind "pipe", key "pipe:[INODE]", type the end
 * the tree holds: "read" or "write"), or a terminal /dev/pts/N whose master
 * is (kind "tty", key "tty[N]", inode N; reopened by path at restore, the
 * restore callback is not asked for it).
 * Strings are valid during the callback only. */
typedef struct minicriu_external {
  const char* kind;        /* "unix", "pipe", "tty" */
  const char* key;         /* "socket:[INODE]", "pipe:[INODE]": the --inherit-fd name */
  uint64_t inode;
  const char* type;        /* "stream", "dgram", "seqpacket"; a pipe's "read", "write" */
  uint64_t peer_inode;
  const char* peer_name;   /* "" when the peer has no name */
  pid_t pid;               /* at dump: a holder in the tree and its fd */
  int fd;
  pid_t peer_pid;          /* at dump: a holder of the peer outside, or 0 */
  const char* description;
} minicriu_external;
/* Dump: return nonzero to dump the object as external. */
typedef int (*minicriu_external_dump_fn)(const minicriu_external* obj, void* arg);
/* Restore: return an fd to stand in for the object (the restore dups it; the
 * caller keeps its own), or -1 to give none. For a pipe: an end of the same
 * direction as the tree's ("read": a read end). */
typedef int (*minicriu_external_restore_fn)(const minicriu_external* obj, void* arg);

/* Unix sockets whose peer is outside the tree: all (--ext-unix-sk), one by
 * "unix[INODE]" (--external), or whichever the callback accepts; terminals
 * whose master is outside by "tty[N]" or the callback. */
int minicriu_dump_opts_set_ext_unix_sk(minicriu_dump_opts* opts, int on);
/* Every terminal whose master is outside the tree (--shell-job). */
int minicriu_dump_opts_set_shell_job(minicriu_dump_opts* opts, int on);
/* Every pipe and fifo also held outside the tree (--ext-pipes); one by
 * "pipe[INODE]" (minicriu_dump_opts_add_external), or the callback's (kind
 * "pipe"). */
int minicriu_dump_opts_set_ext_pipes(minicriu_dump_opts* opts, int on);
int minicriu_dump_opts_add_external(minicriu_dump_opts* opts, const char* spec);
int minicriu_dump_opts_set_external_hook(minicriu_dump_opts* opts, minicriu_external_dump_fn fn, void* arg);
/* The network lock: "auto" (the default), "nftables", "iptables" or "skip".
 * Checked by minicriu_dump. */
int minicriu_dump_opts_set_network_lock(minicriu_dump_opts* opts, const char* mode);
/* TCP connections to peers outside the tree are dumped (the peer must stay),
 * instead of refused. */
int minicriu_dump_opts_set_tcp_established(minicriu_dump_opts* opts, int on);
/* Connections waiting to be accepted, from outside the tree, are dropped
 * instead of refused. */
int minicriu_dump_opts_set_tcp_drop_pending(minicriu_dump_opts* opts, int on);
/* A pre-dump (CRIU's pre-dump): the tree is frozen only to arm write
 * tracking and drain its present pages, then runs on; only memory is saved,
 * as the parent of a later round. Its tracking is left in a holder process
 * listening in the images dir, which exits once the next round takes it or
 * after timeout_s seconds (0: the default, 600). */
int minicriu_dump_opts_set_pre_dump(minicriu_dump_opts* opts, int on);
int minicriu_dump_opts_set_tracking_timeout(minicriu_dump_opts* opts, unsigned timeout_s);
/* The previous round's images (--prev-images-dir), relative to the images
 * dir or absolute: only pages written since it are saved. NULL or "": none. */
int minicriu_dump_opts_set_prev_images_dir(minicriu_dump_opts* opts, const char* dir);
/* The dump stops when cancel is requested (NULL: never); it must outlive it. */
int minicriu_dump_opts_set_cancel(minicriu_dump_opts* opts, minicriu_cancel* cancel);
/* Checkpoints the tree; on failure the tree keeps running. */
int minicriu_dump(const minicriu_dump_opts* opts);

/* An iterative dump (libcriu's criu_dump_iters; minicriu.hpp's dump_iters):
 * pre-dump rounds into IMAGES_DIR/1, /2, ..., each saving only what the tree
 * wrote since the one before, then the final dump into the next. After each
 * pre-dump, more(round, arg) says: > 0 pre-dump again, 0 final dump, < 0
 * abort (the tree runs on; the call returns -1). The images to restore are
 * in IMAGES_DIR/N, N the number of the last round (rounds_out, if set). */
typedef struct minicriu_dump_round {
  unsigned round;
  int final;
  uint64_t pages_written;    /* to this round's page images */
  uint64_t pages_changed;    /* of the tracked memory, written since the round before */
  uint64_t pages_in_parent;  /* present pages left unchanged in the round before */
  uint64_t frozen_ns;
} minicriu_dump_round;
typedef int (*minicriu_dump_iters_fn)(const minicriu_dump_round* round, void* arg);
int minicriu_dump_iters(const minicriu_dump_opts* opts, minicriu_dump_iters_fn more, void* arg, unsigned* rounds_out);

typedef struct minicriu_restore_opts minicriu_restore_opts;
minicriu_restore_opts* minicriu_restore_opts_new(void);
void minicriu_restore_opts_free(minicriu_restore_opts* opts);
int minicriu_restore_opts_set_images_dir(minicriu_restore_opts* opts, const char* dir);
int minicriu_restore_opts_set_detach(minicriu_restore_opts* opts, int detach);
/* Lazy restore (restore --lazy): the tree runs before its anonymous memory is
 * back; pages come on first touch (userfaultfd), the rest in the background. */
int minicriu_restore_opts_set_lazy(minicriu_restore_opts* opts, int lazy);
/* The restore stops when cancel is requested (NULL: never). */
int minicriu_restore_opts_set_cancel(minicriu_restore_opts* opts, minicriu_cancel* cancel);
int minicriu_restore_opts_set_log(minicriu_restore_opts* opts, int level, minicriu_log_fn fn, void* arg);
int minicriu_restore_opts_set_progress(minicriu_restore_opts* opts, minicriu_progress_fn fn, void* arg,
                                       unsigned after_ms);
/* Where to recreate ghost files whose directory is gone. */
int minicriu_restore_opts_set_ghost_dir(minicriu_restore_opts* opts, const char* dir);
/* "HOST:PORT" of the `minicriu page-server` that holds the pages; NULL or ""
 * for the page images of the images dir (RestoreOptions::page_server). */
int minicriu_restore_opts_set_page_server(minicriu_restore_opts* opts, const char* host_port);
/* "fd[N]:socket:[INODE]" or "fd[N]:pipe:[INODE]" (--inherit-fd), and a
 * callback asked for the others. */
int minicriu_restore_opts_add_inherit_fd(minicriu_restore_opts* opts, const char* spec);
int minicriu_restore_opts_set_external_hook(minicriu_restore_opts* opts, minicriu_external_restore_fn fn,
                                            void* arg);
/* Restores the tree. root_pid (may be NULL) receives the restored root; unless
 * detached, wait_status (may be NULL) receives its wait status. */
int minicriu_restore(const minicriu_restore_opts* opts, pid_t* root_pid, int* wait_status);

/* Writes an ELF core file, core.PID, per process of the checkpoint in
 * images_dir into output_dir (NULL: the current directory), for gdb. */
int minicriu_coredump(const char* images_dir, const char* output_dir);

const char* minicriu_last_error(void);
int minicriu_last_errno(void);

#ifdef __cplusplus
}
#endif

#endif /* MINICRIU_H */
