// The dump journal: what a dump changed in its tree that the kernel does not
// undo when the dumper dies (SIGKILL, the OOM killer). One line per change,
// written and fdatasync'ed BEFORE the change is made, and a line after it was
// undone; whoever finds the journal of a dead dumper (its guardian, `minicriu
// check --cleanup`, the next dump of the same root) replays what is left
// (src/core/journal_replay.cc). A dump that ends, well or cured, removes it.
//
// Lines (text, one change each, fields separated by one space):
//   dumper PID START                 the dumping process (START: field 22 of
//                                    /proc/PID/stat, so that a reused pid is
//                                    never taken for it)
//   guardian PID START               its guardian
//   proc PID START                   a process of the tree, seized
//   stop PID                         we are about to SIGSTOP it (SIGCONT at replay)
//   regs PID TID HEX SIGMASK         a thread's registers and signal mask, saved
//                                    before we change them
//   regs-back TID                    ... put back
//   code PID ADDR HEX                the bytes at ADDR before we write there
//   code-back PID ADDR               ... put back
//   parasite PID SITE PENDING FD...  before the parasite goes in: a syscall
//                                    site, the leader's pending signals and
//                                    the fds the process held
//   parasite-gone PID                ... cured
//   tcp-repair INO                   a TCP socket (socket:[INO]) of the tree
//                                    about to go into repair mode
//   tcp-repair-off INO               ... out of it
//   nft MODE TABLE                   a network lock table about to be kept
//                                    past our death (an owned nftables table
//                                    goes with our netlink socket by itself)
//   nft-gone TABLE                   ... removed
//   link-remap HEXPATH               a link remap about to be made
//   link-remap-gone HEXPATH          ... removed
//   cont PID                         released: SIGCONTed by the dumper itself
//   published                        the checkpoint is complete: its link
//                                    remaps and kept lock are its own now
//
// Where the journals live: $MINICRIU_JOURNAL_DIR, else /run/minicriu (for
// another user than root $XDG_RUNTIME_DIR/minicriu or /tmp/minicriu-UID), one file
// per dumped root, dump-ROOT.journal. Installed for one dump on its thread by
// a JournalScope (a thread-local pointer, as the fault plan is): the ptrace,
// parasite and net code note their changes through journal_note(), which does
// nothing when no journal is installed (a restore, the guardian itself).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace minicriu {

class Journal {
 public:
  // $MINICRIU_JOURNAL_DIR, else /run/minicriu (root), $XDG_RUNTIME_DIR/minicriu
  // or /tmp/minicriu-UID (any other user).
  static std::string directory();
  static std::string path_for(pid_t root);
  // Where the dumper dumper writes the journal at path before its name is
  // given (the header lines in it): ".dump-ROOT.journal.PID" beside it.
  static std::string temp_path(const std::string& path, pid_t dumper);
  // A new journal for root (an old one there is replaced: replay it first),
  // made whole with its first lines (the dumper and its guardian) under a
  // temporary name, synced and renamed: a journal found under its name
  // always says whose it is.
  [[nodiscard]] static Result<std::unique_ptr<Journal>> create(pid_t root, const std::vector<std::string>& header);

  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;
  ~Journal() = default;

  // Appends one line and waits for it to be on disk.
  [[nodiscard]] Status note(std::string_view line);
  const std::string& path() const { return path_; }
  // The dump is over (well, or cured): the journal goes.
  void remove();

 private:
  Journal(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  UniqueFd fd_;
};

class JournalScope {
 public:
  explicit JournalScope(Journal* journal);
  ~JournalScope();
  JournalScope(const JournalScope&) = delete;
  JournalScope& operator=(const JournalScope&) = delete;
  static void* operator new(size_t) = delete;

 private:
  Journal* outer_;
};

// Notes a line in the journal of the running dump (nothing without one).
[[nodiscard]] Status journal_note(std::string_view line);
bool journal_active();

// Field 22 of /proc/PID/stat (clock ticks since boot), 0 if pid is gone.
uint64_t process_start_time(pid_t pid);
// pid runs (exists, not a zombie) and started at start.
bool process_alive(pid_t pid, uint64_t start);

std::string hex_bytes(const void* data, size_t size);
// false on an odd length or a character that is not hex.
bool parse_hex(std::string_view hex, std::string& out);

}  // namespace minicriu
