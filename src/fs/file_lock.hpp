// File locks and leases (the kind is in file_lock.cc): the "lock:" lines of
// /proc/PID/fdinfo/N, parsed here so that unit tests feed recorded samples.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "images/image_dir.hpp"
#include "images/image_io.hpp"

namespace minicriu {

inline constexpr ImageKind kFileLocksImage{11, "file-locks"};
inline std::string file_locks_image(const ImageDir& dir) { return dir.file("file-locks.img"); }

// One "lock:" line, as fs/locks.c lock_get_status() prints it:
//   lock:	1: POSIX  ADVISORY  WRITE 2334 fe:00:10952858 10 14
//   lock:	1: OFDLCK ADVISORY  WRITE -1 fe:00:10952861 0 EOF
//   lock:	1: FLOCK  ADVISORY  READ 2334 fe:00:10952859 0 EOF
//   lock:	1: LEASE  BREAKING  UNLCK 2334 fe:00:10952860 0 EOF
// A lease prints the type it is being broken to while it breaks
// (target_leasetype), not the type it has.
struct LockLine {
  std::string kind;      // POSIX, OFDLCK, FLOCK, LEASE (DELEG, ACCESS... are refused)
  std::string state;     // ADVISORY; for a lease ACTIVE, BREAKING or BREAKER
  std::string type;      // READ, WRITE or UNLCK
  long pid = 0;          // the locker's (-1 for OFD locks, 0 if not visible)
  uint64_t ino = 0;
  std::string dev;       // "MAJ:MIN", hex, as printed
  uint64_t start = 0;
  uint64_t end = 0;      // inclusive
  bool to_eof = false;   // "EOF"
};

// Every lock line of an fdinfo text (none: no line at all).
[[nodiscard]] Result<std::vector<LockLine>> parse_lock_lines(const std::string& fdinfo_text);

}  // namespace minicriu
