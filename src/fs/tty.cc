#include "fs/tty.hpp"

// The kernel's struct termios2 and TCGETS2/TCSETS2 (glibc's <termios.h> has
// neither, and the two headers cannot be mixed: nothing here includes it).
#include <asm/termbits.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "base/external.hpp"
#include "images/checkpoint.hpp"
#include "kinds/kind.hpp"
#include "proc/proc_parse.hpp"

namespace minicriu {

namespace {

// UNIX98_PTY_SLAVE_MAJOR: devpts numbers every slave 136:INDEX (a 20-bit minor).
constexpr unsigned kPtsMajor = 136;
// TTYAUX_MAJOR:2, the multiplexer that makes a new pty at each open.
constexpr unsigned kPtmxMajor = 5, kPtmxMinor = 2;
// What of an open file description's flags a tty end keeps (O_ASYNC needs
// an owner we do not record).
constexpr uint32_t kKeptFlags = O_ACCMODE | O_NONBLOCK | O_APPEND;

std::string pts_name(uint32_t index) { return fmt::format("/dev/pts/{}", index); }

Result<img::PtyState> read_pty_state(int fd, bool master, const std::string& what) {
  termios2 t{};
  if (::ioctl(fd, TCGETS2, &t) != 0) return failf_errno("{}: TCGETS2", what);
  winsize ws{};
  if (::ioctl(fd, TIOCGWINSZ, &ws) != 0) return failf_errno("{}: TIOCGWINSZ", what);
  img::PtyState st;
  st.set_iflag(t.c_iflag);
  st.set_oflag(t.c_oflag);
  st.set_cflag(t.c_cflag);
  st.set_lflag(t.c_lflag);
  st.set_line(t.c_line);
  st.set_cc(std::string(reinterpret_cast<const char*>(t.c_cc), NCCS));
  st.set_ispeed(t.c_ispeed);
  st.set_ospeed(t.c_ospeed);
  st.set_rows(ws.ws_row);
  st.set_cols(ws.ws_col);
  st.set_xpixel(ws.ws_xpixel);
  st.set_ypixel(ws.ws_ypixel);
  if (master) {
    // Both since Linux 3.8.
    int packet = 0, locked = 0;
    if (::ioctl(fd, TIOCGPKT, &packet) != 0) return failf_errno("{}: TIOCGPKT", what);
    if (::ioctl(fd, TIOCGPTLCK, &locked) != 0) return failf_errno("{}: TIOCGPTLCK", what);
    st.set_packet_mode(packet != 0);
    st.set_locked(locked != 0);
    st.set_from_master(true);
  }
  return st;
}

// Termios and window size through the master: the kernel applies both to the
// slave (tty_pair_get_tty), whose state they are.
Status apply_pty_state(int master, const img::PtyState& st, const std::string& what) {
  termios2 t{};
  if (::ioctl(master, TCGETS2, &t) != 0) return failf_errno("{}: TCGETS2", what);
  t.c_iflag = st.iflag();
  t.c_oflag = st.oflag();
  t.c_cflag = st.cflag();
  t.c_lflag = st.lflag();
  t.c_line = static_cast<cc_t>(st.line());
  std::copy_n(st.cc().data(), std::min<size_t>(st.cc().size(), NCCS), t.c_cc);
  t.c_ispeed = st.ispeed();
  t.c_ospeed = st.ospeed();
  if (::ioctl(master, TCSETS2, &t) != 0) return failf_errno("{}: TCSETS2", what);
  winsize ws{};
  ws.ws_row = static_cast<unsigned short>(st.rows());
  ws.ws_col = static_cast<unsigned short>(st.cols());
  ws.ws_xpixel = static_cast<unsigned short>(st.xpixel());
  ws.ws_ypixel = static_cast<unsigned short>(st.ypixel());
  if (::ioctl(master, TIOCSWINSZ, &ws) != 0) return failf_errno("{}: TIOCSWINSZ", what);
  int packet = st.packet_mode() ? 1 : 0;
  if (::ioctl(master, TIOCPKT, &packet) != 0) return failf_errno("{}: TIOCPKT", what);
  return {};
}

Status set_fl(int fd, uint32_t flags, const std::string& what) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0) return failf_errno("{}: F_GETFL", what);
  fl = (fl & ~static_cast<int>(O_NONBLOCK | O_APPEND)) | static_cast<int>(flags & (O_NONBLOCK | O_APPEND));
  if (::fcntl(fd, F_SETFL, fl) != 0) return failf_errno("{}: F_SETFL", what);
  return {};
}

// A pty holds at most a line discipline buffer (N_TTY_BUF_SIZE, 4 KiB) and
// its flip buffer (64 KiB, TTYB_DEFAULT_MEM_LIMIT) per direction.
constexpr size_t kMaxQueued = 256 * 1024;

// Everything readable on a tty end now, appended to out (kept even when a
// read fails: it must be put back). O_NONBLOCK on the tree's description for
// the reads (the tree is frozen), its flags put back.
Status read_queue(int fd, std::string& out, const std::string& what) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0) return failf_errno("{}: F_GETFL", what);
  if (::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) return failf_errno("{}: F_SETFL", what);
  Status st;
  char buf[4096];
  for (int idle = 0; idle < 2;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
      idle = 0;
      if (out.size() > kMaxQueued) {
        st = failf("{}: more than {} bytes queued", what, kMaxQueued);
        break;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // EIO: the other end is closed (TTY_OTHER_CLOSED), what it wrote came first.
    if (n == 0 || errno == EIO) break;
    if (errno != EAGAIN) {
      st = failf_errno("{}: read", what);
      break;
    }
    // n_tty_poll moves what the flip buffer still holds (a line discipline
    // buffer that was full) into the line discipline before it answers.
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) != 1 || !(p.revents & POLLIN)) break;
    idle++;
  }
  if (::fcntl(fd, F_SETFL, fl) != 0 && st) st = failf_errno("{}: F_SETFL", what);
  return st;
}

// The slave's termios under which bytes its line discipline processed once
// go through it unchanged: no input or output processing, no echo, no
// signals, no special character but the line ends ('\n', VEOL); ICANON and
// EXTPROC as they are, because n_tty_set_termios forgets where the canonical
// lines end when either changes.
termios2 neutral_termios(const termios2& t) {
  termios2 n = t;
  n.c_iflag = t.c_iflag & IUTF8;
  n.c_oflag = 0;
  n.c_lflag = t.c_lflag & (ICANON | EXTPROC);
  for (int c : {VINTR, VQUIT, VERASE, VKILL, VEOF, VSTART, VSTOP, VSUSP, VREPRINT, VDISCARD, VWERASE, VLNEXT})
    n.c_cc[c] = 0;  // _POSIX_VDISABLE
  return n;
}

Status write_all(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, 2000) == 1) continue;
    }
    return failf_errno("{}: write ({} byte(s) left)", what, data.size());
  }
  return {};
}

// Puts a pty's queued bytes back where they were read from: what the slave
// wrote goes through the slave with output processing off (pty_write hands
// it to the master as it is: the master's own termios are raw, always);
// the slave's input goes in with TIOCSTI, which runs it through the line
// discipline at once (a write to the master would be processed later, by a
// work queue, maybe under the termios set after it). TIOCSTI on a terminal
// that is not ours needs CAP_SYS_ADMIN. Then the termios are `real` again.
Status put_back_bytes(int master, int slave, std::string_view output, std::string_view input,
                       const termios2& real, const std::string& what) {
  if (output.empty() && input.empty()) return {};
  termios2 n = neutral_termios(real);
  if (::ioctl(master, TCSETS2, &n) != 0) return failf_errno("{}: TCSETS2", what);
  Status st = write_all(slave, output, what + ": its slave");
  for (size_t i = 0; st && i < input.size(); i++)
    if (::ioctl(slave, TIOCSTI, &input[i]) != 0)
      st = failf_errno("{}: TIOCSTI (byte {} of {} of its slave's input)", what, i, input.size());
  if (::ioctl(master, TCSETS2, &real) != 0 && st) st = failf_errno("{}: TCSETS2", what);
  return st;
}

}  // namespace

std::optional<uint32_t> pts_index_of_tty_nr(uint32_t tty_nr) {
  // new_encode_dev: minor bits 0-7, major bits 8-19, minor's upper bits above.
  uint32_t major = (tty_nr >> 8) & 0xfff;
  uint32_t minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
  if (tty_nr == 0 || major != kPtsMajor) return std::nullopt;
  return minor;
}

std::optional<uint32_t> pts_index_of_rdev(dev_t rdev) {
  if (::major(rdev) != kPtsMajor) return std::nullopt;
  return static_cast<uint32_t>(::minor(rdev));
}

bool is_ptmx_rdev(dev_t rdev) { return ::major(rdev) == kPtmxMajor && ::minor(rdev) == kPtmxMinor; }

std::string pty_state_summary(const img::PtyState& st) {
  auto cc = [&](int i) { return i < static_cast<int>(st.cc().size()) ? static_cast<uint8_t>(st.cc()[i]) : 0; };
  std::string out = (st.lflag() & ICANON) ? "canonical" : "non-canonical";
  out += (st.lflag() & ECHO) ? ", echo" : ", no echo";
  if (!(st.lflag() & ISIG)) out += ", no signals";
  if (!(st.oflag() & OPOST)) out += ", no output processing";
  out += fmt::format(", {} baud, VMIN {} VTIME {}, VINTR {:#x}, {}x{}", st.ospeed(), cc(VMIN), cc(VTIME),
                     cc(VINTR), st.rows(), st.cols());
  if (st.packet_mode()) out += ", packet mode";
  if (st.locked()) out += ", locked";
  return out;
}

std::optional<img::ControllingTty> controlling_tty(uint32_t tty_nr, pid_t tpgid) {
  auto index = pts_index_of_tty_nr(tty_nr);
  if (!index) return std::nullopt;
  img::ControllingTty ct;
  ct.set_pts_index(*index);
  ct.set_foreground_pgid(tpgid);
  return ct;
}

// ---- dump -------------------------------------------------------------------

void TtyStore::add_master(uint32_t index, const std::string& what) { masters_.emplace(index, what); }

void TtyStore::add_slave(uint32_t index, uint32_t file_id, pid_t pid, int fd, const std::string& what,
                         const std::string& link, int queued) {
  slaves_.push_back({index, file_id, pid, fd, what, link, queued});
}

void TtyStore::keep_end(uint32_t index, bool master, uint32_t file_id, UniqueFd fd) {
  Ends& e = ends_[index];
  if (master) {
    e.master_id = file_id;
    e.master = std::move(fd);
  } else {
    // Only whether the tree holds a slave: a copy of it kept here would be
    // a holder outside the tree to check_slaves_inside().
    e.has_slave = true;
  }
}

Status TtyStore::take_queued(std::vector<img::FileEntry>& files) {
  for (auto& s : slaves_)
    if (!masters_.count(s.index) && s.queued > 0)
      return failf("{}: {} has {} byte(s) of input not yet read, and its master is outside the dumped tree, "
                   "through which alone they could be put back; let the application read them and dump again",
                   s.what, s.link, s.queued);
  for (auto& [index, e] : ends_) {
    if (!e.master) continue;
    std::string what = fmt::format("{} (the master of {})", masters_.at(index), pts_name(index));
    int out = 0, packet = 0;
    if (::ioctl(e.master.get(), FIONREAD, &out) != 0) return failf_errno("{}: FIONREAD", what);
    if (::ioctl(e.master.get(), TIOCGPKT, &packet) != 0) return failf_errno("{}: TIOCGPKT", what);
    if (out > 0 && packet)
      return failf("{} has {} byte(s) written to the terminal and not yet read, in packet mode (TIOCPKT), "
                   "whose status bytes minicriu cannot carry; let the application read them and dump again",
                   what, out);
    if (out > 0 && !e.has_slave)
      return failf("{} has {} byte(s) written to the terminal and not yet read, and no process of the "
                   "dumped tree holds its slave, through which they would be put back; let the application "
                   "read them and dump again", what, out);
    if (!e.has_slave) continue;
    // A description of the slave of our own, readable and writable whatever
    // the tree's are (TIOCGPTPEER, Linux 4.13; not the last close of the
    // slave when it goes: the tree holds it).
    e.slave.reset(::ioctl(e.master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!e.slave) return failf_errno("{}: TIOCGPTPEER, to read its slave's input", what);
    termios2 real{};
    if (::ioctl(e.master.get(), TCGETS2, &real) != 0) return failf_errno("{}: TCGETS2", what);
    e.read = true;
    TRY(read_queue(e.master.get(), e.output, what));
    // A canonical slave shows only whole lines (inq_canon): the rest of its
    // queue, a line still being typed, is read in non-canonical mode. The
    // queue is empty when ICANON is set again, so no line is lost.
    bool canon = (real.c_lflag & ICANON) != 0;
    if (canon) {
      termios2 t = real;
      t.c_lflag &= ~ICANON;
      if (::ioctl(e.master.get(), TCSETS2, &t) != 0) return failf_errno("{}: TCSETS2", what);
    }
    Status st = read_queue(e.slave.get(), e.input, what + ": its slave");
    if (canon && ::ioctl(e.master.get(), TCSETS2, &real) != 0 && st) st = failf_errno("{}: TCSETS2", what);
    TRY(std::move(st));
    for (auto& f : files)
      if (f.id() == e.master_id) {
        f.mutable_tty()->set_queued_output(e.output);
        f.mutable_tty()->set_queued_input(e.input);
      }
  }
  return {};
}

void TtyStore::put_back_queued(const Logger& log) {
  for (auto& [index, e] : ends_) {
    if (!e.read) continue;
    e.read = false;
    std::string what = fmt::format("{} (the master of {})", masters_.at(index), pts_name(index));
    termios2 real{};
    Status st;
    if (::ioctl(e.master.get(), TCGETS2, &real) != 0)
      st = failf_errno("{}: TCGETS2", what);
    else
      st = put_back_bytes(e.master.get(), e.slave.get(), e.output, e.input, real, what);
    if (!st)
      log.warn("{}: its {} + {} queued byte(s) could not all be put back: {}", what, e.output.size(),
               e.input.size(), st.error().what());
    else if (!e.output.empty() || !e.input.empty())
      log.debug("{}: {} + {} queued byte(s) put back", what, e.output.size(), e.input.size());
  }
}

Status TtyStore::check_masters(const ExternalPolicy& policy, std::vector<img::FileEntry>& files) const {
  for (auto& s : slaves_) {
    if (masters_.count(s.index)) continue;
    ExternalObject obj;
    obj.kind = "tty";
    obj.key = fmt::format("tty[{}]", s.index);
    obj.inode = s.index;
    obj.pid = s.pid;
    obj.fd = s.fd;
    obj.description = fmt::format("{}: {}, a terminal whose master is outside the tree", s.what, s.link);
    if (policy.accepts(obj)) {
      for (auto& f : files)
        if (f.id() == s.file_id) f.mutable_tty()->set_external(true);
      continue;
    }
    // The master of a pty cannot be opened again, so a slave whose master
    // stays behind can only be reopened by path, while that master lives.
    return failf("{}: {} is a terminal whose master (/dev/ptmx) is outside the dumped tree (held by "
                 "a process not dumped, e.g. a shell's terminal or a launcher); dump the process that "
                 "holds the master with it, or pass --external tty[{}] (--shell-job for every such terminal) to reopen it by path "
                 "at restore (its master must still hold it then)", s.what, s.link, s.index);
  }
  return {};
}

Status TtyStore::check_slaves_inside(const std::set<pid_t>& tree) const {
  std::set<std::string> links;
  for (auto& [index, what] : masters_) links.insert(pts_name(index));
  if (links.empty()) return {};
  std::set<pid_t> exclude = tree;
  for (;;) {
    ASSIGN_OR_RETURN(auto holder, proc::find_fd_holder(links, exclude));
    if (!holder) return {};
    // The same name in another devpts instance (a container's) is another
    // terminal.
    struct stat st {};
    uint32_t index = static_cast<uint32_t>(std::strtoul(holder->link.c_str() + 9, nullptr, 10));  // "/dev/pts/N"
    if (::stat(proc::pid_path(holder->pid, fmt::format("fd/{}", holder->fd)).c_str(), &st) == 0 &&
        pts_index_of_rdev(st.st_rdev) == index && S_ISCHR(st.st_mode))
      return failf("{}: /dev/ptmx, the master of {}, whose terminal is also held by pid {} ({}) as fd {}, "
                   "outside the dumped tree; dump that process with it, or close the terminal there before "
                   "the dump", masters_.at(index), holder->link, holder->pid, holder->comm, holder->fd);
    exclude.insert(holder->pid);
  }
}

// ---- restore ----------------------------------------------------------------

Result<std::unique_ptr<TtyRestorer>> TtyRestorer::create_all(const std::vector<img::FileEntry>& files,
                                                             int fd_floor, const Logger& log) {
  std::map<uint32_t, std::vector<const img::FileEntry*>> by_index;
  auto r = std::make_unique<TtyRestorer>();
  for (auto& f : files) {
    if (!f.has_tty()) continue;
    if (!f.tty().external()) {
      by_index[f.tty().index()].push_back(&f);
      continue;
    }
    ASSIGN_OR_RETURN(UniqueFd fd, reopen_external(f.tty()));
    r->descriptions_.emplace(f.id(), move_fd_above(std::move(fd), fd_floor));
  }
  // Masters opened only to step over indexes in use here or still to come;
  // held until every pty has its index (the kernel hands out the lowest
  // free one), closed on return.
  std::vector<UniqueFd> fillers;
  for (auto& [index, ends] : by_index) TRY(r->create(index, ends, fd_floor, fillers, log));
  return r;
}

Result<UniqueFd> TtyRestorer::reopen_external(const img::TtyFile& t) {
  std::string path = pts_name(t.index());
  int flags = static_cast<int>(t.flags() & kKeptFlags) | O_NOCTTY | O_CLOEXEC;
  UniqueFd fd(::open(path.c_str(), flags));
  struct stat st {};
  if (fd && ::fstat(fd.get(), &st) != 0) return failf_errno("cannot stat {}", path);
  int64_t ctime_ns = static_cast<int64_t>(st.st_ctim.tv_sec) * 1'000'000'000 + st.st_ctim.tv_nsec;
  // devpts removes the node when the master closes; a node of that number
  // made since is another terminal, and so is one whose ctime moved.
  if (!fd || pts_index_of_rdev(st.st_rdev) != t.index() || ctime_ns != t.ctime_ns())
    return failf("{}, the terminal outside the tree that the checkpoint reopens by path, is {}; restore "
                 "while the process that held its master at the dump still holds it",
                 path, fd ? "another terminal now, or was changed (chmod/chown) since the dump"
                          : "gone (its master was closed)");
  return fd;
}

Status TtyRestorer::create(uint32_t index, const std::vector<const img::FileEntry*>& ends, int fd_floor,
                           std::vector<UniqueFd>& fillers, const Logger& log) {
  const img::FileEntry* master = nullptr;
  std::vector<const img::FileEntry*> slaves;
  for (auto* e : ends) {
    if (!e->tty().master()) {
      slaves.push_back(e);
    } else if (master) {
      return failf("{}: files.img holds two descriptions of its master (files {} and {})", pts_name(index),
                   master->id(), e->id());
    } else {
      master = e;
    }
  }
  if (!master)
    return failf("{}: its master is not in the images (it was outside the dumped tree)", pts_name(index));

  UniqueFd m;
  unsigned got = 0;
  int mode = static_cast<int>(master->tty().flags() & O_ACCMODE);
  for (int tries = 0;; tries++) {
    UniqueFd fd(::open("/dev/ptmx", mode | O_NOCTTY | O_CLOEXEC));
    if (!fd && errno == EMFILE && !fillers.empty()) {
      // Out of fds before reaching the index (a high one, a low ulimit -n):
      // the last pty opened stands in, under another index (warned below).
      m = std::move(fillers.back());
      fillers.pop_back();
      if (::ioctl(m.get(), TIOCGPTN, &got) != 0) return failf_errno("{}: TIOCGPTN", pts_name(index));
      break;
    }
    if (!fd) return failf_errno("{}: cannot open /dev/ptmx", pts_name(index));
    if (::ioctl(fd.get(), TIOCGPTN, &got) != 0) return failf_errno("{}: TIOCGPTN", pts_name(index));
    if (got >= index || tries >= 4096) {
      m = std::move(fd);
      break;
    }
    fillers.push_back(std::move(fd));
  }
  std::string what = pts_name(got);
  if (got != index)
    log.warn("{} is in use here; that pty comes back as {} (its holders' ttyname changes)", pts_name(index),
             what);
  int unlock = 0;
  if (::ioctl(m.get(), TIOCSPTLCK, &unlock) != 0) return failf_errno("{}: TIOCSPTLCK", what);
  TRY(apply_pty_state(m.get(), master->tty().pty(), what));
  for (auto* s : slaves) {
    int flags = static_cast<int>(s->tty().flags() & kKeptFlags) | O_NOCTTY | O_CLOEXEC;
    // TIOCGPTPEER (Linux 4.13) reaches this pty's slave whatever /dev/pts is.
    UniqueFd sfd(::ioctl(m.get(), TIOCGPTPEER, flags));
    if (!sfd && (errno == EINVAL || errno == ENOTTY)) sfd = UniqueFd(::open(what.c_str(), flags));
    if (!sfd) return failf_errno("cannot open {}", what);
    if (s->tty().exclusive() && ::ioctl(sfd.get(), TIOCEXCL) != 0) return failf_errno("{}: TIOCEXCL", what);
    descriptions_.emplace(s->id(), move_fd_above(std::move(sfd), fd_floor));
  }
  const img::TtyFile& mt = master->tty();
  if (!mt.queued_output().empty() || !mt.queued_input().empty()) {
    if (slaves.empty())
      return failf("{}: its master has queued bytes but no slave of it is in the images", pts_name(index));
    termios2 real{};
    if (::ioctl(m.get(), TCGETS2, &real) != 0) return failf_errno("{}: TCGETS2", what);
    // Readable and writable whatever the slaves' descriptions are.
    UniqueFd peer(::ioctl(m.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
    int slave = peer ? peer.get() : descriptions_.at(slaves.front()->id()).get();
    TRY(put_back_bytes(m.get(), slave, mt.queued_output(), mt.queued_input(), real, what));
  }
  // The lock forbids opening the slave: set last.
  if (master->tty().pty().locked()) {
    int lock = 1;
    if (::ioctl(m.get(), TIOCSPTLCK, &lock) != 0) return failf_errno("{}: TIOCSPTLCK", what);
  }
  if (master->tty().exclusive() && ::ioctl(m.get(), TIOCEXCL) != 0)
    return failf_errno("{} (master): TIOCEXCL", what);
  TRY(set_fl(m.get(), master->tty().flags(), what + " (master)"));
  m = move_fd_above(std::move(m), fd_floor);
  ptys_[index] = Pty{m.get(), got};
  descriptions_.emplace(master->id(), std::move(m));
  return {};
}

Result<UniqueFd> TtyRestorer::open(const img::FileEntry& entry) const {
  auto it = descriptions_.find(entry.id());
  if (it == descriptions_.end()) return failf("file {}: its pty was not created", entry.id());
  return dup_description(it->second.get(), fmt::format("file {}: {}", entry.id(), pts_name(entry.tty().index())));
}

Status TtyRestorer::restore_controlling(const Checkpoint& c, const img::ProcessEntry& p,
                                        std::vector<std::string>& warnings) const {
  if (!p.has_ctty()) return {};
  pid_t pid = static_cast<pid_t>(p.pid()), sid = static_cast<pid_t>(p.sid()),
        pgid = static_cast<pid_t>(p.pgid());
  const img::ControllingTty& ct = p.ctty();
  auto it = ptys_.find(ct.pts_index());
  if (it == ptys_.end()) {
    if (pid == sid)
      warnings.push_back(fmt::format("pid {}: its controlling terminal {} was outside the checkpoint; its "
                                     "session comes back without one", pid, pts_name(ct.pts_index())));
    return {};
  }
  // The session is restored only when its leader is (else the process
  // joined minicriu's session, whose terminal is not this one).
  const ProcessImages* leader = c.process(sid);
  if (!leader || leader->entry.zombie()) return {};
  // Through the master: the kernel acts on its slave (tty_pair_get_tty).
  int fd = it->second.master;
  std::string what = pts_name(it->second.index_now);
  pid_t fg = ct.foreground_pgid();
  if (pid == sid) {
    // Just after setsid(): a leader without a terminal, on a pty no session has.
    if (::ioctl(fd, TIOCSCTTY, 0) != 0)
      return failf_errno("cannot make {} its controlling terminal again (TIOCSCTTY)", what);
    bool group_here = false;
    for (auto& q : c.processes)
      if (static_cast<pid_t>(q.entry.pgid()) == fg && q.entry.sid() == p.sid() && !q.entry.zombie())
        group_here = true;
    if (fg > 0 && !group_here)
      warnings.push_back(fmt::format("pid {}: the foreground process group {} of {} is not in the "
                                     "checkpoint; the session leader's group is the foreground", pid, fg, what));
  }
  // Every signal is blocked here, so a background group may set itself as
  // the foreground without SIGTTOU (tty_check_change).
  if (fg > 0 && fg == pgid && ::ioctl(fd, TIOCSPGRP, &pgid) != 0)
    return failf_errno("cannot make process group {} the foreground of {} again (TIOCSPGRP)", pgid, what);
  return {};
}

Status dump_tty_end(const FdDumpInfo& fd, img::FileEntry& entry, TtyStore& store) {
  bool master = is_ptmx_rdev(fd.st.st_rdev);
  uint32_t index = 0;
  if (master) {
    unsigned n = 0;
    if (::ioctl(fd.local_fd, TIOCGPTN, &n) != 0) return failf_errno("{}: {}: TIOCGPTN", fd.what, fd.link);
    index = n;
  } else {
    index = *pts_index_of_rdev(fd.st.st_rdev);
  }
  // Queued bytes are read out once the whole tree is seen (take_queued):
  // a tty cannot be read without consuming them (no MSG_PEEK, no tee).
  int queued = 0;
  if (::ioctl(fd.local_fd, FIONREAD, &queued) != 0)
    return failf_errno("{}: {}: FIONREAD", fd.what, fd.link);
  UniqueFd kept(::fcntl(fd.local_fd, F_DUPFD_CLOEXEC, 3));
  if (!kept) return failf_errno("{}: {}: F_DUPFD", fd.what, fd.link);
  store.keep_end(index, master, entry.id(), std::move(kept));
  img::TtyFile* t = entry.mutable_tty();
  t->set_index(index);
  t->set_master(master);
  t->set_flags(fd.fdinfo.flags & kKeptFlags);
  t->set_path(fd.link);
  int excl = 0;
  if (::ioctl(fd.local_fd, TIOCGEXCL, &excl) == 0) t->set_exclusive(excl != 0);
  ASSIGN_OR_RETURN(*t->mutable_pty(), read_pty_state(fd.local_fd, master, fd.what + ": " + fd.link));
  if (master)
    store.add_master(index, fd.what);
  else
    store.add_slave(index, entry.id(), fd.pid, fd.fd, fd.what, fd.link, queued);
  t->set_ctime_ns(static_cast<int64_t>(fd.st.st_ctim.tv_sec) * 1'000'000'000 + fd.st.st_ctim.tv_nsec);
  return {};
}

// ---- the kind --------------------------------------------------------------

namespace {

class TtyKind final : public Kind {
 public:
  const char* name() const override { return "pty"; }

  bool takes(const FdDumpInfo& fd) const override {
    if (!S_ISCHR(fd.st.st_mode) || fd.local_fd < 0) return false;
    return is_ptmx_rdev(fd.st.st_rdev) || pts_index_of_rdev(fd.st.st_rdev).has_value();
  }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv&) override {
    return dump_tty_end(fd, entry, store_);
  }

  Status take_process(ProcessDump& p, DumpEnv& env) override {
    if (auto ctty = controlling_tty(p.stat.tty_nr, p.stat.tpgid))
      *p.entry.mutable_ctty() = *ctty;
    else if (p.stat.tty_nr != 0 && p.pid == p.stat.session)
      env.log.info("pid {}: its controlling terminal (device {:#x}) is not a pseudo-terminal; it is not "
                   "restored", p.pid, p.stat.tty_nr);
    return {};
  }

  // A pty slave whose master stays behind is refused; a session whose
  // controlling terminal stays behind comes back without one (said here once).
  Status check(const DumpTree& tree, DumpEnv& env) override {
    TRY(store_.check_masters(env.external, *env.files));
    TRY(store_.check_slaves_inside(tree.pids));
    TRY(store_.take_queued(*env.files));
    for (auto* e : tree.processes)
      if (e->has_ctty() && e->pid() == e->sid() && !store_.has_master(e->ctty().pts_index()))
        env.log.warn("pid {}: its controlling terminal /dev/pts/{} is outside the dumped tree; its session "
                     "comes back without one", e->pid(), e->ctty().pts_index());
    return {};
  }

  void release(TreeFate fate, DumpEnv& env) override {
    if (fate == TreeFate::runs) store_.put_back_queued(env.log);
  }

  bool owns(const img::FileEntry& entry) const override { return entry.has_tty(); }

  Status create_shared(const RestoreEnv& env) override {
    ASSIGN_OR_RETURN(restorer_, TtyRestorer::create_all(env.checkpoint.files, env.fd_floor, env.log));
    return {};
  }

  // Before the children: they inherit the session's terminal.
  Status restore_session(TaskEnv& task) override {
    if (!restorer_) return {};
    return restorer_->restore_controlling(task.checkpoint, task.process.entry, task.warnings);
  }

  Result<UniqueFd> open(const img::FileEntry& entry) override {
    if (!restorer_) return fail("ptys were not created for this restore");
    return restorer_->open(entry);
  }

  Status resume(const RestoreEnv&) override {
    restorer_.reset();
    return {};
  }

  void describe_process(const ProcessImages& p, std::string& out) const override {
    if (p.entry.has_ctty())
      out += fmt::format("  controlling terminal: /dev/pts/{}, foreground group {}\n", p.entry.ctty().pts_index(),
                         p.entry.ctty().foreground_pgid());
  }

  std::string describe(const img::FileEntry& f) const override {
    const auto& t = f.tty();
    if (t.external())
      return fmt::format("pty slave /dev/pts/{} (flags {:#o}), external: its master was outside the tree; "
                         "reopened by path at restore", t.index(), t.flags());
    std::string queued;
    if (!t.queued_output().empty() || !t.queued_input().empty())
      queued = fmt::format("; queued: {} byte(s) for the master, {} for the slave", t.queued_output().size(),
                           t.queued_input().size());
    return fmt::format("pty {} /dev/pts/{} (flags {:#o}{}): {}{}", t.master() ? "master" : "slave", t.index(),
                       t.flags(), t.exclusive() ? ", exclusive" : "", pty_state_summary(t.pty()), queued);
  }

 private:
  TtyStore store_;
  std::unique_ptr<TtyRestorer> restorer_;
};

}  // namespace

std::unique_ptr<Kind> make_tty_kind() { return std::make_unique<TtyKind>(); }

}  // namespace minicriu
