#include "net/unix_named.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "net/sock_diag.hpp"
#include "net/unix_socket.hpp"
#include "proc/proc_parse.hpp"

namespace minicriu {

namespace {

using ByIno = std::map<uint64_t, const img::UnixSocketFile*>;


std::string describe(const img::UnixSocketFile& sk) {
  return fmt::format("socket:[{}] ({})", sk.ino(), unix_name_display(sk.name()));
}

// The socket file at a path is this socket's: sock_diag gives its inode and
// the kernel's encoding of its device (MAJOR << 20 | MINOR).
bool is_socket_file_of(const struct stat& st, const UnixDiag& d) {
  return S_ISSOCK(st.st_mode) && (st.st_ino & 0xffffffffu) == d.vfs_ino &&
         major(st.st_dev) == (d.vfs_dev >> 20) && minor(st.st_dev) == (d.vfs_dev & 0xfffff);
}

}  // namespace

std::string unix_raw_name(const sockaddr_un& addr, socklen_t len) {
  constexpr socklen_t base = offsetof(sockaddr_un, sun_path);
  if (len <= base) return {};
  size_t size = std::min<size_t>(len - base, sizeof addr.sun_path);
  if (addr.sun_path[0] == '\0') return std::string(addr.sun_path, size);
  return std::string(addr.sun_path, strnlen(addr.sun_path, size));
}

socklen_t unix_addr_of(const std::string& raw_name, sockaddr_un& addr) {
  addr = {};
  addr.sun_family = AF_UNIX;
  size_t size = std::min(raw_name.size(), sizeof addr.sun_path);
  std::memcpy(addr.sun_path, raw_name.data(), size);
  // A path is NUL-terminated where there is room; an abstract name is its bytes.
  if (unix_name_is_path(raw_name) && size < sizeof addr.sun_path) size++;
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + size);
}

std::string unix_name_display(const std::string& raw_name) {
  if (raw_name.empty()) return "unbound";
  if (unix_name_is_path(raw_name)) return raw_name;
  std::string s = raw_name;
  std::replace(s.begin(), s.end(), '\0', '@');
  return s;
}

std::string unix_abs_path(const img::UnixSocketFile& sk) {
  if (!unix_name_is_path(sk.name()) || sk.name()[0] == '/' || sk.bind_dir().empty()) return sk.name();
  return sk.bind_dir() + "/" + sk.name();
}

namespace {

// The directory a relative name was bound in, from the socket's own file
// (SIOCUNIXFILE: an O_PATH fd on the inode it bound, Linux 6.11+): its path
// now, which ends in the name unless the file was moved. deleted: the file was
// unlinked since (its directory may be gone too).
std::optional<std::string> bound_dir_of(int fd, const std::string& name, bool& deleted) {
  constexpr unsigned long kSiocUnixFile = 0x89E0;  // SIOCPROTOPRIVATE + 0
  if (fd < 0) return std::nullopt;
  UniqueFd file(::ioctl(fd, kSiocUnixFile));
  if (!file) return std::nullopt;
  char buf[4096];
  ssize_t n = ::readlink(fmt::format("/proc/self/fd/{}", file.get()).c_str(), buf, sizeof buf - 1);
  if (n <= 0) return std::nullopt;
  std::string path(buf, static_cast<size_t>(n));
  const std::string suffix = " (deleted)";
  deleted = path.size() > suffix.size() && path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
  if (deleted) path.resize(path.size() - suffix.size());
  std::string rel = name;
  while (rel.rfind("./", 0) == 0) rel.erase(0, 2);
  if (rel.empty() || rel.find("..") != std::string::npos || path.size() <= rel.size() + 1 ||
      path.compare(path.size() - rel.size(), rel.size(), rel) != 0 || path[path.size() - rel.size() - 1] != '/')
    return std::nullopt;
  return path.substr(0, path.size() - rel.size() - 1);
}

}  // namespace

Status dump_unix_name(const UnixDiag& d, pid_t holder, const std::string& what, img::UnixSocketFile& out,
                      int local_fd) {
  out.set_state(static_cast<uint32_t>(d.state));
  if (d.state == kUnixListening) {
    out.set_backlog(d.wqueue);
    for (uint64_t client : d.icons) out.add_pending()->set_client_ino(client);
  }
  if (d.raw_name.empty()) return {};
  out.set_name(d.raw_name);
  out.set_vfs_ino(d.vfs_ino);
  if (!unix_name_is_path(d.raw_name)) return {};
  std::string path = d.raw_name;
  struct stat st;
  if (path[0] != '/') {
    // sock_diag gives the name as bound; a relative one was resolved in the
    // binder's cwd then, which we can only find where it still names the socket.
    std::string cwd_link = holder > 0 ? fmt::format("/proc/{}/cwd", holder) : "/proc/self/cwd";
    char dir[4096];
    ssize_t n = ::readlink(cwd_link.c_str(), dir, sizeof dir - 1);
    if (n < 0) return failf_errno("{}: reading {}", what, cwd_link);
    dir[n] = '\0';
    bool found = ::stat((cwd_link + "/" + path).c_str(), &st) == 0 && is_socket_file_of(st, d);
    // A connected socket may hold a listener's name (accepted from it) and
    // need no directory of its own: check_named() decides.
    if (!found && d.state == kUnixConnected && d.type != SOCK_DGRAM) return {};
    if (!found) {
      // The cwd changed since the bind, or the file went: the socket's own
      // file says where it was bound.
      bool deleted = false;
      auto bound_in = bound_dir_of(local_fd, path, deleted);
      if (!bound_in)
        return failf("{} is bound to the relative path {}, which does not name it from the process's "
                     "cwd {}, and its socket file was moved, so the directory it was bound in is "
                     "unknown; bind it to an absolute path, or keep its file where it was bound, before "
                     "the dump", what, path, dir);
      out.set_bind_dir(*bound_in);
      std::string abs = *bound_in + "/" + path;
      if (deleted || ::lstat(abs.c_str(), &st) != 0) {
        out.set_path_state(img::UNIX_PATH_UNLINKED);
        return {};
      }
      out.set_path_state(is_socket_file_of(st, d) ? img::UNIX_PATH_OWNED : img::UNIX_PATH_REPLACED);
    } else {
      out.set_bind_dir(dir);
      out.set_path_state(img::UNIX_PATH_OWNED);
    }
  } else if (::lstat(path.c_str(), &st) != 0) {
    if (errno != ENOENT && errno != ENOTDIR) return failf_errno("{}: stat {}", what, path);
    out.set_path_state(img::UNIX_PATH_UNLINKED);
    return {};
  } else {
    out.set_path_state(is_socket_file_of(st, d) ? img::UNIX_PATH_OWNED : img::UNIX_PATH_REPLACED);
  }
  if (out.path_state() == img::UNIX_PATH_OWNED) {
    out.set_file_mode(st.st_mode & 07777);
    out.set_file_uid(st.st_uid);
    out.set_file_gid(st.st_gid);
  }
  return {};
}

uint64_t accepted_from(const img::UnixSocketFile& sk, const ByIno& by_ino) {
  if (sk.type() == SOCK_DGRAM || sk.state() != kUnixConnected || sk.name().empty() || sk.peer_ino() == 0)
    return 0;
  for (auto& [ino, l] : by_ino)
    if (l->state() == kUnixListening && l->type() == sk.type() && l->name() == sk.name() &&
        l->vfs_ino() == sk.vfs_ino())
      return ino;
  return 0;
}

bool restored_as_named(const img::UnixSocketFile& sk, const ByIno& by_ino) {
  if (sk.external()) return false;  // what the caller gives stands in for it
  if (sk.peer_ino() == 0) return true;
  auto p = by_ino.find(sk.peer_ino());
  if (p == by_ino.end()) return false;  // an external peer
  const img::UnixSocketFile& peer = *p->second;
  return !sk.name().empty() || !peer.name().empty() || peer.peer_ino() != sk.ino();
}

// ---------------------------------------------------------------- dump side

void UnixSocketStore::keep_listener(uint64_t ino, int local_fd) {
  UniqueFd dup(::fcntl(local_fd, F_DUPFD_CLOEXEC, 0));
  if (dup) listeners_.emplace(ino, std::move(dup));
}

Status UnixSocketStore::check_named(const std::set<pid_t>& tree, bool leave_running) const {
  std::set<uint64_t> waiting;  // clients in the accept queue of a listener of the tree
  for (auto& [ino, n] : named_)
    for (auto& p : n.sk.pending()) waiting.insert(p.client_ino());
  ByIno by_ino;
  for (auto& [ino, n] : named_) by_ino[ino] = &n.sk;
  for (auto& [ino, n] : named_) {
    const img::UnixSocketFile& sk = n.sk;
    std::string what = fmt::format("{}: unix {} {}", n.what, unix_type_name(static_cast<int>(sk.type())),
                                   socket_link(ino));
    if (unix_name_is_path(sk.name()) && sk.name()[0] != '/' && sk.bind_dir().empty() &&
        accepted_from(sk, by_ino) == 0)
      return failf("{} is bound to the relative path {}, which does not name it from its process's cwd, "
                   "and no listener of the tree has that name, so the directory it was bound in is "
                   "unknown; bind it to an absolute path before the dump", what, sk.name());
    if (sk.peer_ino() == 0 && sk.state() == kUnixConnected && sk.type() != SOCK_DGRAM && !waiting.count(ino) &&
        !external_.count(ino))
      return failf("{} is connected to a socket that was closed; only connections whose two ends are "
                   "in the tree can be checkpointed; close it before the dump", what);
    std::string on = fmt::format("listening on {}", unix_name_display(sk.name()));
    for (auto& p : sk.pending()) {
      // Client 0: it was closed after it connected (and perhaps sent).
      if (p.client_ino() == 0 || named_.count(p.client_ino())) continue;
      std::string link = socket_link(p.client_ino());
      ASSIGN_OR_RETURN(auto holder, proc::find_fd_holder({link}, tree));
      if (holder)
        return failf("{} {} has a connection not yet accepted from {} held by pid {} ({}) outside the "
                     "dumped tree; let the application accept it before the dump, or dump the tree "
                     "that holds the client", what, on, link, holder->pid, holder->comm);
      return failf("{} {} has a connection not yet accepted from {}, which no process holds; let the "
                   "application accept it before the dump", what, on, link);
    }
    if (sk.pending_size() > 0 && leave_running)
      return failf("{} {} has {} connection(s) not yet accepted, whose data minicriu can only read by "
                   "accepting them; let the application accept them first, or dump without "
                   "--leave-running", what, on, sk.pending_size());
    for (auto& from : sk.queue_from()) {
      if (from.empty()) continue;
      bool in_tree = std::any_of(named_.begin(), named_.end(), [&](auto& kv) {
        return kv.second.sk.type() == SOCK_DGRAM && kv.second.sk.name() == from;
      });
      if (!in_tree)
        return failf("{} has a datagram queued from {}, a socket outside the dumped tree, whose name "
                     "minicriu cannot send it from again; let the application read it before the "
                     "dump", what, unix_name_display(from));
    }
  }
  return {};
}

uint64_t UnixSocketStore::pending_room() const {
  // A client that was closed since is gone from our view: its send buffer
  // was at most what SO_SNDBUF lets anyone set (twice net.core.wmem_max).
  uint64_t unknown = 2 * 212992;
  if (auto t = proc::read_file("/proc/sys/net/core/wmem_max"))
    unknown = 2 * std::max<uint64_t>(std::strtoull(t->c_str(), nullptr, 10), 212992);
  uint64_t room = 0;
  for (auto& [ino, fd] : listeners_) {
    (void)fd;
    for (auto& p : named_.at(ino).sk.pending()) {
      auto client = named_.find(p.client_ino());
      uint64_t sndbuf = client != named_.end() ? client->second.sk.sndbuf() : unknown;
      // Data in flight is charged by its skb's truesize, at most the send
      // buffer and one more skb; the rest is the protobuf's framing.
      room += 2 * sndbuf + 4096;
    }
  }
  return room;
}

Status UnixSocketStore::accept_pending(std::vector<img::FileEntry>& files) {
  // Destructive, and so last: a connection not yet accepted has no fd, and
  // the data its client sent sits in the embryo socket that only accept()
  // returns. The tree is killed after this dump, so nothing will miss it.
  for (auto& [ino, fd] : listeners_) {
    auto entry = std::find_if(files.begin(), files.end(),
                              [&](auto& f) { return f.has_unix_sk() && f.unix_sk().ino() == ino; });
    if (entry == files.end()) return failf("{}: listener missing from files.img", socket_link(ino));
    img::UnixSocketFile* l = entry->mutable_unix_sk();
    for (int i = 0; i < l->pending_size(); i++) {
      img::UnixPendingConnection* p = l->mutable_pending(i);
      std::string what = fmt::format("{}: the connection from {} not yet accepted", socket_link(ino),
                                     socket_link(p->client_ino()));
      pollfd pfd{fd.get(), POLLIN, 0};
      if (::poll(&pfd, 1, 0) != 1) return failf("{} is no longer waiting", what);
      UniqueFd embryo(::accept4(fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!embryo) return failf_errno("{}: accept", what);
      struct stat st;
      if (::fstat(embryo.get(), &st) != 0) return failf_errno("{}: fstat", what);
      ASSIGN_OR_RETURN(UnixDiag d, with_context(unix_diag_query(st.st_ino), what));
      if (d.peer_ino != p->client_ino())
        return failf("{}: accept() returned the connection from {} instead", what, socket_link(d.peer_ino));
      ASSIGN_OR_RETURN(auto queue, peek_unix_queue(embryo.get(), static_cast<int>(l->type()), what));
      for (auto& m : queue) p->add_queue(std::move(m));
    }
  }
  listeners_.clear();
  return {};
}

// ------------------------------------------------------------- restore side

namespace {

// Runs op (a bind, connect or sendto of a relative path) in dir: in a child
// that shares our fds' sockets but not our cwd, so the restoring process (a
// library user's) never changes directory. Returns errno, 0 on success.
template <typename Op>
int run_in_dir(const std::string& dir, Op op) {
  if (dir.empty()) return op() == 0 ? 0 : errno;
  pid_t child = ::fork();
  if (child < 0) return errno;
  if (child == 0) {
    if (::chdir(dir.c_str()) != 0) ::_exit(errno & 0xff);
    ::_exit(op() == 0 ? 0 : (errno & 0xff));
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0)
    if (errno != EINTR) return errno;
  return WIFEXITED(status) ? WEXITSTATUS(status) : EIO;
}

// The directory a name is reached in: a relative path's bind_dir, else none.
std::string dir_of(const img::UnixSocketFile& sk) {
  return unix_name_is_path(sk.name()) && sk.name()[0] != '/' ? sk.bind_dir() : std::string();
}

// A socket file nobody is bound to refuses connections. Probed by the name
// the socket binds with, from its directory: an absolute path made from a
// relative name may be longer than sun_path allows.
bool socket_file_live(const img::UnixSocketFile& sk) {
  UniqueFd probe(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!probe) return true;
  sockaddr_un a;
  socklen_t len = unix_addr_of(sk.name(), a);
  int err = run_in_dir(dir_of(sk), [&] { return ::connect(probe.get(), reinterpret_cast<sockaddr*>(&a), len); });
  return err != ECONNREFUSED;
}

// What binding did to the file system, set right once every connection is
// made: a path that did not name its socket at the dump loses the socket file
// again and gets back the file that was moved aside; one that did gets the
// dumped mode and owner. On failure the files moved aside come back.
class PathFixes {
 public:
  struct Fix {
    std::string path, aside;
    const img::UnixSocketFile* sk;
    std::vector<std::string> made_dirs;  // made to bind in a removed directory, outermost first
  };
  PathFixes() = default;
  PathFixes(const PathFixes&) = delete;
  PathFixes& operator=(const PathFixes&) = delete;
  ~PathFixes() { unwind(); }
  void push(Fix f) { fixes_.push_back(std::move(f)); }
  [[nodiscard]] Status finish() {
    for (auto& f : fixes_) {
      if (f.sk->path_state() != img::UNIX_PATH_OWNED) continue;
      if (::chmod(f.path.c_str(), f.sk->file_mode()) != 0)
        return failf_errno("{}: chmod {} {:o}", describe(*f.sk), f.path, f.sk->file_mode());
      if (::lchown(f.path.c_str(), f.sk->file_uid(), f.sk->file_gid()) != 0)
        return failf_errno("{}: chown {} {}:{}", describe(*f.sk), f.path, f.sk->file_uid(), f.sk->file_gid());
    }
    unwind();
    return {};
  }

 private:
  void unwind() {
    for (auto it = fixes_.rbegin(); it != fixes_.rend(); ++it) {
      if (it->sk->path_state() != img::UNIX_PATH_OWNED) ::unlink(it->path.c_str());
      if (!it->aside.empty()) (void)::rename(it->aside.c_str(), it->path.c_str());
      for (auto d = it->made_dirs.rbegin(); d != it->made_dirs.rend(); ++d) (void)::rmdir(d->c_str());
    }
    fixes_.clear();
  }
  std::vector<Fix> fixes_;
};

Status bind_name(int fd, const img::UnixSocketFile& sk, PathFixes& fixes) {
  sockaddr_un a;
  socklen_t len = unix_addr_of(sk.name(), a);
  auto do_bind = [&] { return ::bind(fd, reinterpret_cast<sockaddr*>(&a), len); };
  if (!unix_name_is_path(sk.name())) {
    if (do_bind() != 0)
      return failf_errno("{}: bind (is the name taken by a process outside the tree?)", describe(sk));
    return {};
  }
  std::string path = unix_abs_path(sk);
  bool owned = sk.path_state() == img::UNIX_PATH_OWNED;
  struct stat st;
  std::string aside;
  if (::lstat(path.c_str(), &st) == 0) {
    if (owned) {
      // Left behind by the dumped socket (a socket file outlives its socket).
      if (!S_ISSOCK(st.st_mode))
        return failf("{}: {} is now a file of another kind, where the socket's file must come back; "
                     "move it away and restore again", describe(sk), path);
      if (socket_file_live(sk))
        return failf("{}: a live socket is bound at {} now; stop the process that holds it and "
                     "restore again", describe(sk), path);
      if (::unlink(path.c_str()) != 0) return failf_errno("{}: removing the old socket file {}", describe(sk), path);
    } else {
      // Unlinked or replaced at the dump: what is there now stays, moved aside
      // while the socket binds.
      aside = fmt::format("{}.minicriu-aside-{}", path, ::getpid());
      if (::rename(path.c_str(), aside.c_str()) != 0)
        return failf_errno("{}: moving {} aside to bind the socket", describe(sk), path);
    }
  }
  // A socket bound in a directory removed since: the directories come back
  // for the bind, and go again with its file.
  std::vector<std::string> made;
  if (!owned) {
    std::vector<std::string> missing;
    for (std::string d = path.substr(0, path.rfind('/')); !d.empty() && ::access(d.c_str(), F_OK) != 0;
         d = d.substr(0, d.rfind('/')))
      missing.push_back(d);
    for (auto d = missing.rbegin(); d != missing.rend(); ++d) {
      if (::mkdir(d->c_str(), 0700) != 0) {
        for (auto m = made.rbegin(); m != made.rend(); ++m) (void)::rmdir(m->c_str());
        return failf_errno("{}: making its removed directory {} again to bind it", describe(sk), *d);
      }
      made.push_back(*d);
    }
  }
  int err = run_in_dir(dir_of(sk), do_bind);
  if (err != 0) {
    if (!aside.empty()) (void)::rename(aside.c_str(), path.c_str());
    for (auto m = made.rbegin(); m != made.rend(); ++m) (void)::rmdir(m->c_str());
    errno = err;
    return failf_errno("{}: bind {}", describe(sk), path);
  }
  fixes.push({path, aside, &sk, std::move(made)});
  return {};
}

// connect(2) or sendto(2) toward the socket `to` by its name.
int connect_to(int fd, const img::UnixSocketFile& to) {
  sockaddr_un a;
  socklen_t len = unix_addr_of(to.name(), a);
  return run_in_dir(dir_of(to), [&] { return ::connect(fd, reinterpret_cast<sockaddr*>(&a), len); });
}

int send_to(int fd, const std::string& msg, const img::UnixSocketFile& to) {
  sockaddr_un a;
  socklen_t len = unix_addr_of(to.name(), a);
  return run_in_dir(dir_of(to), [&] {
    ssize_t n = ::sendto(fd, msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
                         reinterpret_cast<sockaddr*>(&a), len);
    return n == static_cast<ssize_t>(msg.size()) ? 0 : -1;
  });
}

// The same with the message's control messages (files already resolved
// into fds by unix_send_message's files, before any fork).
Result<int> send_to_with(int fd, const std::string& msg, const img::UnixQueuedControl* c,
                         const UnixSharedFile& files, const img::UnixSocketFile& to) {
  sockaddr_un a;
  socklen_t len = unix_addr_of(to.name(), a);
  std::string dir = dir_of(to);
  if (dir.empty()) return unix_send_message(fd, msg, c, &files, &a, len);
  // In the directory (a relative name): the files are looked up first.
  std::map<uint32_t, int> opened;
  if (c)
    for (uint32_t id : c->file_ids()) {
      ASSIGN_OR_RETURN(int f, files(id));
      opened[id] = f;
    }
  UnixSharedFile known = [&opened](uint32_t id) -> Result<int> { return opened.at(id); };
  return run_in_dir(dir, [&] {
    auto r = unix_send_message(fd, msg, c, &known, &a, len);
    if (!r) return -1;
    errno = *r;
    return *r == 0 ? 0 : -1;
  });
}

class NamedRestore {
 public:
  NamedRestore(const ByIno& all, int floor, std::map<uint64_t, UniqueFd>& out, UnixDeferred& deferred)
      : all_(all), floor_(floor), out_(out), deferred_(deferred) {}

  Status run() {
    for (auto& [ino, sk] : all_)
      if (restored_as_named(*sk, all_)) mine_[ino] = sk;
    if (mine_.empty()) return {};
    for (auto& [ino, sk] : mine_)
      if (uint64_t l = accepted_from(*sk, all_); l && mine_.count(sk->peer_ino())) accepted_[ino] = l;
    TRY(create());
    TRY(bind_all());
    TRY(send_datagrams());
    TRY(connect_all());
    TRY(send_stream_queues());
    TRY(set_states());
    return fixes_.finish();
  }

 private:
  bool paired(uint64_t a) const { return pairs_.count(a) > 0; }
  int fd(uint64_t ino) const { return out_.at(ino).get(); }

  Status keep(uint64_t ino, UniqueFd fd) {
    fd = move_fd_above(std::move(fd), floor_);
    TRY(unix_set_buffers(fd.get(), *mine_.at(ino)));
    out_[ino] = std::move(fd);
    return {};
  }

  // Sockets connected both ways (not through a listener of the tree) come
  // from socketpair(2) and get their names by bind(2) after; the others are
  // created alone; accepted ones come from accept(2) in connect_all().
  Status create() {
    for (auto& [ino, sk] : mine_) {
      if (out_.count(ino) || accepted_.count(ino)) continue;
      int type = static_cast<int>(sk->type()) | SOCK_CLOEXEC | SOCK_NONBLOCK;
      auto peer = sk->peer_ino() ? mine_.find(sk->peer_ino()) : mine_.end();
      if (peer != mine_.end() && peer->second->peer_ino() == ino && !accepted_.count(peer->first)) {
        int sv[2];
        if (::socketpair(AF_UNIX, type, 0, sv) != 0) return failf_errno("{}: socketpair", describe(*sk));
        TRY(keep(ino, UniqueFd(sv[0])));
        TRY(keep(peer->first, UniqueFd(sv[1])));
        pairs_.insert(ino);
        pairs_.insert(peer->first);
        continue;
      }
      if (sk->type() == SOCK_DGRAM && sk->name().empty() && sk->peer_ino() == 0 && sk->queue_size() > 0) {
        // Datagrams left by a socketpair peer that was closed since: they
        // come from a peer of ours, closed once they are sent.
        int sv[2];
        if (::socketpair(AF_UNIX, type, 0, sv) != 0) return failf_errno("{}: socketpair", describe(*sk));
        TRY(keep(ino, UniqueFd(sv[0])));
        closed_peers_.emplace(ino, move_fd_above(UniqueFd(sv[1]), floor_));
        continue;
      }
      UniqueFd s(::socket(AF_UNIX, type, 0));
      if (!s) return failf_errno("{}: socket", describe(*sk));
      TRY(keep(ino, std::move(s)));
    }
    return {};
  }

  // Paths that name their socket first (the others move what is there aside
  // and may find one of those), then listen.
  Status bind_all() {
    std::vector<uint64_t> order;
    for (auto& [ino, sk] : mine_)
      if (!sk->name().empty() && !accepted_.count(ino)) order.push_back(ino);
    std::stable_sort(order.begin(), order.end(), [&](uint64_t a, uint64_t b) {
      auto rank = [&](uint64_t i) { return mine_.at(i)->path_state() == img::UNIX_PATH_OWNED ? 0 : 1; };
      return rank(a) < rank(b);
    });
    for (uint64_t ino : order) {
      const img::UnixSocketFile& sk = *mine_.at(ino);
      TRY(bind_name(fd(ino), sk, fixes_));
      if (sk.state() == kUnixListening && ::listen(fd(ino), static_cast<int>(sk.backlog())) != 0)
        return failf_errno("{}: listen", describe(sk));
    }
    return {};
  }

  // Each datagram from a socket with its sender's name: the sender itself
  // where it is in the tree, an unbound socket of ours where the sender had
  // no name. Before any connect(2): a datagram socket connected to another
  // takes datagrams from that one only.
  Status send_datagrams() {
    for (auto& [ino, sk] : mine_) {
      if (sk->type() != SOCK_DGRAM) continue;
      // From the first message that carries control messages on, in order,
      // once the tree exists (UnixDeferred).
      bool later = false;
      std::shared_ptr<img::UnixSocketFile> copy;
      for (int i = 0; i < sk->queue_size(); i++) {
        const std::string& msg = sk->queue(i);
        std::string from = i < sk->queue_from_size() ? sk->queue_from(i) : std::string();
        std::string what = fmt::format("{}: sending a queued datagram back", describe(*sk));
        int err = 0;
        const img::UnixSocketFile* sender = nullptr;
        uint64_t sender_ino = 0;
        for (auto& [j, s] : mine_)
          if (s->type() == SOCK_DGRAM && s->name() == from && (!from.empty() || (paired(ino) && j == sk->peer_ino())))
            sender = s, sender_ino = j;
        // The socket it goes from (-1: a new unbound one), and whether
        // that one is connected to sk (send, not sendto).
        int via = -1;
        bool connected = false;
        if (auto closed = closed_peers_.find(ino); closed != closed_peers_.end() && from.empty()) {
          via = closed->second.get(), connected = true;
        } else if (sender && paired(ino) && sender_ino == sk->peer_ino()) {
          via = fd(sender_ino), connected = true;
        } else if (sk->name().empty()) {
          return failf("{}: it has no name to send it to", what);
        } else if (sender) {
          via = fd(sender_ino);
        } else if (!from.empty()) {
          return failf("{}: its sender {} is not in the tree", what, unix_name_display(from));
        }
        later = later || unix_control_of(*sk, i) != nullptr;
        if (later) {
          if (!copy) copy = std::make_shared<img::UnixSocketFile>(*sk);
          std::shared_ptr<UniqueFd> dup;
          if (via >= 0) {
            ASSIGN_OR_RETURN(UniqueFd d, dup_description(via, what));
            dup = std::make_shared<UniqueFd>(std::move(d));
          }
          deferred_.later([copy, dup, connected, i, what](const UnixSharedFile& files) -> Status {
            UniqueFd anon;
            if (!dup) {
              anon.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
              if (!anon) return failf_errno("{}: socket", what);
            }
            int s = dup ? dup->get() : anon.get();
            const img::UnixQueuedControl* c = unix_control_of(*copy, i);
            ASSIGN_OR_RETURN(int e, connected ? unix_send_message(s, copy->queue(i), c, &files)
                                              : send_to_with(s, copy->queue(i), c, files, *copy));
            if (e != 0) {
              errno = e;
              return failf_errno("{}", what);
            }
            return {};
          });
          continue;
        }
        if (connected) {
          ssize_t n = ::send(via, msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
          err = n == static_cast<ssize_t>(msg.size()) ? 0 : n < 0 ? errno : EMSGSIZE;
        } else if (via >= 0) {
          err = send_to(via, msg, *sk);
        } else {
          UniqueFd anon(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
          if (!anon) return failf_errno("{}: socket", what);
          err = send_to(anon.get(), msg, *sk);
        }
        if (err != 0) {
          errno = err;
          return failf_errno("{}", what);
        }
      }
    }
    closed_peers_.clear();
    return {};
  }

  Status connect_all() {
    for (auto& [ino, sk] : mine_) {
      if (sk->type() != SOCK_DGRAM || sk->peer_ino() == 0 || paired(ino)) continue;
      // Its peer may be restored elsewhere (an external socket's stand-in):
      // the name is what counts.
      auto to = all_.find(sk->peer_ino());
      if (to == all_.end() || to->second->name().empty())
        return failf("{}: it is connected to {}, which has no name to connect to", describe(*sk),
                     socket_link(sk->peer_ino()));
      if (int err = connect_to(fd(ino), *to->second); err != 0) {
        errno = err;
        return failf_errno("{}: connect to {}", describe(*sk), describe(*to->second));
      }
    }
    for (auto& [lino, l] : mine_) {
      if (l->state() != kUnixListening) continue;
      // Accepted connections first, each accepted at once; then the ones
      // left waiting, in their order.
      for (auto& [ino, from] : accepted_) {
        if (from != lino) continue;
        uint64_t client = mine_.at(ino)->peer_ino();
        TRY(connect_client(client, *l));
        UniqueFd a(::accept4(fd(lino), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!a) return failf_errno("{}: accept", describe(*l));
        TRY(check_accepted(a.get(), client, *l));
        TRY(keep(ino, std::move(a)));
      }
      for (auto& p : l->pending()) {
        img::UnixSocketFile embryo;
        embryo.set_ino(p.client_ino());
        *embryo.mutable_queue() = p.queue();
        if (p.client_ino() == 0) {
          // Its client was closed: one of ours connects, sends and goes.
          UniqueFd gone(::socket(AF_UNIX, static_cast<int>(l->type()) | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
          if (!gone) return failf_errno("{}: socket", describe(*l));
          if (int err = connect_to(gone.get(), *l); err != 0) {
            errno = err;
            return failf_errno("{}: connecting for a connection whose client was closed", describe(*l));
          }
          TRY(unix_send_queue(gone.get(), embryo, nullptr));
          continue;
        }
        if (!out_.count(p.client_ino()))
          return failf("{}: the client {} of a connection not yet accepted is not in files.img",
                       describe(*l), socket_link(p.client_ino()));
        TRY(connect_client(p.client_ino(), *l));
        TRY(unix_send_queue(fd(p.client_ino()), embryo, nullptr));
      }
    }
    return {};
  }

  // The listener is reachable by its name from the moment it listens: a
  // process outside the tree may have connected first, and its connection
  // must not stand in for ours.
  Status check_accepted(int accepted, uint64_t client, const img::UnixSocketFile& l) {
    struct stat ours, got;
    if (::fstat(fd(client), &ours) != 0 || ::fstat(accepted, &got) != 0)
      return failf_errno("{}: fstat", describe(l));
    ASSIGN_OR_RETURN(UnixDiag d, with_context(unix_diag_query(got.st_ino), describe(l)));
    if (d.peer_ino != ours.st_ino)
      return failf("{}: a process outside the tree connected to it while it was being restored; "
                   "stop that process and restore again", describe(l));
    return {};
  }

  Status connect_client(uint64_t client, const img::UnixSocketFile& l) {
    if (!out_.count(client)) return failf("{}: its client {} was not created", describe(l), socket_link(client));
    if (int err = connect_to(fd(client), l); err != 0) {
      errno = err;
      return failf_errno("{}: connecting {} to it", describe(l), socket_link(client));
    }
    return {};
  }

  Status send_stream_queues() {
    for (auto& [ino, sk] : mine_) {
      if (sk->type() == SOCK_DGRAM || sk->queue_size() == 0) continue;
      if (!out_.count(sk->peer_ino()))
        return failf("{}: bytes are queued on it but it has no peer to send them", describe(*sk));
      TRY(unix_send_queue(fd(sk->peer_ino()), *sk, &deferred_));
    }
    return {};
  }

  Status set_states() {
    for (auto& [ino, sk] : mine_) {
      if (::fcntl(fd(ino), F_SETFL, 0) != 0) return failf_errno("{}: F_SETFL", describe(*sk));
      TRY(unix_set_state(fd(ino), *sk, &deferred_));
    }
    return {};
  }

  const ByIno& all_;
  int floor_;
  std::map<uint64_t, UniqueFd>& out_;
  UnixDeferred& deferred_;
  ByIno mine_;
  std::map<uint64_t, uint64_t> accepted_;  // accepted socket -> its listener
  std::set<uint64_t> pairs_;               // made by socketpair(2)
  std::map<uint64_t, UniqueFd> closed_peers_;  // stand-ins for peers closed before the dump
  PathFixes fixes_;
};

}  // namespace

Status restore_named_unix_sockets(const ByIno& by_ino, int fd_floor, std::map<uint64_t, UniqueFd>& out,
                                  UnixDeferred& deferred) {
  NamedRestore r(by_ino, fd_floor, out, deferred);
  return r.run();
}

}  // namespace minicriu
