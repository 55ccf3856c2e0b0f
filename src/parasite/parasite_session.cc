#include "parasite/parasite_session.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <optional>

#include "base/page.hpp"
#include "parasite_blob.h"
#include "ptrace/remote_syscalls.hpp"

namespace minicriu {

namespace blob = blobs::parasite;

ParasiteSession::ParasiteSession(FrozenProcess& process, const TraceeMemory& memory,
                                 RemotePtr<> site, const Logger& log)
    : process_(process), memory_(memory), site_(site), log_(log) {}

ParasiteSession::~ParasiteSession() {
  if (auto st = cure(); !st) log_.error("pid {}: cure failed: {}", process_.pid, st.error().what());
}

Status ParasiteSession::infect() {
  ctl_off_ = page_up(blob::kSize);
  scratch_off_ = ctl_off_ + 1024;
  args_off_ = ctl_off_ + kPageSize;
  size_t stack_off = args_off_ + MC_PARASITE_ARGS_SIZE;
  stack_top_off_ = stack_off + MC_PARASITE_STACK_SIZE - 64;
  size_ = stack_off + MC_PARASITE_STACK_SIZE;

  Tracee& leader = process_.leader();
  {
    RemoteSyscalls rs(leader, memory_, site_, 32);
    TRY(rs.enter());
    static const char kName[32] = "minicriu-parasite";
    TRY(rs.write_scratch(kName, sizeof(kName)));
    ASSIGN_OR_RETURN(long memfd, rs.syscall(SYS_memfd_create, rs.scratch(), MFD_CLOEXEC));
    if (memfd < 0) return std::unexpected(Error("memfd_create in the target", static_cast<int>(-memfd)));
    std::string path = fmt::format("/proc/{}/fd/{}", process_.pid, memfd);
    memfd_.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    int open_errno = errno;
    if (memfd_ && ::ftruncate(memfd_.get(), static_cast<off_t>(size_)) != 0) {
      open_errno = errno;
      memfd_.reset();
    }
    long addr = -EBADF;
    if (memfd_) {
      ASSIGN_OR_RETURN(addr, rs.syscall(SYS_mmap, 0, static_cast<long>(size_),
                                        PROT_READ | PROT_WRITE | PROT_EXEC, MAP_SHARED, memfd, 0));
    }
    ASSIGN_OR_RETURN(long closed, rs.syscall(SYS_close, memfd));
    (void)closed;
    if (!memfd_) return std::unexpected(Error("cannot open the parasite memfd", open_errno));
    if (addr < 0 && addr > -4096)
      return std::unexpected(Error("mmap of the parasite in the target", static_cast<int>(-addr)));
    remote_ = RemotePtr<>(static_cast<uint64_t>(addr));
  }
  ASSIGN_OR_RETURN(local_, Mapping::map(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED,
                                        memfd_.get(), 0));
  std::memcpy(local(0), blob::kBytes, blob::kSize);
  log_.debug("pid {}: parasite mapped at {} ({} KiB)", process_.pid, remote_, size_ >> 10);
  return {};
}

Result<ThreadSelfState> ParasiteSession::thread_self_state(Tracee& thread) {
  RemoteSyscalls rs(thread, remote(blob::k_parasite_syscall));
  TRY(rs.enter());
  RemotePtr<> scratch = remote(scratch_off_);
  ThreadSelfState st;
  ASSIGN_OR_RETURN(long r, rs.syscall(SYS_sigaltstack, 0, scratch));
  if (r < 0) return std::unexpected(Error(fmt::format("thread {}: sigaltstack", thread.tid()), -r));
  struct { uint64_t sp; int32_t flags; int32_t pad; uint64_t size; } ss;
  std::memcpy(&ss, local(scratch_off_), sizeof(ss));
  st.altstack_sp = RemotePtr<>(ss.sp);
  st.altstack_flags = static_cast<uint32_t>(ss.flags);
  st.altstack_size = ss.size;
  ASSIGN_OR_RETURN(r, rs.syscall(SYS_prctl, PR_GET_TID_ADDRESS, scratch));
  if (r < 0) return std::unexpected(Error(fmt::format("thread {}: PR_GET_TID_ADDRESS", thread.tid()), -r));
  uint64_t tid_address;
  std::memcpy(&tid_address, local(scratch_off_), sizeof(tid_address));
  st.clear_child_tid = RemotePtr<pid_t>(tid_address);
  return st;
}

namespace {

Result<UniqueFd> listen_at(const sockaddr_un& addr, socklen_t len) {
  UniqueFd listener(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!listener) return fail_errno("parasite socket");
  if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), len) != 0)
    return fail_errno("bind of the parasite socket");
  if (::listen(listener.get(), 1) != 0) return fail_errno("listen on the parasite socket");
  return listener;
}

// Abstract names live in a network namespace: the parasite can only reach a
// listener made in its own. For a target in another one (a container), this
// thread enters it just to make the socket (which stays there), then returns.
Result<UniqueFd> listen_where_target_is(pid_t pid, const sockaddr_un& addr, socklen_t len) {
  std::string theirs_path = fmt::format("/proc/{}/ns/net", pid);
  struct stat theirs, mine;
  if (::stat(theirs_path.c_str(), &theirs) != 0 || ::stat("/proc/thread-self/ns/net", &mine) != 0 ||
      theirs.st_ino == mine.st_ino)
    return listen_at(addr, len);
  UniqueFd target_ns(::open(theirs_path.c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd own_ns(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!target_ns || !own_ns) return failf_errno("pid {}: cannot open its network namespace", pid);
  if (::setns(target_ns.get(), CLONE_NEWNET) != 0)
    return failf_errno("pid {}: cannot enter its network namespace for the parasite's socket", pid);
  auto listener = listen_at(addr, len);
  if (::setns(own_ns.get(), CLONE_NEWNET) != 0)
    return failf_errno("cannot return to our network namespace after pid {}'s", pid);
  return listener;
}

}  // namespace

Status ParasiteSession::start() {
  Tracee& leader = process_.leader();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string name = fmt::format("minicriu-parasite-{}-{}-{:x}", ::getpid(), process_.pid,
                                 std::chrono::steady_clock::now().time_since_epoch().count());
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  ASSIGN_OR_RETURN(UniqueFd listener, listen_where_target_is(process_.pid, addr, len));

  auto* ctl = reinterpret_cast<ParasiteCtl*>(local(ctl_off_));
  std::memset(ctl, 0, sizeof(*ctl));
  ctl->magic = MC_PARASITE_CTL_MAGIC;
  ctl->addr_len = len;
  std::memcpy(ctl->sun_path, addr.sun_path, sizeof(ctl->sun_path));
  ctl->args = remote(args_off_).addr();

  ASSIGN_OR_RETURN(leader_regs_, leader.get_regs());
  ASSIGN_OR_RETURN(leader_sigmask_, leader.get_sigmask());
  TRY(leader.set_sigmask(~0ull));
  arch::Regs regs = leader_regs_;
  arch::set_syscall(regs, 0, static_cast<long>(remote(ctl_off_).addr()), 0, 0, 0, 0, 0);
  regs.rip = remote(blob::k_parasite_entry).addr();
  regs.rsp = remote(stack_top_off_).addr() & ~0xfull;
  started_ = true;  // from here on, cure() must put the leader back
  TRY(leader.set_regs(regs));
  TRY(leader.resume());

  auto deadline = std::chrono::steady_clock::now() + kStallTimeout;
  for (;;) {
    pollfd pfd{listener.get(), POLLIN, 0};
    int n = ::poll(&pfd, 1, 100);
    if (n > 0) break;
    if (n < 0 && errno != EINTR) return fail_errno("poll for the parasite");
    TRY(check_alive());
    if (std::chrono::steady_clock::now() > deadline) return fail("the parasite did not connect");
  }
  sock_.reset(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!sock_) return fail_errno("accept of the parasite connection");
  log_.debug("pid {}: parasite running", process_.pid);
  return {};
}

Status ParasiteSession::check_alive() {
  ASSIGN_OR_RETURN(bool trapped, process_.leader().poll_trap());
  if (trapped) {
    auto regs = process_.leader().get_regs();
    long rc = regs ? static_cast<long>(regs->rax) : 0;
    return std::unexpected(Error("the parasite exited early", rc < 0 ? static_cast<int>(-rc) : 0));
  }
  return {};
}

Status ParasiteSession::send(uint32_t cmd, uint64_t arg, int fd) {
  ParasiteMsg msg{cmd, 0, arg, 0};
  iovec iov{&msg, sizeof(msg)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr hdr{};
  hdr.msg_iov = &iov;
  hdr.msg_iovlen = 1;
  if (fd >= 0) {
    hdr.msg_control = control;
    hdr.msg_controllen = sizeof(control);
    cmsghdr* c = CMSG_FIRSTHDR(&hdr);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  if (::sendmsg(sock_.get(), &hdr, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(msg)))
    return failf_errno("sending parasite command {}", cmd);
  return {};
}

Result<ParasiteMsg> ParasiteSession::receive(std::vector<UniqueFd>* fds,
                                             std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    pollfd pfd{sock_.get(), POLLIN, 0};
    int n = ::poll(&pfd, 1, 100);
    if (n < 0 && errno != EINTR) return fail_errno("poll on the parasite socket");
    if (n > 0) break;
    TRY(check_alive());
    if (std::chrono::steady_clock::now() > deadline) return fail("the parasite stopped answering");
  }
  ParasiteMsg msg{};
  iovec iov{&msg, sizeof(msg)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * MC_PARASITE_MAX_FDS)];
  msghdr hdr{};
  hdr.msg_iov = &iov;
  hdr.msg_iovlen = 1;
  hdr.msg_control = control;
  hdr.msg_controllen = sizeof(control);
  ssize_t n = ::recvmsg(sock_.get(), &hdr, MSG_CMSG_CLOEXEC);
  if (n < 0) return fail_errno("receiving from the parasite");
  if (n != sizeof(msg)) return fail("the parasite closed its connection");
  for (cmsghdr* c = CMSG_FIRSTHDR(&hdr); c; c = CMSG_NXTHDR(&hdr, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (fds) fds->emplace_back(fd);
      else ::close(fd);
    }
  }
  if (hdr.msg_flags & MSG_CTRUNC) return fail("fds from the parasite were truncated");
  return msg;
}

Status ParasiteSession::drain_pages(std::span<const RemoteRange> ranges, int out_fd) {
  if (ranges.size() > kMaxIovs) return fail("too many ranges for one page drain");
  if (!pipe_sent_) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return fail_errno("pipe for pages");
    pipe_rd_.reset(p[0]);
    pipe_wr_.reset(p[1]);
    // As large as an unprivileged pipe may be (fs.pipe-max-size); fewer wakeups.
    long max = 1 << 20;
    if (auto t = ::fopen("/proc/sys/fs/pipe-max-size", "r")) {
      if (fscanf(t, "%ld", &max) != 1) max = 1 << 20;
      fclose(t);
    }
    ::fcntl(pipe_wr_.get(), F_SETPIPE_SZ, static_cast<int>(max));
    TRY(send(PARASITE_CMD_SET_PIPE, 0, pipe_wr_.get()));
    ASSIGN_OR_RETURN(auto reply, receive());
    if (reply.status < 0) return std::unexpected(Error("parasite: set pipe", -reply.status));
    pipe_sent_ = true;
  }
  uint64_t total = 0;
  auto* iovs = reinterpret_cast<ParasiteIovec*>(local(args_off_));
  for (size_t i = 0; i < ranges.size(); i++) {
    iovs[i] = ParasiteIovec{ranges[i].start.addr(), ranges[i].size};
    total += ranges[i].size;
  }
  TRY(send(PARASITE_CMD_DUMP_PAGES, ranges.size()));

  // Splice out while the parasite splices in; the reply comes when it is done,
  // or early with an error (then fewer bytes than asked will ever arrive). If
  // the image cannot take more (ENOSPC), keep emptying the pipe into nothing
  // until the parasite is through: closing the pipe instead would leave a
  // SIGPIPE pending in the target, fatal once its signal mask is put back.
  uint64_t moved = 0;
  std::optional<Error> sink_error;
  UniqueFd devnull;
  auto deadline = std::chrono::steady_clock::now() + kStallTimeout;
  while (moved < total) {
    pollfd pfds[2] = {{pipe_rd_.get(), POLLIN, 0}, {sock_.get(), POLLIN, 0}};
    int n = ::poll(pfds, 2, 100);
    if (n < 0 && errno != EINTR) return fail_errno("poll on the page pipe");
    if (n <= 0) {
      TRY(check_alive());
      if (std::chrono::steady_clock::now() > deadline) return fail("page drain stalled");
      continue;
    }
    if (pfds[0].revents & POLLIN) {
      ssize_t s = ::splice(pipe_rd_.get(), nullptr, sink_error ? devnull.get() : out_fd, nullptr,
                           total - moved, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (s < 0 && errno != EAGAIN && errno != EINTR) {
        if (sink_error) return std::unexpected(*sink_error);
        sink_error = Error("splice of pages into the image", errno);
        devnull.reset(::open("/dev/null", O_WRONLY | O_CLOEXEC));
        if (!devnull) return std::unexpected(*sink_error);
        continue;
      }
      if (s > 0) {
        moved += static_cast<uint64_t>(s);
        deadline = std::chrono::steady_clock::now() + kStallTimeout;
      }
      continue;
    }
    if (pfds[1].revents) break;  // an early reply: an error
  }
  ASSIGN_OR_RETURN(auto reply, receive());
  if (sink_error) return std::unexpected(*sink_error);
  if (reply.status < 0)
    return std::unexpected(Error("parasite: vmsplice of pages", -reply.status));
  if (moved != total) return failf("page drain moved {} of {} bytes", moved, total);
  return {};
}

Result<std::vector<UniqueFd>> ParasiteSession::fetch_fds(std::span<const int32_t> fds) {
  std::vector<UniqueFd> out;
  if (fds.empty()) return out;
  if (fds.size_bytes() > MC_PARASITE_ARGS_SIZE) return fail("too many fds to fetch at once");
  std::memcpy(local(args_off_), fds.data(), fds.size_bytes());
  TRY(send(PARASITE_CMD_SEND_FDS, fds.size()));
  size_t batches = (fds.size() + MC_PARASITE_MAX_FDS - 1) / MC_PARASITE_MAX_FDS;
  for (size_t i = 0; i < batches; i++) {
    size_t before = out.size();
    ASSIGN_OR_RETURN(auto msg, receive(&out));
    if (msg.cmd != PARASITE_CMD_SEND_FDS || out.size() - before != msg.arg)
      return fail("the parasite sent a malformed fd batch");
  }
  ASSIGN_OR_RETURN(auto reply, receive());
  if (reply.status < 0) return std::unexpected(Error("parasite: sending fds", -reply.status));
  if (out.size() != fds.size()) return failf("got {} of {} fds from the parasite", out.size(), fds.size());
  return out;
}

Result<ParasiteMisc> ParasiteSession::get_misc() {
  TRY(send(PARASITE_CMD_GET_MISC, 0));
  ASSIGN_OR_RETURN(auto reply, receive());
  if (reply.status < 0) return std::unexpected(Error("parasite: misc state", -reply.status));
  ParasiteMisc misc;
  std::memcpy(&misc, local(args_off_), sizeof(misc));
  return misc;
}

Result<std::vector<ParasiteTimer>> ParasiteSession::get_timers(std::span<const int32_t> ids) {
  std::vector<ParasiteTimer> timers(ids.size());
  if (ids.empty()) return timers;
  if (timers.size() * sizeof(ParasiteTimer) > MC_PARASITE_ARGS_SIZE) return fail("too many POSIX timers");
  for (size_t i = 0; i < ids.size(); i++) timers[i].id = ids[i];
  std::memcpy(local(args_off_), timers.data(), timers.size() * sizeof(ParasiteTimer));
  TRY(send(PARASITE_CMD_GET_TIMERS, ids.size()));
  ASSIGN_OR_RETURN(auto reply, receive());
  if (reply.status < 0) return std::unexpected(Error("parasite: POSIX timers", -reply.status));
  std::memcpy(timers.data(), local(args_off_), timers.size() * sizeof(ParasiteTimer));
  return timers;
}

Status ParasiteSession::unmap_remote() {
  Tracee& leader = process_.leader();
  RemoteSyscalls rs(leader, memory_, site_, 0);
  TRY(rs.enter());
  ASSIGN_OR_RETURN(long r, rs.syscall(SYS_munmap, remote_, static_cast<long>(size_)));
  if (r < 0) return std::unexpected(Error("munmap of the parasite", static_cast<int>(-r)));
  return {};
}

Status ParasiteSession::cure() {
  Tracee& leader = process_.leader();
  Status result;
  if (started_) {
    started_ = false;
    bool trapped = false;
    if (sock_) {
      if (send(PARASITE_CMD_FINI, 0)) {
        // Replies to a failed command may still be queued before FINI's own.
        for (int i = 0; i < 4; i++) {
          auto reply = receive(nullptr, std::chrono::milliseconds(2000));
          if (!reply || reply->cmd == PARASITE_CMD_FINI) break;
        }
      }
      sock_.reset();
      // It returns from its main loop and hits int3 right after.
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (std::chrono::steady_clock::now() < deadline) {
        auto t = leader.poll_trap();
        if (!t) break;
        if (*t) {
          trapped = true;
          break;
        }
        ::usleep(1000);
      }
    } else {
      auto t = leader.poll_trap();
      trapped = t && *t;
    }
    if (!trapped) leader.interrupt_and_wait();
    if (auto st = leader.set_regs(leader_regs_); !st) result = st;
    if (auto st = leader.set_sigmask(leader_sigmask_); !st && result) result = st;
  }
  if (!remote_.null()) {
    if (auto st = unmap_remote(); !st && result) result = st;
    remote_ = RemotePtr<>();
  }
  local_.reset();
  memfd_.reset();
  pipe_rd_.reset();
  pipe_wr_.reset();
  return result;
}

}  // namespace minicriu
