// Every kind this build knows, one line each: KIND(name) stands for
// make_name_kind(), defined in the kind's own file. The order of this list is
// the order of every phase (take, check, commit, create_shared, open,
// resume...), and the first kind that takes an fd gets it.
#include "kinds/kind_set.hpp"

#define MINICRIU_KINDS(KIND)                                                        \
  KIND(ns_file)       /* src/fs/ns_file.cc: first, an O_PATH fd on a namespace too */ \
  KIND(path_fd)       /* src/fs/path_fd.cc: an O_PATH fd may hold any other file */   \
  KIND(tty)           /* src/fs/tty.cc: before regular files, ptys are devices too */ \
  KIND(regular_file)  /* src/fs/regular_file.cc */                                  \
  KIND(ghost_file)    /* src/fs/ghost_file.cc */                                    \
  KIND(pipe)          /* src/fs/pipe.cc: pipes and fifos */                         \
  KIND(shmem)         /* src/mem/shmem.cc: memfds, shared mappings, System V */     \
  KIND(aio)           /* src/mem/aio.cc: AIO contexts (io_setup rings) */          \
  KIND(eventfd)       /* src/fs/eventfd.cc */                                       \
  KIND(timerfd)       /* src/fs/timerfd.cc */                                       \
  KIND(signalfd)      /* src/fs/signalfd.cc */                                      \
  KIND(epoll)         /* src/fs/epoll.cc */                                         \
  KIND(pidfd)         /* src/fs/pidfd.cc */                                         \
  KIND(inotify)       /* src/fs/inotify.cc */                                       \
  KIND(fanotify)      /* src/fs/fanotify.cc */                                      \
  KIND(unix_socket)   /* src/net/unix_socket.cc, named ones in unix_named.cc */     \
  KIND(packet_socket) /* src/net/packet_socket.cc */                                \
  KIND(netlink_socket) /* src/net/netlink_socket.cc */                              \
  KIND(raw_socket)    /* src/net/raw_socket.cc: before inet_socket, which takes the rest */ \
  KIND(ping_socket)   /* src/net/ping_socket.cc */                                  \
  KIND(udplite_socket) /* src/net/udplite_socket.cc */                              \
  KIND(inet_socket)   /* src/net/inet_socket.cc */                                  \
  KIND(posix_timer)   /* src/proc/posix_timers.cc */                                \
  KIND(process_attrs) /* src/proc/process_attrs.cc: oom_score_adj, loginuid, membarrier, mlockall */ \
  KIND(file_lock)     /* src/fs/file_lock.cc: before fd_owner, a lease sets an owner */ \
  KIND(fd_owner)      /* src/fs/fd_owner.cc: F_SETOWN, F_SETSIG, O_ASYNC */         \
  KIND(task_sharing)  /* src/restorer/task_sharing.cc: CLONE_FILES, CLONE_FS */

namespace minicriu {

#define MINICRIU_DECLARE_KIND(name) std::unique_ptr<Kind> make_##name##_kind();
MINICRIU_KINDS(MINICRIU_DECLARE_KIND)

std::vector<std::unique_ptr<Kind>> make_registered_kinds() {
  std::vector<std::unique_ptr<Kind>> kinds;
#define MINICRIU_MAKE_KIND(name) kinds.push_back(make_##name##_kind());
  MINICRIU_KINDS(MINICRIU_MAKE_KIND)
  return kinds;
}

}  // namespace minicriu
