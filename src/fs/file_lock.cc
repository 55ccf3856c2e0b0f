// File locks and leases (fcntl(2), flock(2)). Four kinds, two owners:
// - POSIX record locks (F_SETLK) belong to a process: the kernel's owner is
//   its fd table, and F_GETLK names the pid that took it;
// - open file description locks (F_OFD_SETLK), flock() locks and leases
//   (F_SETLEASE) belong to an open file description, shared by every fd
//   dup'd or inherited from it.
// Dumped from the "lock:" lines of /proc/PID/fdinfo/N (Linux 4.1+,
// show_fd_locks): a lock shows only on the fds of the description it was
// taken through, and only in the processes that own it. Taken again at
// restore by the process and through the fd that showed it, once only its
// dumped fds are open (Kind::restore_process_last): closing any fd on a file
// drops every POSIX lock the process holds on that file, so none of the
// restore's own closes may come after. A description's lock is taken once,
// by its first holder: the lock is the description's whoever takes it.
//
// A thread blocked in F_SETLKW or flock() at the dump holds nothing: its call
// restarts after the restore and waits again. A lease being broken (an open()
// that conflicts with it waits) is taken again and broken again the way the
// kernel broke it, by an open() that conflicts but does not wait; its
// lease-break-time starts again from the restore.
#include "fs/file_lock.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "images/checkpoint.hpp"
#include "images/image_set.hpp"
#include "kinds/kind.hpp"

namespace minicriu {

Result<std::vector<LockLine>> parse_lock_lines(const std::string& text) {
  std::vector<LockLine> out;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("lock:", 0) != 0) continue;
    std::istringstream words(line.substr(5));
    std::string id, dev_ino, start, end;
    LockLine l;
    if (!(words >> id >> l.kind >> l.state >> l.type >> l.pid >> dev_ino >> start >> end))
      return failf("malformed fdinfo lock line: {:?}", line);
    size_t colon = dev_ino.rfind(':');
    if (colon == std::string::npos) return failf("malformed fdinfo lock line: {:?}", line);
    l.dev = dev_ino.substr(0, colon);
    try {
      l.ino = std::stoull(dev_ino.substr(colon + 1));
      l.start = std::stoull(start);
      l.to_eof = end == "EOF";
      l.end = l.to_eof ? 0 : std::stoull(end);
    } catch (const std::exception&) {
      return failf("malformed fdinfo lock line: {:?}", line);
    }
    out.push_back(std::move(l));
  }
  return out;
}

namespace {

const char* type_word(uint32_t type) {
  return type == F_WRLCK ? "write" : type == F_RDLCK ? "read" : "unlock";
}

Result<uint32_t> type_of(const std::string& word) {
  if (word == "READ") return F_RDLCK;
  if (word == "WRITE") return F_WRLCK;
  if (word == "UNLCK") return F_UNLCK;
  return failf("unknown lock type {}", word);
}

std::string range_words(const img::FileLock& l) {
  if (l.to_eof()) return fmt::format("bytes {}-EOF", l.start());
  return fmt::format("bytes {}-{}", l.start(), l.end());
}

std::string lock_words(const img::FileLock& l) {
  switch (l.kind()) {
    case img::LOCK_POSIX: return fmt::format("POSIX {} lock ({})", type_word(l.type()), range_words(l));
    case img::LOCK_OFD: return fmt::format("OFD {} lock ({})", type_word(l.type()), range_words(l));
    case img::LOCK_FLOCK: return fmt::format("flock() {} lock", l.type() == F_WRLCK ? "exclusive" : "shared");
    case img::LOCK_LEASE:
      return fmt::format("{} lease{}", type_word(l.type()),
                         l.breaking() ? fmt::format(", being broken to {}", type_word(l.break_to())) : "");
    default: return "lock";
  }
}

// A lease is shown with the type its break goes to. One going to F_RDLCK was
// a write lease; one going to F_UNLCK was either. An open() for reading that
// does not wait tells them apart without touching the lease: it conflicts
// with a write lease, already breaking, so it fails at once and notifies
// nobody (__break_lease skips leases already breaking); it does not conflict
// with a read lease, and opens.
Result<uint32_t> type_before_break(const FdDumpInfo& fd, uint32_t break_to) {
  if (break_to == F_RDLCK) return F_WRLCK;
  UniqueFd probe(::open(fmt::format("/proc/self/fd/{}", fd.local_fd).c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (probe) return F_RDLCK;
  if (errno == EWOULDBLOCK) return F_WRLCK;
  return failf_errno("{}: cannot tell the type of the lease being broken on {}", fd.what, fd.link);
}

// A POSIX lock, as the kernel tells one from another: its owner's pid, its
// file and its range.
using PosixKey = std::tuple<long, dev_t, ino_t, uint64_t, uint64_t, bool, uint32_t>;

struct Exe {
  dev_t dev;
  ino_t ino;
};

class FileLockKind final : public Kind {
 public:
  const char* name() const override { return "file lock"; }

  // ---- dump ----------------------------------------------------------------

  Status observe_fd(const FdDumpInfo& fd, uint32_t file_id, DumpEnv&) override {
    if (fd.fdinfo.text.find("\nlock:") == std::string::npos) return {};
    ASSIGN_OR_RETURN(auto lines, with_context(parse_lock_lines(fd.fdinfo.text), fd.what));
    for (const LockLine& line : lines) TRY(observe(fd, file_id, line));
    return {};
  }

  Status take_process(ProcessDump& p, DumpEnv& env) override {
    for (const img::FileEntry& f : *env.files)
      if (f.id() == p.mm.exe_file_id() && f.has_reg())
        exes_[p.pid] = Exe{static_cast<dev_t>(f.reg().dev()), static_cast<ino_t>(f.reg().ino())};
    return {};
  }

  Status check(const DumpTree& tree, DumpEnv&) override {
    for (const Foreign& f : foreign_) {
      if (recorded_posix_.count(f.key)) continue;
      return failf("{}: a {} on {} was taken by pid {}, which is not in the dumped tree or no longer "
                   "shares this fd table; a POSIX lock comes back only in the process that owns it: "
                   "release it (F_UNLCK) before the dump, or dump the tree that holds pid {}",
                   f.what, lock_words(f.lock), f.lock.path(), std::get<0>(f.key), std::get<0>(f.key));
    }
    for (const Posix& p : posix_) TRY(check_not_on_exe(p, tree));
    return {};
  }

  Status commit(ImageSet& images, DumpEnv& env) override {
    return images.write(file_locks_image(env.dir), kFileLocksImage, locks_);
  }

  // ---- restore -------------------------------------------------------------

  Status load(const RestoreEnv& env) override {
    ASSIGN_OR_RETURN(locks_, read_all_images<img::FileLock>(file_locks_image(env.dir), kFileLocksImage));
    for (const img::FileLock& l : locks_)
      TRY(with_context(validate(l, env.checkpoint), file_locks_image(env.dir)));
    return {};
  }

  // Leases first: breaking one again opens the file, and a close would drop
  // the POSIX locks, which come last.
  Status restore_process_last(TaskEnv& task) override {
    uint32_t pid = task.process.entry.pid();
    for (img::FileLockKind kind : {img::LOCK_LEASE, img::LOCK_FLOCK, img::LOCK_OFD, img::LOCK_POSIX})
      for (const img::FileLock& l : locks_)
        if (l.pid() == pid && l.kind() == kind)
          TRY(with_context(take_again(l), fmt::format("fd {}: {} on {}", l.fd(), lock_words(l), l.path())));
    return {};
  }

  // ---- show ----------------------------------------------------------------

  void describe_process(const ProcessImages& p, std::string& out) const override {
    for (const img::FileLock& l : locks_)
      if (l.pid() == p.entry.pid()) out += fmt::format("  lock: {} on {} (fd {})\n", lock_words(l), l.path(), l.fd());
  }

  void add_to_view(img::CheckpointView& view) const override {
    for (const img::FileLock& l : locks_) *view.add_file_locks() = l;
  }

 private:
  // A POSIX lock seen in a process that is not its owner's pid: one of the
  // processes sharing the fd table took it, and must be seen taking it.
  struct Foreign {
    std::string what;
    PosixKey key;
    img::FileLock lock;
  };
  struct Posix {
    std::string what;
    dev_t dev;
    ino_t ino;
    size_t index;  // in locks_
  };

  Status observe(const FdDumpInfo& fd, uint32_t file_id, const LockLine& line) {
    img::FileLock l;
    ASSIGN_OR_RETURN(uint32_t type, with_context(type_of(line.type), fd.what));
    l.set_type(type);
    l.set_start(line.start);
    l.set_end(line.end);
    l.set_to_eof(line.to_eof);
    l.set_pid(static_cast<uint32_t>(fd.pid));
    l.set_fd(fd.fd);
    l.set_file_id(file_id);
    l.set_path(fd.link);
    if (line.kind == "POSIX") {
      l.set_kind(img::LOCK_POSIX);
      return observe_posix(fd, line, std::move(l));
    }
    if (line.kind == "OFDLCK") {
      l.set_kind(img::LOCK_OFD);
    } else if (line.kind == "FLOCK") {
      l.set_kind(img::LOCK_FLOCK);
    } else if (line.kind == "LEASE" && line.state != "BREAKER") {
      l.set_kind(img::LOCK_LEASE);
      if (line.state == "BREAKING") {
        l.set_breaking(true);
        l.set_break_to(type);
        ASSIGN_OR_RETURN(uint32_t before, type_before_break(fd, type));
        l.set_type(before);
      }
    } else {
      return failf("{}: a {} {} lock on {}, a kind minicriu cannot take again; release it before the dump",
                   fd.what, line.kind, line.state, fd.link);
    }
    // The description's: every fd of it, in every holder, shows it.
    auto key = std::make_tuple(file_id, static_cast<int>(l.kind()), l.type(), l.start(), l.end(), l.to_eof());
    if (!description_locks_.insert(key).second) return {};
    locks_.push_back(std::move(l));
    return {};
  }

  Status observe_posix(const FdDumpInfo& fd, const LockLine& line, img::FileLock l) {
    if (line.pid <= 0)
      return failf("{}: a {} on {} whose owner is not visible from here (pid {}); release it before the dump",
                   fd.what, lock_words(l), fd.link, line.pid);
    PosixKey key{line.pid, fd.st.st_dev, fd.st.st_ino, l.start(), l.end(), l.to_eof(), l.type()};
    if (line.pid != fd.pid) {
      foreign_.push_back({fd.what, key, std::move(l)});
      return {};
    }
    if (!recorded_posix_.insert(key).second) return {};
    posix_.push_back({fd.what, fd.st.st_dev, fd.st.st_ino, locks_.size()});
    locks_.push_back(std::move(l));
    return {};
  }

  // The restore opens the executable of every process once more (for
  // PR_SET_MM_MAP) and closes it again; that close would drop a POSIX lock
  // on it held through the same fd table.
  Status check_not_on_exe(const Posix& p, const DumpTree& tree) const {
    const img::FileLock& l = locks_[p.index];
    std::map<pid_t, const img::ProcessEntry*> by_pid;
    for (const img::ProcessEntry* e : tree.processes) by_pid[static_cast<pid_t>(e->pid())] = e;
    // The processes whose fd table is the locker's: linked by files_of_parent.
    auto table_root = [&](pid_t pid) {
      for (auto it = by_pid.find(pid); it != by_pid.end() && it->second->files_of_parent();)
        it = by_pid.find(pid = static_cast<pid_t>(it->second->ppid()));
      return pid;
    };
    pid_t root = table_root(static_cast<pid_t>(l.pid()));
    for (auto& [pid, e] : by_pid) {
      if (e->zombie() || table_root(pid) != root) continue;
      auto exe = exes_.find(pid);
      if (exe != exes_.end() && exe->second.dev == p.dev && exe->second.ino == p.ino)
        return failf("{}: a {} on {}, the executable of pid {}: the restore opens and closes that "
                     "executable again, and any close drops the POSIX locks of the fd table on the "
                     "file (fcntl(2)); lock it with flock() or F_OFD_SETLK instead, or release it "
                     "before the dump", p.what, lock_words(l), l.path(), pid);
    }
    return {};
  }

  static Status validate(const img::FileLock& l, const Checkpoint& c) {
    const ProcessImages* p = c.process(static_cast<pid_t>(l.pid()));
    if (!p || p->entry.zombie()) return failf("a lock of pid {}, which is not a live process of the checkpoint", l.pid());
    bool held = false;
    for (const img::FdEntry& f : p->fds) held |= f.fd() == l.fd() && f.file_id() == l.file_id();
    if (!held) return failf("pid {}: a lock through fd {} (file {}), which it does not hold", l.pid(), l.fd(), l.file_id());
    if (l.type() != F_RDLCK && l.type() != F_WRLCK) return failf("pid {}: fd {}: lock type {}", l.pid(), l.fd(), l.type());
    if (!img::FileLockKind_IsValid(l.kind())) return failf("pid {}: fd {}: lock kind {}", l.pid(), l.fd(), static_cast<int>(l.kind()));
    if (!l.to_eof() && l.end() < l.start()) return failf("pid {}: fd {}: a lock ends before it starts", l.pid(), l.fd());
    return {};
  }

  static Status take_again(const img::FileLock& l) {
    switch (l.kind()) {
      case img::LOCK_LEASE: return take_lease(l);
      case img::LOCK_FLOCK:
        if (::flock(l.fd(), (l.type() == F_WRLCK ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0) return {};
        if (errno == EWOULDBLOCK) return fail("another open file of it holds a conflicting flock() lock now");
        return fail_errno("flock");
      case img::LOCK_OFD: return take_record_lock(l, F_OFD_SETLK, F_OFD_GETLK);
      case img::LOCK_POSIX: return take_record_lock(l, F_SETLK, F_GETLK);
      default: return fail("unknown lock kind");
    }
  }

  static Status take_record_lock(const img::FileLock& l, int set, int get) {
    struct flock f {};
    f.l_type = static_cast<short>(l.type());
    f.l_whence = SEEK_SET;
    f.l_start = static_cast<off_t>(l.start());
    f.l_len = l.to_eof() ? 0 : static_cast<off_t>(l.end() - l.start() + 1);
    struct flock want = f;
    if (::fcntl(l.fd(), set, &f) == 0) return {};
    if (errno != EAGAIN && errno != EACCES) return fail_errno("fcntl");
    // Who holds it now (an OFD lock names no pid: -1).
    if (::fcntl(l.fd(), get, &want) == 0 && want.l_type != F_UNLCK && want.l_pid > 0)
      return failf("pid {} holds a conflicting lock on it now", want.l_pid);
    return fail("another open file of it holds a conflicting lock now");
  }

  static Status take_lease(const img::FileLock& l) {
    if (::fcntl(l.fd(), F_SETLEASE, static_cast<int>(l.type())) != 0) return fail_errno("F_SETLEASE");
    if (!l.breaking()) return {};
    // Broken again as the waiting open() broke it: an open that conflicts
    // but does not wait makes __break_lease mark the lease and notify its
    // holder, then fail with EWOULDBLOCK. Through /proc/self/fd: the file
    // may have no name left.
    int mode = l.break_to() == F_UNLCK ? O_WRONLY : O_RDONLY;
    UniqueFd opened(::open(fmt::format("/proc/self/fd/{}", l.fd()).c_str(), mode | O_NONBLOCK | O_CLOEXEC));
    if (opened) return fail("opening it again did not break the lease");
    if (errno != EWOULDBLOCK) return fail_errno("breaking the lease again");
    // The notice went to the lease's owner, this task (F_SETLEASE made it the
    // owner of the fresh description, lease_setup), as SIGIO, blocked here.
    // The holder had it at the dump already: its pending signals come from
    // the images, not from this second break.
    sigset_t io;
    sigemptyset(&io);
    sigaddset(&io, SIGIO);
    timespec none{};
    while (::sigtimedwait(&io, nullptr, &none) == SIGIO) {
    }
    return {};
  }

  std::vector<img::FileLock> locks_;
  // Dump side.
  std::set<std::tuple<uint32_t, int, uint32_t, uint64_t, uint64_t, bool>> description_locks_;
  std::set<PosixKey> recorded_posix_;
  std::vector<Posix> posix_;
  std::vector<Foreign> foreign_;
  std::map<pid_t, Exe> exes_;
};

}  // namespace

std::unique_ptr<Kind> make_file_lock_kind() { return std::make_unique<FileLockKind>(); }

}  // namespace minicriu
