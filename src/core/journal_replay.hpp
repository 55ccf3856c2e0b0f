// Replaying the journal of a dump whose dumper died (src/base/journal.hpp):
// every process of the tree that still runs (same pid, same start time) is
// seized, its threads get back the registers and signal mask we saved, the
// code bytes we wrote go back, what the parasite left (its mapping, its
// socket, the page pipe, a SIGPIPE) is taken away with remote syscalls, TCP
// sockets leave repair mode, and the processes we stopped are continued. Then
// a kept network lock and the link remaps of an unpublished dump go, and so
// does the journal.
//
// Used by the guardian (the dumper is known dead), by `minicriu check
// --cleanup` and by the next dump of the same root (both skip a journal whose
// dumper or guardian still runs).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"

namespace minicriu {

struct ReplayResult {
  std::string path;
  bool replayed = false;    // false: skipped, `why` says why
  std::string why;
  unsigned processes = 0;   // still alive, put back
  unsigned threads = 0;     // whose registers and signal mask went back
  unsigned code = 0;        // code sites whose bytes went back
  unsigned parasites = 0;   // processes whose parasite leftovers went
  unsigned continued = 0;   // processes SIGCONTed
  unsigned other = 0;       // TCP sockets out of repair, locks, link remaps
  std::vector<std::string> problems;
  // One line: "dump-123.journal: 2 process(es) put back (...)".
  std::string summary() const;
};

// by_guardian: the caller is the guardian of the dumper pid dumper that
// started at dumper_start (dead, its tracees maybe still on their way out of
// its ptrace): a journal of another dumper is left alone.
[[nodiscard]] Result<ReplayResult> replay_journal(const std::string& path, const Logger& log, bool by_guardian,
                                                  pid_t dumper = 0, uint64_t dumper_start = 0);
// Every journal in Journal::directory().
[[nodiscard]] Result<std::vector<ReplayResult>> replay_all_journals(const Logger& log);

}  // namespace minicriu
