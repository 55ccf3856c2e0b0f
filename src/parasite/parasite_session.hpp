// One parasite in one frozen process (as compel's prepare/infect/rpc/cure):
// maps the blob into the target through remote syscalls, runs it on the leader
// thread, serves page draining, fd passing and state queries, and cures the
// target on every path. The cure takes away every fd and mapping the dump
// added to the target, whether the parasite finished, never started, or hangs
// (TargetSnapshot), and puts back registers, signal mask and code bytes.
#pragma once

#include <poll.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/mapping.hpp"
#include "base/remote_ptr.hpp"
#include "base/unique_fd.hpp"
#include "parasite/parasite_protocol.h"
#include "parasite/target_snapshot.hpp"
#include "ptrace/borrowed_thread.hpp"
#include "ptrace/task_tree.hpp"
#include "ptrace/tracee_memory.hpp"

namespace minicriu {

// Per-thread state only the thread itself can tell.
struct ThreadSelfState {
  RemotePtr<> altstack_sp;
  uint32_t altstack_flags = 0;
  uint64_t altstack_size = 0;
  RemotePtr<pid_t> clear_child_tid;
};

// How a session waits for its parasite, and the faults a test may inject.
struct ParasiteOptions {
  // How long the parasite may make no progress (not connect, not answer, move
  // no page) before the dump gives up on it and cures the target.
  static constexpr std::chrono::milliseconds kDefaultStallTimeout{30000};
  std::chrono::milliseconds stall_timeout = kDefaultStallTimeout;
  // Test only (MC_PARASITE_FAULT_STALL): the parasite hangs at its first
  // command, as one stuck in the kernel would.
  bool fault_stall = false;
  // Test only (MC_PARASITE_FAULT_SPLICE): the parasite's second drain into
  // the lanes stops halfway with EFAULT.
  bool fault_splice = false;

  // The one place that reads the environment:
  //   MINICRIU_PARASITE_TIMEOUT_MS=N   stall_timeout of N ms (N > 0)
  //   MINICRIU_FAULT=parasite-stall    fault_stall (for the e2e tests)
  //   MINICRIU_FAULT=parasite-splice   fault_splice
  static ParasiteOptions from_environment();
};

class ParasiteSession {
 public:
  // site: an executable address of the target where "syscall; int3" may be
  // written for a moment (its bytes are put back).
  ParasiteSession(FrozenProcess& process, const TraceeMemory& memory, RemotePtr<> site,
                  const Logger& log, ParasiteOptions options = ParasiteOptions::from_environment());
  ParasiteSession(const ParasiteSession&) = delete;
  ParasiteSession& operator=(const ParasiteSession&) = delete;
  static void* operator new(size_t) = delete;
  ~ParasiteSession();

  // Notes what the target holds, then maps the blob (a memfd shared with us)
  // into it.
  [[nodiscard]] Status infect();
  // Where the parasite's memory is mapped in the target (null before infect).
  RemotePtr<> area() const { return remote_; }
  // Runs remote syscalls in one thread (blob mapped, daemon not yet started).
  [[nodiscard]] Result<ThreadSelfState> thread_self_state(Tracee& thread);
  // Starts the blob on the leader and waits for it to connect.
  [[nodiscard]] Status start();

  // vmsplice the ranges into our pipe, splicing them into out_fd as they come.
  [[nodiscard]] Status drain_pages(std::span<const RemoteRange> ranges, int out_fd);
  // A batch of pages for a page image of several files (lanes): each range
  // vmsplice'd by the parasite into its lane's pipe, in order, while a worker
  // of ours per lane splices that pipe into the lane's sink. One copy of each
  // page (the splice into the file), a share per worker; the pages stay
  // shared where the target shares them (vmsplice takes references, not the
  // pins of process_vm_readv, which copy a page shared copy-on-write).
  struct LaneRange {
    RemoteRange range;  // at most 4 GiB
    uint32_t lane = 0;
  };
  // Where a lane's share of the batch goes: its bytes, in the ranges' order,
  // from offset on in fd.
  struct LaneSink {
    int fd = -1;
    uint64_t offset = 0;
    uint64_t bytes = 0;  // the sum of the lane's ranges
  };
  // 0: every range in its sink. A positive errno: the parasite could not
  // vmsplice a range (memory get_user_pages refuses) or take a lane's pipe
  // (its fd table full), or no worker could be started; the pipes are empty
  // again, the sinks hold a part of the batch: the caller writes it another
  // way, at the same offsets.
  [[nodiscard]] Result<int> drain_pages_to_lanes(std::span<const LaneRange> ranges, std::span<const LaneSink> sinks);
  // The target's fds, as fds of ours (same open file descriptions).
  [[nodiscard]] Result<std::vector<UniqueFd>> fetch_fds(std::span<const int32_t> fds);
  [[nodiscard]] Result<ParasiteMisc> get_misc();
  // A userfaultfd of the target's mm in asynchronous write-protect mode (made
  // in the target from dev_fd, an fd of /dev/userfaultfd), registered over
  // each range it can be; status[i]: 0 or the errno of range i.
  struct Uffd {
    UniqueFd fd;
    std::vector<int> status;
  };
  // sync: synchronous write-protect mode instead (dump --background);
  // prearm: synchronous, with remove events, registered for missing pages
  // too (a background dump armed before its freeze).
  enum class UffdMode { tracking, sync, prearm };
  [[nodiscard]] Result<Uffd> make_uffd(int dev_fd, std::span<const RemoteRange> ranges,
                                       UffdMode mode = UffdMode::tracking);
  // Remaining time, interval and overrun of the POSIX timers with these ids.
  [[nodiscard]] Result<std::vector<ParasiteTimer>> get_timers(std::span<const int32_t> ids);

  // Stops the blob, closes every fd and unmaps every mapping the dump added
  // to the target, puts registers, signal mask and code back. Idempotent.
  [[nodiscard]] Status cure();

  // The largest number of ranges drain_pages (drain_pages_to_lanes) takes at once.
  static constexpr size_t kMaxIovs = MC_PARASITE_ARGS_SIZE / sizeof(ParasiteIovec);
  static constexpr size_t kMaxLaneIovs = MC_PARASITE_ARGS_SIZE / sizeof(ParasiteLaneIovec);
  static constexpr size_t kMaxLanes = MC_PARASITE_MAX_PIPES;

 private:
  using Clock = std::chrono::steady_clock;
  enum class Wake { ready, trapped };

  [[nodiscard]] Status send(uint32_t cmd, uint64_t arg, int fd = -1);
  [[nodiscard]] Result<ParasiteMsg> receive(std::vector<UniqueFd>* fds = nullptr);
  [[nodiscard]] Result<ParasiteMsg> receive_until(Clock::time_point deadline, std::vector<UniqueFd>* fds);
  [[nodiscard]] Result<Wake> wait_parasite(std::span<pollfd> fds, Clock::time_point deadline,
                                           std::string_view what,
                                           std::chrono::milliseconds tick = std::chrono::milliseconds(100));
  Error exited_early() const;
  // The parasite said it is done (ParasiteCtl::exited): it waits for our
  // PTRACE_INTERRUPT, its fds closed.
  bool finished() const;
  [[nodiscard]] Status stop_daemon();
  [[nodiscard]] Status clean_target();
  // Page pipe n (0: drain_pages'; 0.. the lanes'), made and given to the
  // parasite on first use.
  [[nodiscard]] Status open_page_pipe(size_t n = 0);
  // The same; a refusal of the parasite's is its errno (0: taken).
  [[nodiscard]] Result<int> offer_page_pipe(size_t n);
  Clock::time_point stall_deadline() const { return Clock::now() + options_.stall_timeout; }
  char* local(size_t offset) const { return local_.get<char>() + offset; }
  RemotePtr<> remote(size_t offset) const { return remote_.byte_offset(static_cast<int64_t>(offset)); }

  // [blob][ParasiteCtl + scratch | args][stack]: offsets in the shared area.
  struct Layout {
    size_t ctl = 0, scratch = 0, args = 0, stack_top = 0, size = 0;
  };
  static Layout layout();

  FrozenProcess& process_;
  const TraceeMemory& memory_;
  RemotePtr<> site_;
  const Logger& log_;
  ParasiteOptions options_;
  const Layout layout_;

  std::optional<TargetSnapshot> before_;  // taken by infect(): what the cure compares with
  UniqueFd memfd_;
  Mapping local_;
  RemotePtr<> remote_;
  // The leader while the parasite runs on it (start() to cure()).
  std::optional<BorrowedThread> daemon_;
  // The parasite no longer serves commands (it timed out, returned or
  // crashed): the cure stops it where it is instead of asking it to finish.
  bool lost_ = false;
  UniqueFd sock_;
  struct PagePipe {
    UniqueFd rd, wr;  // wr also the parasite's (SET_PIPE)
  };
  std::vector<PagePipe> pipes_;  // by number; rd empty: not made
};

}  // namespace minicriu
