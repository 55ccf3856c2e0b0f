#include "mem/write_tracking.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/fd_passing.hpp"

namespace minicriu {

namespace {

constexpr uint32_t kTrackingMagic = 0x4d435754;  // "MCWT"
constexpr size_t kFdsPerMessage = 16;

struct HolderMsg {
  uint32_t magic;
  int32_t pid;    // 0 in the head message
  uint32_t count; // head: processes that follow; else the fds riding on it
  int32_t root;
};

// A path to name that is short enough for sun_path whatever the dir:
// through an fd of the dir.
std::string socket_path(int dirfd) { return fmt::format("/proc/self/fd/{}/{}", dirfd, kTrackingSocket); }

bool send_msg(int sock, const HolderMsg& m, const int* fds, size_t n) {
  return send_with_fds<kFdsPerMessage>(sock, &m, sizeof(m), std::span<const int>(fds, n)) == sizeof(m);
}

// The holder's life, in the detached grandchild: only syscalls.
[[noreturn]] void hold(int listener, int pidfd, const std::vector<std::pair<pid_t, std::vector<int>>>& fds,
                       pid_t root, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) ::_exit(0);
    pollfd p[2] = {{listener, POLLIN, 0}, {pidfd, POLLIN, 0}};
    int r = ::poll(p, pidfd >= 0 ? 2 : 1, static_cast<int>(std::min<int64_t>(left.count(), 1 << 30)));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 || (pidfd >= 0 && p[1].revents)) ::_exit(0);  // the tree is gone
    if (!(p[0].revents & POLLIN)) continue;
    int c = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    bool ok = send_msg(c, HolderMsg{kTrackingMagic, 0, static_cast<uint32_t>(fds.size()), root}, nullptr, 0);
    for (auto& [pid, list] : fds) {
      // Messages of 16 fds, the last one of fewer (maybe none).
      for (size_t i = 0; ok; i += kFdsPerMessage) {
        size_t n = std::min(kFdsPerMessage, list.size() - i);
        ok = send_msg(c, HolderMsg{kTrackingMagic, pid, static_cast<uint32_t>(n), root}, list.data() + i, n);
        if (n < kFdsPerMessage) break;
      }
    }
    // The taker has its own references now: ours may go.
    char done;
    if (ok && ::read(c, &done, 1) >= 0) ::_exit(0);
    ::close(c);
  }
}

}  // namespace

Status spawn_tracking_holder(const std::string& images_dir, WriteTracking tracking, std::chrono::seconds timeout,
                             const Logger& log) {
  UniqueFd dir(::open(images_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return failf_errno("cannot open {}", images_dir);
  std::string path = socket_path(dir.get());
  UniqueFd listener(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!listener) return fail_errno("socket for the write-tracking holder");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ::unlinkat(dir.get(), kTrackingSocket, 0);
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener.get(), 4) != 0)
    return failf_errno("cannot listen on {}/{}", images_dir, kTrackingSocket);
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, tracking.root, 0)));

  // Everything the holder needs, ready before fork.
  std::vector<std::pair<pid_t, std::vector<int>>> fds;
  std::vector<int> keep = {listener.get(), pidfd.get()};
  for (auto& [pid, list] : tracking.uffds) {
    fds.emplace_back(pid, std::vector<int>());
    for (auto& fd : list) {
      fds.back().second.push_back(fd.get());
      keep.push_back(fd.get());
    }
  }
  std::sort(keep.begin(), keep.end());
  pid_t child = ::fork();
  if (child < 0) return fail_errno("fork of the write-tracking holder");
  if (child == 0) {
    ::setsid();
    if (::fork() != 0) ::_exit(0);
    ::signal(SIGPIPE, SIG_IGN);
    ::signal(SIGHUP, SIG_IGN);
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, 0), ::dup2(null, 1), ::dup2(null, 2);
    }
    int from = 3;
    for (int k : keep) {
      if (k < 0) continue;
      if (k > from) ::close_range(static_cast<unsigned>(from), static_cast<unsigned>(k - 1), 0);
      from = k + 1;
    }
    ::close_range(static_cast<unsigned>(from), ~0u, 0);
    ::prctl(PR_SET_NAME, "minicriu-track");
    hold(listener.get(), pidfd.get(), fds, tracking.root, timeout);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  log.info("write tracking held by a holder process on {}/{} for {} s at most", images_dir, kTrackingSocket,
           timeout.count());
  return {};
}

Result<std::optional<WriteTracking>> take_tracking_from_holder(const std::string& images_dir) {
  UniqueFd dir(::open(images_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return failf_errno("cannot open {}", images_dir);
  std::string path = socket_path(dir.get());
  UniqueFd sock(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!sock) return fail_errno("socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return std::optional<WriteTracking>();
  timeval tv{10, 0};
  ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  auto receive = [&](std::vector<UniqueFd>* fds) -> Result<HolderMsg> {
    HolderMsg m{};
    ssize_t n = recv_with_fds<kFdsPerMessage>(sock.get(), &m, sizeof(m), *fds);
    if (n != sizeof(m) || m.magic != kTrackingMagic)
      return failf("{}/{}: the write-tracking holder sent a malformed message", images_dir, kTrackingSocket);
    return m;
  };
  std::vector<UniqueFd> none;
  ASSIGN_OR_RETURN(HolderMsg head, receive(&none));
  WriteTracking t;
  t.root = head.root;
  for (uint32_t i = 0; i < head.count;) {
    std::vector<UniqueFd> got;
    ASSIGN_OR_RETURN(HolderMsg m, receive(&got));
    if (got.size() != m.count)
      return failf("{}/{}: the write-tracking holder sent {} fd(s) for {}", images_dir, kTrackingSocket, got.size(),
                   m.count);
    auto& list = t.uffds[m.pid];
    for (auto& fd : got) list.push_back(std::move(fd));
    // A process's fds come in messages of 16; the next pid starts the next.
    if (m.count < kFdsPerMessage) i++;
  }
  char done = 1;
  (void)::write(sock.get(), &done, 1);
  ::unlinkat(dir.get(), kTrackingSocket, 0);
  return std::optional<WriteTracking>(std::move(t));
}

}  // namespace minicriu
