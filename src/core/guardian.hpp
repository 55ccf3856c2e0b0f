// The guardian of one dump: a small process forked before the tree is seized
// (so it is no tracee, and outside the tree), which outlives the dumper. It
// waits for the dumper to end: told "done" (the dump ended, well or cured,
// and its journal is gone), it exits; finding the dumper dead without that
// word (SIGKILL, the OOM killer), it replays the journal
// (core/journal_replay.hpp): registers, code bytes and the parasite's
// leftovers go back, repair mode goes off, the stopped tree is continued.
//
// It learns of the dumper's death from a pidfd, which the kernel signals only
// once the dumper's tracees are detached; a pipe carries the "done" (its
// write end may have been inherited by a process the dumper forked, so its
// end of file alone proves nothing). It ignores SIGINT, SIGTERM and SIGHUP,
// in a session of its own: the CLI cures the tree on those itself.
#pragma once

#include <sys/types.h>

#include <string>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/unique_fd.hpp"

namespace minicriu {

class Guardian {
 public:
  [[nodiscard]] static Result<Guardian> start(const std::string& journal_path, const Logger& log);
  Guardian(Guardian&& o) noexcept;
  Guardian& operator=(Guardian&&) = delete;
  Guardian(const Guardian&) = delete;
  ~Guardian() { dismiss(); }

  pid_t pid() const { return pid_; }
  // The dump is over and its journal removed: the guardian exits, reaped.
  void dismiss();

 private:
  Guardian(pid_t pid, UniqueFd done) : pid_(pid), done_(std::move(done)) {}
  pid_t pid_ = -1;
  UniqueFd done_;
};

}  // namespace minicriu
