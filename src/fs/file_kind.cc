#include "fs/file_kind.hpp"

#include "fs/ghost_file.hpp"

#include <sys/socket.h>

namespace minicriu {

const std::vector<const FileKind*>& file_kinds() {
  static const std::vector<const FileKind*> kinds = {
      // Before regular files: ptys are character devices too.
      &tty_kind(),
      &regular_file_kind(), &ghost_file_kind(), &pipe_kind(),     &memfd_kind(),
      &fifo_kind(),         &eventfd_kind(),    &timerfd_kind(),  &signalfd_kind(),
      &epoll_kind(),        &pidfd_kind(),      &inotify_kind(),
      &unix_socket_kind(),  &inet_socket_kind()};
  return kinds;
}

namespace {

// What an fd we cannot take is, in words a user knows.
std::string describe_unsupported(const FdDumpInfo& fd) {
  const std::string& l = fd.link;
  if (l.rfind("pipe:", 0) == 0) return "a pipe";
  if (S_ISFIFO(fd.st.st_mode)) return "a fifo";
  if (l.rfind("socket:", 0) == 0) {
    int domain = -1;
    socklen_t len = sizeof domain;
    if (fd.local_fd < 0 || ::getsockopt(fd.local_fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0)
      return "a socket";
    switch (domain) {
      case AF_NETLINK: return "a netlink socket";
      case AF_PACKET: return "a packet socket";
      default: return "a socket of family " + std::to_string(domain);
    }
  }
  if (l.rfind("anon_inode:", 0) == 0) return "an anonymous-inode file (" + l.substr(11) + ")";
  if (l.rfind("/memfd:", 0) == 0) return "a memfd";
  if (has_deleted_suffix(l))
    return fd.st.st_nlink > 0 ? "a deleted file that still has another name" : "a deleted file";
  return "a file of a kind this version does not support";
}

}  // namespace

Result<const FileKind*> file_kind_for(const FdDumpInfo& fd) {
  for (const FileKind* k : file_kinds())
    if (k->matches(fd)) return k;
  return failf("{} is {} ({}), which minicriu cannot checkpoint yet; close it in the "
               "application before the dump", fd.what, describe_unsupported(fd), fd.link);
}

Result<const FileKind*> file_kind_for(const img::FileEntry& entry) {
  for (const FileKind* k : file_kinds())
    if (k->restores(entry)) return k;
  return failf("file {}: no kind of this version restores it", entry.id());
}

}  // namespace minicriu
