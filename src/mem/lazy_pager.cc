#include "mem/lazy_pager.hpp"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <sstream>

#include "base/fault.hpp"
#include "base/fd_passing.hpp"
#include "base/page.hpp"
#include "proc/proc_parse.hpp"

namespace minicriu {

namespace {

constexpr uint64_t kFaultChunk = 64 * kPageSize;   // a fault brings its neighbours too
constexpr uint64_t kPrefetchChunk = 2ull << 20;    // then the poll again: faults go first
constexpr uint64_t kFeatures = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE |
                               UFFD_FEATURE_EVENT_UNMAP;

struct Missing {
  uint64_t end;
  uint64_t src;  // the dumped address of start
};
// The pages of a process still to come: start -> {end, where in the images}.
using MissingMap = std::map<uint64_t, Missing>;

// [s, e) is no longer missing (filled, removed or unmapped).
void erase_range(MissingMap& m, uint64_t s, uint64_t e) {
  auto it = m.upper_bound(s);
  if (it != m.begin()) --it;
  while (it != m.end() && it->first < e) {
    uint64_t a = it->first;
    Missing x = it->second;
    if (x.end <= s) {
      ++it;
      continue;
    }
    it = m.erase(it);
    if (a < s) m.emplace(a, Missing{s, x.src});
    if (x.end > e) it = m.emplace(e, Missing{x.end, x.src + (e - a)}).first;
  }
}

// The entry holding addr, or end().
MissingMap::iterator containing(MissingMap& m, uint64_t addr) {
  auto it = m.upper_bound(addr);
  if (it == m.begin()) return m.end();
  --it;
  return addr < it->second.end ? it : m.end();
}

enum class Copied { ok, again, gone, no_vma };

// A mapping of a lazy shared memory object in a process: start -> this.
struct ShmemMapping {
  uint64_t end;
  uint64_t pgoff;  // the object offset at start
  uint32_t id;
};
using ShmemMap = std::map<uint64_t, ShmemMapping>;

// [s, e) no longer maps what it mapped (unmapped, or moved away).
void erase_mappings(ShmemMap& m, uint64_t s, uint64_t e) {
  auto it = m.upper_bound(s);
  if (it != m.begin()) --it;
  while (it != m.end() && it->first < e) {
    uint64_t a = it->first;
    ShmemMapping x = it->second;
    if (x.end <= s) {
      ++it;
      continue;
    }
    it = m.erase(it);
    if (a < s) m.emplace(a, ShmemMapping{s, x.pgoff, x.id});
    if (x.end > e) it = m.emplace(e, ShmemMapping{x.end, x.pgoff + (e - a), x.id}).first;
  }
}

ShmemMap::iterator mapping_at(ShmemMap& m, uint64_t addr) {
  auto it = m.upper_bound(addr);
  if (it == m.begin()) return m.end();
  --it;
  return addr < it->second.end ? it : m.end();
}

}  // namespace

struct LazyPager::Mm {
  UniqueFd uffd;
  pid_t pid = 0;        // the dumped pid: its pages in the source
  pid_t seen_pid = 0;   // 0 for a fork's child (its pid is not known)
  MissingMap missing;
  MissingMap not_in_fork;  // ranges a fork's child does not get the pages of (src unused)
  ShmemMap shmem;          // its mappings of lazy shared memory objects
  uint64_t cursor = 0;  // the prefetch goes on from here
  bool gone = false;
};

// A lazy shared memory object: its pages still to come, by offset (src: the
// offset of their bytes in its data image).
struct LazyPager::Object {
  uint32_t id = 0;
  std::string path;
  UniqueFd data;
  MissingMap missing;
  uint64_t cursor = 0;
};

Result<UniqueFd> make_task_uffd(int pager_socket, pid_t pid) {
  UniqueFd uffd(static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)));
  if (!uffd) return fail_errno("userfaultfd (lazy restore needs CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1)");
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = kFeatures;
  if (::ioctl(uffd.get(), UFFDIO_API, &api) != 0)
    return fail_errno("UFFDIO_API with the fork, remap, remove and unmap events");
  int32_t who = pid;
  int fd = uffd.get();
  ssize_t n = send_with_fds<1>(pager_socket, &who, sizeof(who), std::span<const int>(&fd, 1));
  if (n != sizeof(who)) return fail_errno("handing the userfaultfd to the lazy pager");
  return uffd;
}

LazyPager::LazyPager(std::unique_ptr<PageSource> source, std::map<pid_t, LazyProcess> lazy, std::vector<pid_t> tree,
                     const Logger& log)
    : source_(std::move(source)), lazy_(std::move(lazy)), tree_(std::move(tree)), log_(log),
      buf_(std::max(kFaultChunk, kPrefetchChunk)) {}

Result<std::unique_ptr<LazyPager>> LazyPager::start(std::unique_ptr<PageSource> source,
                                                    std::map<pid_t, LazyProcess> lazy, const LazyShmemPlan& shmem,
                                                    std::vector<pid_t> tree, int fd_floor, const Logger& log) {
  std::unique_ptr<LazyPager> p(new LazyPager(std::move(source), std::move(lazy), std::move(tree), log));
  // Each lazy object's pages still to come: what its lazy mappings cover.
  for (auto& [id, o] : shmem) {
    auto obj = std::make_unique<Object>();
    obj->id = id;
    obj->path = o.data;
    obj->data.reset(::open(o.data.c_str(), O_RDONLY | O_CLOEXEC));
    if (!obj->data) return failf_errno("lazy restore: shared memory object {}: cannot open {}", id, o.data);
    for (auto& e : o.extents)
      for (auto& [ms, me] : o.mapped) {
        uint64_t a = std::max(ms, e.offset), b = std::min(me, e.offset + e.length);
        if (a < b) obj->missing.emplace(a, Missing{b, e.data_offset + (a - e.offset)});
      }
    if (!obj->missing.empty()) p->objects_.emplace(id, std::move(obj));
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return fail_errno("socketpair for the lazy pager");
  p->pager_end_.reset(sv[0]);
  p->task_end_ = move_fd_above(UniqueFd(sv[1]), fd_floor);
  p->wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!p->wake_) return fail_errno("eventfd for the lazy pager");
  // The runs of every lazy process are asked for now: a source that cannot
  // give them fails the restore before anything runs.
  for (auto& [pid, ranges] : p->lazy_) TRY(p->source_->runs(pid));
  p->thread_ = std::thread([pp = p.get()] { pp->run(); });
  log.info("lazy restore: pages come from {}", p->source_->describe());
  return p;
}

LazyPager::~LazyPager() {
  if (thread_.joinable()) {
    stop();
    thread_.join();
  }
}

void LazyPager::stop() {
  stop_ = true;
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof(one));
}

void LazyPager::prefetch() {
  prefetch_ = true;
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof(one));
}

Status LazyPager::take_uffd() {
  int32_t pid = 0;
  std::vector<UniqueFd> got;
  ssize_t n = recv_with_fds<1>(pager_end_.get(), &pid, sizeof(pid), got, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return {};
  if (n <= 0) {  // every task's copy of the socket is closed
    pager_end_.reset();
    return {};
  }
  if (got.size() != 1) return failf("pid {}: its userfaultfd did not come", pid);
  auto mm = std::make_unique<Mm>();
  mm->uffd = std::move(got[0]);
  mm->pid = mm->seen_pid = pid;
  const LazyProcess& lp = lazy_[pid];
  if (!lp.anon.empty()) {
    ASSIGN_OR_RETURN(auto runs, source_->runs(pid));
    // What the images hold, within the VMAs left lazy.
    for (auto& [s, e] : lp.anon) {
      for (auto& [rs, re] : runs) {
        uint64_t a = std::max(s, rs), b = std::min(e, re);
        if (a < b) mm->missing.emplace(a, Missing{b, a});
      }
    }
  }
  for (auto& [s, e] : lp.not_in_fork) mm->not_in_fork.emplace(s, Missing{e, s});
  for (auto& v : lp.shmem)
    if (objects_.count(v.id)) mm->shmem.emplace(v.start, ShmemMapping{v.end, v.pgoff, v.id});
  if (!mm->missing.empty()) mm->cursor = mm->missing.begin()->first;
  log_.debug("lazy restore: pid {}: {} range(s) to come, {} mapping(s) of shared memory", pid, mm->missing.size(),
             mm->shmem.size());
  mms_.push_back(std::move(mm));
  return {};
}

// Copies len bytes of buf_ to dst in mm's process. A page that is there
// already (a fault raced with the prefetch, another thread's fault) is left.
static Copied copy_in(int uffd, uint64_t dst, const std::byte* src, uint64_t len, uint64_t& done) {
  done = 0;
  while (done < len) {
    uffdio_copy c{};
    c.dst = dst + done;
    c.src = reinterpret_cast<uint64_t>(src + done);
    c.len = len - done;
    if (::ioctl(uffd, UFFDIO_COPY, &c) == 0) {
      done = len;
      break;
    }
    int err = errno;
    if (c.copy > 0) {
      done += static_cast<uint64_t>(c.copy);
      continue;
    }
    if (c.copy < 0) err = static_cast<int>(-c.copy);
    if (err == EEXIST) {
      done += kPageSize;
      continue;
    }
    if (err == EAGAIN || err == EINTR) return Copied::again;
    if (err == ESRCH) return Copied::gone;
    return Copied::no_vma;
  }
  return Copied::ok;
}

Result<int> LazyPager::fill(Mm& mm, uint64_t src, uint64_t at, uint64_t len, uint64_t& done) {
  TRY(fault_point("lazy/read"));
  TRY(source_->read(mm.pid, src, std::span(buf_.data(), len)));
  Copied r = copy_in(mm.uffd.get(), at, buf_.data(), len, done);
  if (done) erase_range(mm.missing, at, at + done);
  stats_.bytes_copied += done;
  mm.cursor = at + done;
  if (r == Copied::gone) mm.gone = true;
  return static_cast<int>(r);
}

Status LazyPager::serve(Mm& mm, uint64_t addr) {
  addr = page_down(addr);
  stats_.faults++;
  if (mapping_at(mm.shmem, addr) != mm.shmem.end()) return serve_shmem(mm, addr);
  auto it = containing(mm.missing, addr);
  if (it == mm.missing.end()) {
    // Nothing in the images (or removed, or filled by a racing copy).
    stats_.zero_faults++;
    uffdio_zeropage z{};
    z.range.start = addr;
    z.range.len = kPageSize;
    if (::ioctl(mm.uffd.get(), UFFDIO_ZEROPAGE, &z) != 0) {
      if (errno == ESRCH) {
        mm.gone = true;
        return {};
      }
      uffdio_range r{addr, kPageSize};
      (void)::ioctl(mm.uffd.get(), UFFDIO_WAKE, &r);  // EEXIST, EAGAIN: it faults again if it must
    }
    return {};
  }
  uint64_t len = std::min(it->second.end - addr, kFaultChunk);
  uint64_t done = 0;
  ASSIGN_OR_RETURN(int how, fill(mm, it->second.src + (addr - it->first), addr, len, done));
  auto r = static_cast<Copied>(how);
  if (r == Copied::again || (r == Copied::no_vma && !done)) {
    uffdio_range w{addr, kPageSize};
    (void)::ioctl(mm.uffd.get(), UFFDIO_WAKE, &w);
    if (r == Copied::no_vma) erase_range(mm.missing, addr, addr + len);
  }
  return {};
}

Result<int> LazyPager::fill_object(Mm& mm, Object& o, uint64_t src, uint64_t off, uint64_t at, uint64_t len,
                                   uint64_t& done) {
  TRY(fault_point("lazy/read"));
  for (uint64_t got = 0; got < len;) {
    ssize_t n = ::pread(o.data.get(), buf_.data() + got, len - got, static_cast<off_t>(src + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return failf_errno("shared memory object {}: cannot read its page at offset {:#x} from {}", o.id, off + got,
                         o.path);
    if (n == 0)
      return failf("shared memory object {}: its page at offset {:#x} is missing: {} ends at offset {}", o.id,
                   off + got, o.path, src + got);
    got += static_cast<uint64_t>(n);
  }
  Copied r = copy_in(mm.uffd.get(), at, buf_.data(), len, done);
  // A page there already (EEXIST: another process brought it in) counts as
  // done: it is the object's, and stays.
  if (done) erase_range(o.missing, off, off + done);
  stats_.bytes_copied += done;
  stats_.shmem_bytes += done;
  o.cursor = off + done;
  if (r == Copied::gone) mm.gone = true;
  // Not registered there (any more): that mapping cannot carry the object.
  if (r == Copied::no_vma) erase_mappings(mm.shmem, at + done, at + len);
  return static_cast<int>(r);
}

Status LazyPager::serve_shmem(Mm& mm, uint64_t addr) {
  stats_.shmem_faults++;
  auto m = mapping_at(mm.shmem, addr);
  const ShmemMapping map = m->second;
  uint64_t off = map.pgoff + (addr - m->first);
  auto o = objects_.find(map.id);
  auto it = o == objects_.end() ? MissingMap::iterator{} : containing(o->second->missing, off);
  if (o == objects_.end() || it == o->second->missing.end()) {
    // A hole of the object, or a page already in (another process's fault,
    // the prefetch): a zero page for the hole; EEXIST for the other.
    uffdio_zeropage z{};
    z.range.start = addr;
    z.range.len = kPageSize;
    if (::ioctl(mm.uffd.get(), UFFDIO_ZEROPAGE, &z) == 0) {
      stats_.zero_faults++;
      return {};
    }
    if (errno == ESRCH) {
      mm.gone = true;
      return {};
    }
  } else {
    Object& obj = *o->second;
    uint64_t len = std::min({it->second.end - off, kFaultChunk, map.end - addr});
    uint64_t done = 0;
    ASSIGN_OR_RETURN(int how, fill_object(mm, obj, it->second.src + (off - it->first), off, addr, len, done));
    if (static_cast<Copied>(how) == Copied::gone) return {};
  }
  // Whatever happened, the faulting thread is woken: a copy wakes only the
  // pages it copied, not one that another process had brought in.
  uffdio_range w{addr, kPageSize};
  (void)::ioctl(mm.uffd.get(), UFFDIO_WAKE, &w);
  return {};
}

Status LazyPager::prefetch_object(Object& o) {
  if (o.missing.empty()) return {};
  auto it = containing(o.missing, o.cursor);
  uint64_t off = o.cursor;
  if (it == o.missing.end()) {
    it = o.missing.lower_bound(o.cursor);
    if (it == o.missing.end()) it = o.missing.begin();
    off = it->first;
  }
  // A process that maps off; else the first offset of this piece any maps.
  uint64_t piece_end = it->second.end;
  Mm* carrier = nullptr;
  uint64_t at = 0, room = 0, next_mapped = piece_end;
  for (auto& mm : mms_) {
    if (mm->gone) continue;
    for (auto& [start, m] : mm->shmem) {
      if (m.id != o.id) continue;
      uint64_t mend = m.pgoff + (m.end - start);
      if (m.pgoff <= off && off < mend) {
        carrier = mm.get();
        at = start + (off - m.pgoff);
        room = mend - off;
        break;
      }
      if (m.pgoff > off && m.pgoff < next_mapped) next_mapped = m.pgoff;
    }
    if (carrier) break;
  }
  if (!carrier) {
    // No process maps [off, next_mapped) now: no fault can ever want it.
    erase_range(o.missing, off, next_mapped);
    o.cursor = next_mapped;
    return {};
  }
  uint64_t len = std::min({piece_end - off, kPrefetchChunk, room});
  uint64_t done = 0;
  ASSIGN_OR_RETURN(int how, fill_object(*carrier, o, it->second.src + (off - it->first), off, at, len, done));
  (void)how;  // gone or not registered: another carrier next time
  return {};
}

bool LazyPager::busy(const Mm& mm) const {
  if (mm.gone) return false;
  if (!mm.missing.empty()) return true;
  for (auto& [start, m] : mm.shmem)
    if (auto o = objects_.find(m.id); o != objects_.end() && !o->second->missing.empty()) return true;
  return false;
}

Status LazyPager::prefetch_one(Mm& mm) {
  if (mm.missing.empty()) return {};
  auto it = containing(mm.missing, mm.cursor);
  uint64_t at = mm.cursor;
  if (it == mm.missing.end()) {
    it = mm.missing.lower_bound(mm.cursor);
    if (it == mm.missing.end()) it = mm.missing.begin();
    at = it->first;
  }
  uint64_t len = std::min(it->second.end - at, kPrefetchChunk);
  uint64_t done = 0;
  ASSIGN_OR_RETURN(int how, fill(mm, it->second.src + (at - it->first), at, len, done));
  auto r = static_cast<Copied>(how);
  // Not registered (any more): an event we have not read yet would have said
  // EAGAIN, so the range went without one (it cannot be filled).
  if (r == Copied::no_vma) erase_range(mm.missing, at, at + len);
  return {};
}

Status LazyPager::event(Mm& mm, const void* raw) {
  const auto& m = *static_cast<const uffd_msg*>(raw);
  switch (m.event) {
    case UFFD_EVENT_PAGEFAULT:
      return serve(mm, m.arg.pagefault.address);
    case UFFD_EVENT_FORK: {
      stats_.forks++;
      auto child = std::make_unique<Mm>();
      child->uffd.reset(static_cast<int>(m.arg.fork.ufd));
      ::fcntl(child->uffd.get(), F_SETFD, FD_CLOEXEC);
      ::fcntl(child->uffd.get(), F_SETFL, O_NONBLOCK);
      // The child's memory is a copy of the parent's: what the parent
      // still missed, the child misses too, from the same pages; but for
      // MADV_WIPEONFORK memory (zero in the child) and MADV_DONTFORK memory
      // (not in the child). Its shared mappings map the same objects.
      child->pid = mm.pid;
      child->missing = mm.missing;
      for (auto& [s, x] : mm.not_in_fork) erase_range(child->missing, s, x.end);
      child->not_in_fork = mm.not_in_fork;
      child->shmem = mm.shmem;
      child->cursor = mm.cursor;
      mms_.push_back(std::move(child));
      return {};
    }
    case UFFD_EVENT_REMAP: {
      stats_.remaps++;
      uint64_t from = m.arg.remap.from, to = m.arg.remap.to, len = m.arg.remap.len;
      // The pieces inside [from, from + len) move to [to, to + len): missing
      // pages with their image addresses, shared mappings with their offsets.
      for (MissingMap* m : {&mm.missing, &mm.not_in_fork}) {
        MissingMap part;
        for (auto& [s, x] : *m) {
          uint64_t a = std::max(s, from), b = std::min(x.end, from + len);
          if (a < b) part.emplace(a, Missing{b, x.src + (a - s)});
        }
        erase_range(*m, from, from + len);
        erase_range(*m, to, to + len);
        for (auto& [s, x] : part) m->emplace(s - from + to, Missing{x.end - from + to, x.src});
      }
      ShmemMap part;
      for (auto& [s, x] : mm.shmem) {
        uint64_t a = std::max(s, from), b = std::min(x.end, from + len);
        if (a < b) part.emplace(a, ShmemMapping{b, x.pgoff + (a - s), x.id});
      }
      erase_mappings(mm.shmem, from, from + len);
      erase_mappings(mm.shmem, to, to + len);
      for (auto& [s, x] : part) mm.shmem.emplace(s - from + to, ShmemMapping{x.end - from + to, x.pgoff, x.id});
      if (mm.cursor >= from && mm.cursor < from + len) mm.cursor = mm.cursor - from + to;
      return {};
    }
    case UFFD_EVENT_REMOVE:
      stats_.removes++;
      // Shared memory keeps its data under madvise(DONTNEED): its missing
      // pages stay missing (lazy_pager.hpp).
      erase_range(mm.missing, m.arg.remove.start, m.arg.remove.end);
      return {};
    case UFFD_EVENT_UNMAP:
      stats_.unmaps++;
      erase_range(mm.missing, m.arg.remove.start, m.arg.remove.end);
      erase_range(mm.not_in_fork, m.arg.remove.start, m.arg.remove.end);
      erase_mappings(mm.shmem, m.arg.remove.start, m.arg.remove.end);
      return {};
    default:
      return {};
  }
}

void LazyPager::kill_tree(const Error& why) {
  // Attached, finish() returns the error: the restore reports it.
  if (detached_) log_.error("{}", why.what());
  // Children first found, then killed with their parents; again, for those
  // forked meanwhile (a process stuck in a fault forks nothing).
  for (int round = 0; round < 3; round++) {
    std::set<pid_t> all;
    std::vector<pid_t> todo = tree_;
    while (!todo.empty()) {
      pid_t p = todo.back();
      todo.pop_back();
      if (!all.insert(p).second) continue;
      for (pid_t c : proc::children_of(p)) todo.push_back(c);
    }
    for (pid_t p : all) ::kill(p, SIGKILL);
  }
  for (auto& mm : mms_) mm->uffd.reset();
  mms_.clear();
}

void LazyPager::run() {
  FaultScope faults(log_, nullptr);
  std::vector<pollfd> pfds;
  std::vector<uffd_msg> msgs(64);
  size_t next = 0;  // round robin of the prefetch
  while (!stop_ && !done_ && !failed_) {
    pfds.clear();
    pfds.push_back({wake_.get(), POLLIN, 0});
    pfds.push_back({pager_end_ ? pager_end_.get() : -1, POLLIN, 0});
    for (auto& mm : mms_) pfds.push_back({mm->uffd.get(), POLLIN, 0});
    bool work = prefetch_ && std::any_of(mms_.begin(), mms_.end(), [this](auto& m) { return busy(*m); });
    int n = ::poll(pfds.data(), pfds.size(), work ? 0 : 1000);
    if (n < 0 && errno != EINTR) {
      failed_ = Error("lazy restore: poll", errno);
      break;
    }
    if (pfds[0].revents & POLLIN) {
      uint64_t v;
      (void)!::read(wake_.get(), &v, sizeof(v));
    }
    Status st;
    if (pfds[1].revents) st = take_uffd();
    size_t known = mms_.size();  // a fork adds to mms_ while its parent's messages are read
    for (size_t i = 0; st && i < known && i + 2 < pfds.size(); i++) {
      Mm& mm = *mms_[i];
      if (!pfds[i + 2].revents) continue;
      if (pfds[i + 2].revents & (POLLHUP | POLLERR)) mm.gone = true;
      for (;;) {
        ssize_t r = ::read(mm.uffd.get(), msgs.data(), msgs.size() * sizeof(uffd_msg));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
          if (r == 0) mm.gone = true;
          break;
        }
        for (size_t k = 0; st && k < static_cast<size_t>(r) / sizeof(uffd_msg); k++) {
          uint64_t addr = msgs[k].arg.pagefault.address;
          pid_t who = mms_[i]->seen_pid ? mms_[i]->seen_pid : mms_[i]->pid;
          st = with_context(event(*mms_[i], &msgs[k]), fmt::format("pid {}: at the fault {:#x}", who, addr));
        }
        if (!st) break;
      }
    }
    // One step of the prefetch, round robin: each process's own pages, then
    // each shared memory object (once every process's uffd is in: until
    // then a mapping of it may not be known yet).
    std::vector<Object*> objects;
    if (!pager_end_)
      for (auto& [id, o] : objects_)
        if (!o->missing.empty()) objects.push_back(o.get());
    size_t turns = mms_.size() + objects.size();
    if (st && prefetch_ && turns) {
      for (size_t k = 0; k < turns && st; k++) {
        size_t i = (next + k) % turns;
        if (i < mms_.size()) {
          Mm& mm = *mms_[i];
          if (mm.missing.empty() || mm.gone) continue;
          uint64_t at = mm.cursor;
          st = with_context(prefetch_one(mm), fmt::format("pid {}: prefetching near {:#x}", mm.pid, at));
        } else {
          Object& o = *objects[i - mms_.size()];
          uint64_t at = o.cursor;
          st = with_context(prefetch_object(o),
                            fmt::format("prefetching shared memory object {} near offset {:#x}", o.id, at));
        }
        next = (i + 1) % turns;
        break;
      }
    }
    if (!st) {
      failed_ = st.error();
      failed_->context("lazy restore failed, the restored tree is killed");
      kill_tree(*failed_);
      break;
    }
    // A process that is gone, or has all its pages, ends its share: its uffd
    // closes (what it faults from now on is the kernel's zero page).
    std::erase_if(mms_, [this](auto& m) { return !busy(*m); });
    if (prefetch_ && mms_.empty() && !pager_end_) done_ = true;
  }
  if (done_)
    log_.info("lazy restore: every page is in ({} fault(s), {} zero, {} MiB copied; {} fault(s) in shared memory, "
              "{} MiB shared memory copied; {} fork(s), {} mremap(s), {} madvise remove(s), {} munmap(s))",
              stats_.faults, stats_.zero_faults, stats_.bytes_copied >> 20, stats_.shmem_faults,
              stats_.shmem_bytes >> 20, stats_.forks, stats_.remaps, stats_.removes, stats_.unmaps);
}

Status LazyPager::finish() {
  if (thread_.joinable()) thread_.join();
  if (failed_) return std::unexpected(*failed_);
  return {};
}

Status LazyPager::detach() {
  stop();
  if (thread_.joinable()) thread_.join();
  stop_ = false;
  if (failed_) return std::unexpected(*failed_);
  if (done_) return {};
  pid_t mid = ::fork();
  if (mid < 0) {
    // No process of its own: it goes on here, until the restore returns.
    thread_ = std::thread([this] { run(); });
    return fail_errno("fork for the detached lazy pager");
  }
  if (mid == 0) {
    ::setsid();
    pid_t pager = ::fork();
    if (pager != 0) ::_exit(pager < 0 ? 1 : 0);
    // Whoever reads the restore's stdout (pid=$(minicriu restore -d)) must
    // not wait for the pager; its errors still go to the log.
    if (int null = ::open("/dev/null", O_RDWR | O_CLOEXEC); null >= 0) {
      ::dup2(null, STDIN_FILENO);
      ::dup2(null, STDOUT_FILENO);
      ::close(null);
    }
    detached_ = true;
    run();
    ::_exit(failed_ ? 1 : 0);
  }
  int status = 0;
  while (::waitpid(mid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return fail("the detached lazy pager could not start");
  // Ours go; the pager's copies serve the tree.
  mms_.clear();
  pager_end_.reset();
  done_ = true;
  return {};
}

}  // namespace minicriu
