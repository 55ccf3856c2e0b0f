#include "parasite/parasite_session.hpp"

#include <sys/ioctl.h>
#include <linux/userfaultfd.h>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string_view>
#include <thread>

#include "base/cpus.hpp"
#include "base/fault.hpp"
#include "base/journal.hpp"
#include "base/fd_passing.hpp"
#include "base/page.hpp"
#include "parasite_blob.h"
#include "ptrace/remote_syscalls.hpp"

namespace minicriu {

namespace pblob = blobs::parasite;
using namespace std::chrono_literals;

namespace {

// How long a parasite told to finish may take to say so and trap back.
constexpr std::chrono::milliseconds kFiniTimeout = 2s;

// Where the parasite would rather be mapped (a hint, not MAP_FIXED: the
// kernel maps it elsewhere if that is taken): below the process's lowest
// mapping, so that its record comes first in /proc/PID/smaps, which the dump
// reads up to it (proc/process_attrs.cc) without the kernel walking the page
// tables of the process's memory. 0: no room there, anywhere will do.
uint64_t placement_hint(const std::vector<proc::MapsEntry>& maps, uint64_t size) {
  constexpr uint64_t kLow = 16ull << 20;  // well above vm.mmap_min_addr
  if (maps.empty() || maps.front().start < kLow + size + kLow) return 0;
  return (maps.front().start - size - kLow) & ~uint64_t{kPageSize - 1};
}

// A raw syscall's return value that is an error (-4095..-1): mmap returns
// addresses above 2^63 as negative longs too, so the sign alone does not say.
bool syscall_failed(long r) { return r < 0 && r > -4096; }

static_assert(sizeof(ParasiteCtl) <= 1024, "ParasiteCtl must leave the scratch area alone");

}  // namespace

ParasiteOptions ParasiteOptions::from_environment() {
  ParasiteOptions o;
  if (const char* t = std::getenv("MINICRIU_PARASITE_TIMEOUT_MS")) {
    char* end = nullptr;
    unsigned long ms = std::strtoul(t, &end, 10);
    if (*t && end && !*end && ms > 0) o.stall_timeout = std::chrono::milliseconds(ms);
  }
  if (const char* f = std::getenv("MINICRIU_FAULT")) {
    o.fault_stall = std::string_view(f) == "parasite-stall";
    o.fault_splice = std::string_view(f) == "parasite-splice";
  }
  return o;
}

ParasiteSession::Layout ParasiteSession::layout() {
  Layout l;
  l.ctl = page_up(pblob::kSize);
  l.scratch = l.ctl + 1024;
  l.args = l.ctl + kPageSize;
  size_t stack = l.args + MC_PARASITE_ARGS_SIZE;
  l.stack_top = stack + MC_PARASITE_STACK_SIZE - 64;
  l.size = stack + MC_PARASITE_STACK_SIZE;
  return l;
}

ParasiteSession::ParasiteSession(FrozenProcess& process, const TraceeMemory& memory,
                                 RemotePtr<> site, const Logger& log, ParasiteOptions options)
    : process_(process), memory_(memory), site_(site), log_(log), options_(options), layout_(layout()) {}

ParasiteSession::~ParasiteSession() {
  if (auto st = cure(); !st) log_.error("pid {}: cure failed: {}", process_.pid, st.error().what());
}

Status ParasiteSession::infect() {
  if (before_) return failf("pid {}: the parasite is in already", process_.pid);
  Tracee& leader = process_.leader();
  // Before anything of ours is in the target: whatever differs at cure time
  // is ours to take away, however far infect() or the rest got.
  ASSIGN_OR_RETURN(auto before, TargetSnapshot::take(process_.pid, leader.tid()));
  before_ = std::move(before);
  // Before anything of ours goes in: what its guardian must take away if we
  // die (the fds it held, the signals pending) and where it may run syscalls.
  std::string held;
  for (int fd : before_->fds) held += fmt::format(" {}", fd);
  TRY(journal_note(fmt::format("parasite {} {:#x} {:x}{}", process_.pid, site_.addr(), before_->pending, held)));

  RemoteSyscalls rs(leader, memory_, site_, sizeof(kParasiteMemfdName));
  TRY(rs.enter());
  TRY(rs.write_scratch(kParasiteMemfdName, sizeof(kParasiteMemfdName)));
  ASSIGN_OR_RETURN(long memfd, rs.syscall(SYS_memfd_create, rs.scratch(), MFD_CLOEXEC));
  if (syscall_failed(memfd))
    return std::unexpected(Error(fmt::format("pid {}: memfd_create in the process", process_.pid),
                                 static_cast<int>(-memfd)));
  // The same memfd, opened from here through the target's fd table.
  memfd_.reset(::open(fmt::format("/proc/{}/fd/{}", process_.pid, memfd).c_str(), O_RDWR | O_CLOEXEC));
  if (!memfd_) return failf_errno("pid {}: cannot open the parasite's memfd", process_.pid);
  if (::ftruncate(memfd_.get(), static_cast<off_t>(layout_.size)) != 0)
    return failf_errno("pid {}: cannot size the parasite's memfd", process_.pid);
  ASSIGN_OR_RETURN(long addr, rs.syscall(SYS_mmap, static_cast<long>(placement_hint(before_->maps, layout_.size)),
                                         static_cast<long>(layout_.size),
                                         PROT_READ | PROT_WRITE | PROT_EXEC, MAP_SHARED, memfd, 0));
  // The mapping holds the memfd: its fd has no use left in the target.
  ASSIGN_OR_RETURN(long closed, rs.syscall(SYS_close, memfd));
  if (syscall_failed(addr)) {
    // may_expand_vm() counts the mapping against RLIMIT_AS like any other.
    std::string hint = addr == -ENOMEM ? " (its RLIMIT_AS may leave no room for it)" : "";
    return std::unexpected(Error(fmt::format("pid {}: cannot map the parasite ({} KiB) into the process{}",
                                             process_.pid, layout_.size >> 10, hint),
                                 static_cast<int>(-addr)));
  }
  remote_ = RemotePtr<>(static_cast<uint64_t>(addr));
  if (syscall_failed(closed))
    return std::unexpected(Error(fmt::format("pid {}: close of the parasite's memfd", process_.pid),
                                 static_cast<int>(-closed)));
  TRY(rs.leave());
  ASSIGN_OR_RETURN(local_, Mapping::map(nullptr, layout_.size, PROT_READ | PROT_WRITE, MAP_SHARED,
                                        memfd_.get(), 0));
  std::memcpy(local(0), pblob::kBytes, pblob::kSize);
  log_.debug("pid {}: parasite mapped at {} ({} KiB)", process_.pid, remote_, layout_.size >> 10);
  return {};
}

Result<ThreadSelfState> ParasiteSession::thread_self_state(Tracee& thread) {
  if (remote_.null()) return failf("pid {}: no parasite to run syscalls from", process_.pid);
  RemoteSyscalls rs(thread, remote(pblob::k_parasite_syscall));
  TRY(rs.enter());
  // The scratch area is in the shared memfd: what the kernel writes there we
  // read locally.
  RemotePtr<> scratch = remote(layout_.scratch);
  ThreadSelfState st;
  ASSIGN_OR_RETURN(long r, rs.syscall(SYS_sigaltstack, 0, scratch));
  if (r < 0) return std::unexpected(Error(fmt::format("thread {}: sigaltstack", thread.tid()), -r));
  struct { uint64_t sp; int32_t flags; int32_t pad; uint64_t size; } ss;  // the kernel's stack_t
  std::memcpy(&ss, local(layout_.scratch), sizeof(ss));
  st.altstack_sp = RemotePtr<>(ss.sp);
  st.altstack_flags = static_cast<uint32_t>(ss.flags);
  st.altstack_size = ss.size;
  ASSIGN_OR_RETURN(r, rs.syscall(SYS_prctl, PR_GET_TID_ADDRESS, scratch));
  if (r < 0) return std::unexpected(Error(fmt::format("thread {}: PR_GET_TID_ADDRESS", thread.tid()), -r));
  uint64_t tid_address;
  std::memcpy(&tid_address, local(layout_.scratch), sizeof(tid_address));
  st.clear_child_tid = RemotePtr<pid_t>(tid_address);
  TRY(rs.leave());
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
  if (remote_.null()) return failf("pid {}: the parasite is not mapped", process_.pid);
  if (daemon_) return failf("pid {}: the parasite runs already", process_.pid);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string name = fmt::format("minicriu-parasite-{}-{}-{:x}", ::getpid(), process_.pid,
                                 Clock::now().time_since_epoch().count());
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  ASSIGN_OR_RETURN(UniqueFd listener, listen_where_target_is(process_.pid, addr, len));
  TRY(fault_point("parasite-listen"));

  auto* ctl = reinterpret_cast<ParasiteCtl*>(local(layout_.ctl));
  std::memset(ctl, 0, sizeof(*ctl));
  ctl->magic = MC_PARASITE_CTL_MAGIC;
  ctl->addr_len = len;
  std::memcpy(ctl->sun_path, addr.sun_path, sizeof(ctl->sun_path));
  ctl->args = remote(layout_.args).addr();
  ctl->fault = options_.fault_stall ? MC_PARASITE_FAULT_STALL : options_.fault_splice ? MC_PARASITE_FAULT_SPLICE : 0;
  if (options_.fault_stall) log_.debug("pid {}: fault injected: the parasite hangs at its first page drain", process_.pid);
  if (options_.fault_splice)
    log_.debug("pid {}: fault injected: the parasite fails its second vmsplice into the lanes", process_.pid);

  // From here on, cure() stops the parasite and gives the leader back.
  daemon_.emplace(process_.leader());
  TRY(daemon_->enter());
  arch::Regs regs = daemon_->saved_regs();
  arch::set_call(regs, remote(pblob::k_parasite_entry), remote(layout_.stack_top),
                 remote(layout_.ctl).addr());
  TRY(daemon_->load(regs));
  TRY(process_.leader().resume());

  // The name is abstract: anyone in the target's network namespace may find
  // it (/proc/net/unix) and connect first. Only the target itself is taken
  // (SO_PEERCRED: the pid that connected, as our pid namespace sees it); an
  // impostor is dropped and the wait goes on.
  auto deadline = stall_deadline();
  for (;;) {
    pollfd pfd{listener.get(), POLLIN, 0};
    ASSIGN_OR_RETURN(Wake wake, wait_parasite({&pfd, 1}, deadline, "did not connect"));
    if (wake == Wake::trapped) return std::unexpected(exited_early());
    UniqueFd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) return fail_errno("accept of the parasite connection");
    ucred peer{};
    socklen_t peer_len = sizeof(peer);
    if (::getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) != 0)
      return fail_errno("SO_PEERCRED of the parasite connection");
    if (peer.pid == process_.pid) {
      sock_ = std::move(conn);
      break;
    }
    log_.warn("pid {}: a connection to the parasite's socket from pid {} (uid {}), not the target, was "
              "refused", process_.pid, peer.pid, peer.uid);
  }
  log_.debug("pid {}: parasite running", process_.pid);
  return {};
}

Result<ParasiteSession::Wake> ParasiteSession::wait_parasite(std::span<pollfd> fds, Clock::time_point deadline,
                                                             std::string_view what,
                                                             std::chrono::milliseconds tick) {
  for (;;) {
    // A cancelled dump stops waiting (the cure, which waits too, is not
    // cancelled: it runs under a FaultPause).
    TRY(check_cancelled());
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    int n = ::poll(fds.data(), fds.size(), static_cast<int>(std::clamp(left, 0ms, tick).count()));
    if (n > 0) return Wake::ready;
    if (n < 0 && errno != EINTR) {
      lost_ = true;
      return fail_errno("poll for the parasite");
    }
    auto trapped = process_.leader().poll_trap();
    if (!trapped || *trapped) lost_ = true;
    if (!trapped) return std::unexpected(trapped.error());
    if (*trapped) return Wake::trapped;
    if (finished()) {
      lost_ = true;
      return Wake::trapped;
    }
    if (Clock::now() >= deadline) {
      lost_ = true;
      return failf("pid {}: the parasite {} within {} ms (MINICRIU_PARASITE_TIMEOUT_MS sets this limit)",
                   process_.pid, what, options_.stall_timeout.count());
    }
  }
}

bool ParasiteSession::finished() const {
  if (!local_.get<void>()) return false;
  auto* ctl = reinterpret_cast<const ParasiteCtl*>(local(layout_.ctl));
  return __atomic_load_n(&ctl->exited, __ATOMIC_ACQUIRE) != 0;
}

Error ParasiteSession::exited_early() const {
  // What it said in its control block; else (a control block not ours)
  // parasite_main's return value, in rax at the int3 after its call.
  long rc = 0;
  if (finished()) {
    rc = reinterpret_cast<const ParasiteCtl*>(local(layout_.ctl))->exit_code;
  } else {
    auto regs = process_.leader().get_regs();
    rc = regs ? arch::syscall_result(*regs) : 0;
  }
  return Error(fmt::format("pid {}: the parasite exited early", process_.pid),
               rc < 0 ? static_cast<int>(-rc) : 0);
}

Status ParasiteSession::send(uint32_t cmd, uint64_t arg, int fd) {
  if (lost_) return failf("pid {}: the parasite no longer answers", process_.pid);
  if (cmd != PARASITE_CMD_FINI) TRY(fault_point("parasite-command"));
  ParasiteMsg msg{cmd, 0, arg, 0};
  std::span<const int> fds = fd >= 0 ? std::span<const int>(&fd, 1) : std::span<const int>();
  if (send_with_fds<1>(sock_.get(), &msg, sizeof(msg), fds) != static_cast<ssize_t>(sizeof(msg))) {
    lost_ = true;
    return failf_errno("pid {}: sending parasite command {}", process_.pid, cmd);
  }
  return {};
}

Result<ParasiteMsg> ParasiteSession::receive(std::vector<UniqueFd>* fds) {
  return receive_until(stall_deadline(), fds);
}

Result<ParasiteMsg> ParasiteSession::receive_until(Clock::time_point deadline, std::vector<UniqueFd>* fds) {
  pollfd pfd{sock_.get(), POLLIN, 0};
  ASSIGN_OR_RETURN(Wake wake, wait_parasite({&pfd, 1}, deadline, "did not answer"));
  if (wake == Wake::trapped) return std::unexpected(exited_early());
  ParasiteMsg msg{};
  std::vector<UniqueFd> got;
  bool truncated = false;
  ssize_t n = recv_with_fds<MC_PARASITE_MAX_FDS>(sock_.get(), &msg, sizeof(msg), got, 0, &truncated);
  if (n < 0) return fail_errno("receiving from the parasite");
  if (fds)
    for (auto& f : got) fds->push_back(std::move(f));
  if (n != sizeof(msg)) {
    lost_ = true;
    return failf("pid {}: the parasite closed its connection", process_.pid);
  }
  if (truncated) return fail("fds from the parasite were truncated");
  return msg;
}

Status ParasiteSession::open_page_pipe(size_t n) {
  ASSIGN_OR_RETURN(int refused, offer_page_pipe(n));
  if (refused) return std::unexpected(Error("parasite: set pipe", refused));
  return {};
}

Result<int> ParasiteSession::offer_page_pipe(size_t n) {
  if (n >= MC_PARASITE_MAX_PIPES) return failf("page pipe {} of at most {}", n, MC_PARASITE_MAX_PIPES);
  if (pipes_.size() <= n) pipes_.resize(n + 1);
  if (pipes_[n].rd) return 0;
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return fail_errno("pipe for pages");
  PagePipe pipe{UniqueFd(p[0]), UniqueFd(p[1])};
  // As large as an unprivileged pipe may be (fs.pipe-max-size); fewer wakeups.
  long max = 1 << 20;
  if (auto t = ::fopen("/proc/sys/fs/pipe-max-size", "r")) {
    if (fscanf(t, "%ld", &max) != 1) max = 1 << 20;
    fclose(t);
  }
  ::fcntl(pipe.wr.get(), F_SETPIPE_SZ, static_cast<int>(max));
  TRY(send(PARASITE_CMD_SET_PIPE, n, pipe.wr.get()));
  ASSIGN_OR_RETURN(auto reply, receive());
  // Refused: EINVAL when the fd did not come with the message (the target's
  // fd table at its RLIMIT_NOFILE drops it).
  if (reply.status < 0) return -reply.status;
  pipes_[n] = std::move(pipe);
  return 0;
}

Status ParasiteSession::drain_pages(std::span<const RemoteRange> ranges, int out_fd) {
  if (ranges.size() > kMaxIovs) return fail("too many ranges for one page drain");
  TRY(open_page_pipe());
  uint64_t total = 0;
  auto* iovs = reinterpret_cast<ParasiteIovec*>(local(layout_.args));
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
  auto deadline = stall_deadline();
  while (moved < total) {
    pollfd pfds[2] = {{pipes_[0].rd.get(), POLLIN, 0}, {sock_.get(), POLLIN, 0}};
    ASSIGN_OR_RETURN(Wake wake, wait_parasite(pfds, deadline, "moved no page"));
    if (wake == Wake::trapped) return std::unexpected(exited_early());
    if (pfds[0].revents & POLLIN) {
      ssize_t s = ::splice(pipes_[0].rd.get(), nullptr, sink_error ? devnull.get() : out_fd, nullptr,
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
        deadline = stall_deadline();
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

namespace {

// The workers of drain_pages_to_lanes: each empties its lane's pipe into the
// lane's sink until the lane's bytes are in, the parasite is done and the
// pipe empty, or the drain is called off.
struct LaneDrain {
  std::span<const ParasiteSession::LaneSink> sinks;
  std::vector<int> pipes;   // read ends, by lane
  std::vector<size_t> lanes;  // the lanes with bytes, one per worker
  UniqueFd wake;              // eventfd: written when done or cancel is set
  UniqueFd progress;          // eventfd: written by a worker that moved bytes
  std::atomic<size_t> next{0};
  // discard: the rest goes into /dev/null (the drain failed; the parasite is
  // let finish its command).
  std::atomic<bool> done{false}, cancel{false}, discard{false};
  struct Lane {
    uint64_t moved = 0;
    std::optional<Error> error;  // the sink's: the rest went to /dev/null
  };
  std::vector<Lane> state;  // by lane; each written by its worker only

  void run() {
    size_t i = next.fetch_add(1);
    if (i >= lanes.size()) return;
    size_t lane = lanes[i];
    const auto& sink = sinks[lane];
    Lane& st = state[lane];
    int out = sink.fd;
    loff_t off = static_cast<loff_t>(sink.offset);
    UniqueFd devnull;
    // From now on into nothing (no offsets there); false: /dev/null cannot be opened.
    auto into_nothing = [&] {
      devnull.reset(::open("/dev/null", O_WRONLY | O_CLOEXEC));
      out = devnull.get();
      return static_cast<bool>(devnull);
    };
    const uint64_t one = 1;
    while (st.moved < sink.bytes && !cancel.load(std::memory_order_acquire)) {
      if (!devnull && discard.load(std::memory_order_acquire) && !into_nothing()) break;
      ssize_t s = ::splice(pipes[lane], nullptr, out, devnull ? nullptr : &off, sink.bytes - st.moved,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (s > 0) {
        // The control thread hears of progress every 16 MiB (a wakeup per
        // splice would take its CPU from the workers).
        if ((st.moved >> 24) != ((st.moved + static_cast<uint64_t>(s)) >> 24))
          (void)!::write(progress.get(), &one, sizeof(one));
        st.moved += static_cast<uint64_t>(s);
        continue;
      }
      if (s < 0 && errno == EINTR) continue;
      if (s < 0 && errno == EAGAIN) {
        // Empty: once the parasite is done, nothing more comes.
        if (done.load(std::memory_order_acquire)) break;
        pollfd p[2] = {{pipes[lane], POLLIN, 0}, {wake.get(), POLLIN, 0}};
        ::poll(p, 2, 100);
        continue;
      }
      // The sink took no more (ENOSPC, EIO): the pipe is still emptied, into
      // nothing, so that the parasite never waits on it.
      if (!st.error) st.error = Error("splice of pages into the image", s < 0 ? errno : EIO);
      if (devnull || !into_nothing()) break;
    }
  }
};

}  // namespace

Result<int> ParasiteSession::drain_pages_to_lanes(std::span<const LaneRange> ranges, std::span<const LaneSink> sinks) {
  if (ranges.size() > kMaxLaneIovs) return fail("too many ranges for one page drain");
  if (sinks.size() > kMaxLanes) return failf("{} page lanes, at most {}", sinks.size(), kMaxLanes);
  std::vector<uint64_t> want(sinks.size());
  auto* iovs = reinterpret_cast<ParasiteLaneIovec*>(local(layout_.args));
  for (size_t i = 0; i < ranges.size(); i++) {
    const auto& r = ranges[i];
    if (r.lane >= sinks.size() || r.range.size > UINT32_MAX) return fail("a page range of no lane, or too long");
    iovs[i] = ParasiteLaneIovec{r.range.start.addr(), static_cast<uint32_t>(r.range.size), r.lane};
    want[r.lane] += r.range.size;
  }
  LaneDrain drain;
  drain.sinks = sinks;
  drain.pipes.assign(sinks.size(), -1);
  drain.state.resize(sinks.size());
  for (size_t l = 0; l < sinks.size(); l++) {
    if (want[l] != sinks[l].bytes) return failf("page lane {}: {} bytes of ranges for a sink of {}", l, want[l], sinks[l].bytes);
    if (!want[l]) continue;
    ASSIGN_OR_RETURN(int refused, offer_page_pipe(l));
    if (refused) {
      log_.debug("pid {}: the parasite cannot take page pipe {} ({}; its fd table may be at its RLIMIT_NOFILE)",
                 process_.pid, l, std::strerror(refused));
      return refused;
    }
    drain.pipes[l] = pipes_[l].rd.get();
    drain.lanes.push_back(l);
  }
  if (drain.lanes.empty()) return 0;
  drain.wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  drain.progress.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!drain.wake || !drain.progress) return fail_errno("eventfd for the page lanes");

  std::vector<std::thread> workers;
  // Every way out joins the workers first (they use drain).
  struct Join {
    LaneDrain& drain;
    std::vector<std::thread>& workers;
    void stop(bool cancel) {
      (cancel ? drain.cancel : drain.done).store(true, std::memory_order_release);
      const uint64_t one = 1;
      (void)!::write(drain.wake.get(), &one, sizeof(one));
      for (auto& t : workers) t.join();
      workers.clear();
    }
    ~Join() {
      if (!workers.empty()) stop(true);
    }
  } join{drain, workers};
  start_workers(workers, static_cast<unsigned>(drain.lanes.size()), [&drain] { drain.run(); });
  // A lane without its worker would stop the parasite for good: nothing sent.
  if (workers.size() < drain.lanes.size()) return EAGAIN;

  TRY(send(PARASITE_CMD_DUMP_PAGES_LANES, ranges.size()));
  // The reply comes when every range is in its pipe, or early with an error.
  // Meanwhile the workers move bytes: each move puts the stall deadline off.
  auto deadline = stall_deadline();
  for (;;) {
    pollfd pfds[2] = {{sock_.get(), POLLIN, 0}, {drain.progress.get(), POLLIN, 0}};
    auto wake = wait_parasite(pfds, deadline, "moved no page");
    if (!wake) {
      // Cancelled (SIGTERM) with the parasite at work and answering: its
      // pipes are emptied into nothing until it answers, so that it is at
      // its commands again for the cure's FINI, instead of blocked in
      // vmsplice until the cure gives up waiting for it.
      if (!lost_) {
        FaultPause not_cancelled_again;
        drain.discard.store(true, std::memory_order_release);
        (void)receive_until(Clock::now() + kFiniTimeout, nullptr);
      }
      return std::unexpected(wake.error());
    }
    if (*wake == Wake::trapped) return std::unexpected(exited_early());
    if (pfds[1].revents & POLLIN) {
      uint64_t n;
      (void)!::read(drain.progress.get(), &n, sizeof(n));
      deadline = stall_deadline();
    }
    if (pfds[0].revents) break;
  }
  ASSIGN_OR_RETURN(auto reply, receive());
  // Every byte the parasite put in is in the pipes: the workers empty them.
  join.stop(false);
  for (size_t l : drain.lanes)
    if (drain.state[l].error) return std::unexpected(*drain.state[l].error);
  if (reply.status < 0) return -reply.status;
  for (size_t l : drain.lanes)
    if (drain.state[l].moved != sinks[l].bytes)
      return failf("page lane {}: the drain moved {} of {} bytes", l, drain.state[l].moved, sinks[l].bytes);
  return 0;
}

Result<std::vector<UniqueFd>> ParasiteSession::fetch_fds(std::span<const int32_t> fds) {
  std::vector<UniqueFd> out;
  if (fds.empty()) return out;
  if (fds.size_bytes() > MC_PARASITE_ARGS_SIZE) return fail("too many fds to fetch at once");
  std::memcpy(local(layout_.args), fds.data(), fds.size_bytes());
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

static_assert(MC_USERFAULTFD_IOC_NEW == USERFAULTFD_IOC_NEW && MC_UFFDIO_API == UFFDIO_API &&
              MC_UFFDIO_REGISTER == UFFDIO_REGISTER && MC_UFFD_API == UFFD_API &&
              MC_UFFDIO_REGISTER_MODE_WP == UFFDIO_REGISTER_MODE_WP && MC_UFFDIO_WRITEPROTECT == UFFDIO_WRITEPROTECT);

Result<ParasiteSession::Uffd> ParasiteSession::make_uffd(int dev_fd, std::span<const RemoteRange> ranges,
                                                         UffdMode mode) {
  if (ranges.size() * (sizeof(ParasiteIovec) + sizeof(int32_t)) > MC_PARASITE_ARGS_SIZE)
    return fail("too many ranges to register at once");
  auto* iovs = reinterpret_cast<ParasiteIovec*>(local(layout_.args));
  for (size_t i = 0; i < ranges.size(); i++) iovs[i] = ParasiteIovec{ranges[i].start.addr(), ranges[i].size};
  uint32_t cmd = mode == UffdMode::tracking ? PARASITE_CMD_UFFD
                 : mode == UffdMode::sync   ? PARASITE_CMD_UFFD_SYNC
                                            : PARASITE_CMD_UFFD_PREARM;
  TRY(send(cmd, ranges.size(), dev_fd));
  std::vector<UniqueFd> fds;
  ASSIGN_OR_RETURN(auto reply, receive(&fds));
  if (reply.cmd != cmd) return fail("the parasite answered another command than UFFD");
  if (reply.status < 0) return std::unexpected(Error("parasite: making a userfaultfd", -reply.status));
  if (fds.size() != 1) return fail("the parasite made a userfaultfd but did not send it");
  Uffd out;
  out.fd = std::move(fds[0]);
  const auto* status = reinterpret_cast<const int32_t*>(iovs + ranges.size());
  for (size_t i = 0; i < ranges.size(); i++) out.status.push_back(status[i] < 0 ? -status[i] : 0);
  return out;
}

Result<ParasiteMisc> ParasiteSession::get_misc() {
  TRY(send(PARASITE_CMD_GET_MISC, 0));
  ASSIGN_OR_RETURN(auto reply, receive());
  if (reply.status < 0) return std::unexpected(Error("parasite: misc state", -reply.status));
  ParasiteMisc misc;
  std::memcpy(&misc, local(layout_.args), sizeof(misc));
  return misc;
}

Result<std::vector<ParasiteTimer>> ParasiteSession::get_timers(std::span<const int32_t> ids) {
  std::vector<ParasiteTimer> timers(ids.size());
  if (ids.empty()) return timers;
  if (timers.size() * sizeof(ParasiteTimer) > MC_PARASITE_ARGS_SIZE) return fail("too many POSIX timers");
  for (size_t i = 0; i < ids.size(); i++) timers[i].id = ids[i];
  std::memcpy(local(layout_.args), timers.data(), timers.size() * sizeof(ParasiteTimer));
  TRY(send(PARASITE_CMD_GET_TIMERS, ids.size()));
  ASSIGN_OR_RETURN(auto reply, receive());
  if (reply.status < 0) return std::unexpected(Error("parasite: POSIX timers", -reply.status));
  std::memcpy(timers.data(), local(layout_.args), timers.size() * sizeof(ParasiteTimer));
  return timers;
}

Status ParasiteSession::stop_daemon() {
  Tracee& leader = daemon_->thread();
  if (!lost_ && sock_ && send(PARASITE_CMD_FINI, 0)) {
    // Replies to a failed command may still be queued before FINI's own.
    auto deadline = Clock::now() + kFiniTimeout;
    for (int i = 0; i < 4; i++) {
      auto reply = receive_until(deadline, nullptr);
      if (!reply || reply->cmd == PARASITE_CMD_FINI) break;
    }
    // It closes its fds, says it is done (ctl->exited) and waits in pause().
    if (!lost_) (void)wait_parasite({}, Clock::now() + kFiniTimeout, "did not finish", 1ms);
  }
  // Stopped where it waits (PTRACE_EVENT_STOP: a stop that a thread whose
  // tracer dies leaves harmlessly); a parasite that hangs, or one that did
  // not finish in time, is stopped where it is.
  leader.interrupt_and_wait();
  return daemon_->give_back();
}

Status ParasiteSession::clean_target() {
  Tracee& leader = process_.leader();
  ASSIGN_OR_RETURN(auto now, TargetSnapshot::take(process_.pid, leader.tid()));
  Leftovers left = find_leftovers(*before_, now);
  bool listed = std::any_of(left.mappings.begin(), left.mappings.end(),
                            [&](const RemoteRange& m) { return m.start == remote_; });
  // Ours, though /proc did not name it as expected: unmapped all the same.
  if (!remote_.null() && !listed) left.mappings.push_back({remote_, layout_.size});
  if (left.empty()) return {};
  log_.debug("pid {}: cure: taking away {}", process_.pid, left.describe());

  TRY(take_leftovers_away(leader, memory_, site_, left));
  remote_ = {};

  // What the target holds now must be what it held before we came.
  ASSIGN_OR_RETURN(auto after, TargetSnapshot::take(process_.pid, leader.tid()));
  Leftovers still = find_leftovers(*before_, after);
  if (!still.empty()) return failf("{} still in the process", still.describe());
  return {};
}

Status ParasiteSession::cure() {
  FaultPause no_second_fault;
  Status result;
  auto note = [&](Status st) {
    if (!st && result) result = std::move(st);
  };
  if (daemon_) {
    note(stop_daemon());
    daemon_.reset();
  }
  // Only with the parasite stopped: closing our ends while it could still
  // write into them would raise SIGPIPE in the target.
  sock_.reset();
  pipes_.clear();
  if (before_) {
    Status cleaned = with_context(clean_target(), fmt::format("pid {}: cure", process_.pid));
    if (cleaned) cleaned = journal_note(fmt::format("parasite-gone {}", process_.pid));
    note(std::move(cleaned));
    before_.reset();
  }
  remote_ = {};
  local_.reset();
  memfd_.reset();
  return result;
}

}  // namespace minicriu
