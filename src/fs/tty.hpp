// Pseudo-terminals (/dev/ptmx masters and /dev/pts/N slaves) whose two ends
// are both held by the dumped tree, as an MPI launcher holds the masters of
// the terminals its ranks write to. Dump: each end by the pty's index, the
// pty's termios, window size, packet mode and lock; data queued in either
// direction is read out (raw: it went through a line discipline once) into
// the master's entry, and put back if the tree runs on. Restore:
// each pty created once before the tree, with the same index when it is free,
// every dumped open file description opened again and handed out as dups; a
// session leader takes its pty back as controlling terminal, and the
// foreground process group is set again.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/external.hpp"
#include "base/log.hpp"
#include "base/unique_fd.hpp"
#include "kinds/kind.hpp"
#include "minicriu.pb.h"

namespace minicriu {

struct Checkpoint;

// The pts index of a terminal's device number as /proc/PID/stat's tty_nr
// encodes it (the kernel's new_encode_dev); nullopt for no terminal or one
// that is not a pts (a virtual console, a serial line).
std::optional<uint32_t> pts_index_of_tty_nr(uint32_t tty_nr);
// The pts index of a slave's st_rdev (majors 136-143, UNIX98_PTY_SLAVE_MAJOR).
std::optional<uint32_t> pts_index_of_rdev(dev_t rdev);
// /dev/ptmx and /dev/pts/ptmx: character device 5:2.
bool is_ptmx_rdev(dev_t rdev);

// "raw, 38400 baud, VMIN 1 VTIME 0, 24x80": a few words on a pty's state for
// `minicriu show`.
std::string pty_state_summary(const img::PtyState& st);

// Dump side: the ends of ptys the tree holds, checked once every fd is seen.
class TtyStore {
 public:
  void add_master(uint32_t index, const std::string& what);
  // file_id: its entry in files.img, marked external if it must be.
  void add_slave(uint32_t index, uint32_t file_id, pid_t pid, int fd, const std::string& what,
                 const std::string& link, int queued);
  // Our copy of a description of the pty (its master, its first slave), for
  // its queued bytes; fd is ours from now on.
  void keep_end(uint32_t index, bool master, uint32_t file_id, UniqueFd fd);
  bool has_master(uint32_t index) const { return masters_.count(index) != 0; }
  // Every slave's master is in the tree too, or the slave is accepted as
  // external by the policy (--external tty[N], the hook) and its entry in
  // files is marked so; else one line naming the first slave refused.
  [[nodiscard]] Status check_masters(const ExternalPolicy& policy, std::vector<img::FileEntry>& files) const;
  // No process outside `tree` holds the slave of a master of the tree: the
  // pty is made anew at restore, and such a holder would be left on the old
  // one. Scans /proc/*/fd (ourselves included).
  [[nodiscard]] Status check_slaves_inside(const std::set<pid_t>& tree) const;
  // Reads out the bytes not yet read in either direction of every pty whose
  // master is in the tree, into the master's entry in files; refuses in one
  // line what cannot be put back (no slave in the tree, packet mode), and
  // the input of a slave whose master is outside.
  [[nodiscard]] Status take_queued(std::vector<img::FileEntry>& files);
  // The tree runs on: what take_queued() read goes back where it was.
  // Failures are warnings (the tree runs on in any case).
  void put_back_queued(const Logger& log);

 private:
  std::map<uint32_t, std::string> masters_;
  struct Slave {
    uint32_t index;
    uint32_t file_id;
    pid_t pid;
    int fd;
    std::string what, link;
    int queued;  // FIONREAD at the take
  };
  std::vector<Slave> slaves_;
  struct Ends {
    uint32_t master_id = 0;
    UniqueFd master, slave;  // slave: our own (TIOCGPTPEER), once read
    bool has_slave = false;   // a process of the tree holds one
    std::string output, input;  // read out by take_queued()
    bool read = false;
  };
  std::map<uint32_t, Ends> ends_;
};

// Fills entry's TtyFile for the pty end fd is (the tty kind's take), and
// records it in store for the checks once every fd is seen.
[[nodiscard]] Status dump_tty_end(const FdDumpInfo& fd, img::FileEntry& entry, TtyStore& store);

// The controlling terminal of a process at the dump, or unset (none, or not
// a pts).
std::optional<img::ControllingTty> controlling_tty(uint32_t tty_nr, pid_t tpgid);

// Restore side: every pty of the images created once before the tree (above
// fd_floor: every process inherits them), each dumped open file description
// already open here.
class TtyRestorer {
 public:
  TtyRestorer() = default;
  TtyRestorer(const TtyRestorer&) = delete;
  TtyRestorer& operator=(const TtyRestorer&) = delete;
  [[nodiscard]] static Result<std::unique_ptr<TtyRestorer>> create_all(
      const std::vector<img::FileEntry>& files, int fd_floor, const Logger& log);
  // A dup of the description of this file entry.
  [[nodiscard]] Result<UniqueFd> open(const img::FileEntry& entry) const;
  // In a restored process, after it took its session and group and before
  // its children are made: a session leader whose controlling terminal was
  // a pty of the tree takes it again (TIOCSCTTY); a member of the terminal's
  // foreground group makes it the foreground again (TIOCSPGRP). What cannot
  // be done (a terminal outside the tree) is a warning.
  [[nodiscard]] Status restore_controlling(const Checkpoint& c, const img::ProcessEntry& p,
                                           std::vector<std::string>& warnings) const;

 private:
  struct Pty {
    int master = -1;       // the one description of the master (in descriptions_)
    uint32_t index_now = 0;  // its index here: the dumped one unless that was taken
  };
  [[nodiscard]] static Result<UniqueFd> reopen_external(const img::TtyFile& t);
  [[nodiscard]] Status create(uint32_t index, const std::vector<const img::FileEntry*>& ends,
                              int fd_floor, std::vector<UniqueFd>& fillers, const Logger& log);

  std::map<uint32_t, Pty> ptys_;                // by dumped index
  std::map<uint32_t, UniqueFd> descriptions_;   // by file id
};

}  // namespace minicriu
