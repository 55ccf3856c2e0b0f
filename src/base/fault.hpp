// Steps, where a dump or a restore may be cancelled (minicriu::Cancel) and
// where a test may inject a fault.
//
// Fault injection for tests: MINICRIU_FAULT=STEP:N makes the N-th occurrence
// of the step named STEP fail, as if the kernel or the disk had refused it,
// so that a test can walk every step of a dump or a restore and prove that a
// failure at any of them leaves the tree running and nothing behind.
//
// The steps (docs/RELIABILITY.md lists them):
//   PHASE/KIND          each phase of each kind, at its call by KindSet
//                       (take_vma/pipe, check/unix-socket, load/ghost-file...)
//   take/KIND, open/KIND  an fd taken at dump, an entry opened at restore
//   remote-syscall      each syscall a seized thread runs for us
//   parasite-command    each command sent to the parasite (FINI excepted)
//   image-write         each image file created
//   dump/STEP, restore/STEP  the orchestration's own steps
// MINICRIU_FAULT=count makes every step log "fault step STEP:N" (at info,
// -v in the CLI), N its occurrence: what a test walks.
// MINICRIU_FAULT=STEP:N:stall makes the N-th occurrence wait instead, until
// the dump or restore is cancelled (or for 60 s, then fail): a slow step at
// any place, for the tests of SIGTERM and SIGINT. STEP:N:delay=MS makes it
// wait MS ms and go on (a race a test wants to win).
//
// The plan lives for one dump() or restore(), installed on its thread by a
// FaultScope (a thread-local pointer, not a global: two dumps on two threads
// have a plan each). It is read where steps are, deep in ptrace and image
// code, which would otherwise all take a plan as a parameter only for tests.
// A process forked by a restore takes a copy: each task counts its own steps.
// Failure paths (the cure, releasing the tree) run under a FaultPause: a
// fault there would be a second fault, not the one under test.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "base/error.hpp"
#include "base/log.hpp"

namespace minicriu {

class FaultPlan {
 public:
  // From MINICRIU_FAULT: "STEP:N" (N >= 1), "count", or nothing to do (unset,
  // or another fault of the environment's, such as parasite-stall).
  static FaultPlan from_environment();
  static FaultPlan parse(std::string_view spec);

  bool active() const { return counting_ || n_ > 0; }
  // One occurrence of step: an error at the chosen one (stall(): the chosen
  // one says true instead, and the caller waits there).
  [[nodiscard]] Result<bool> hit(std::string_view step, const Logger& log);
  bool stall() const { return stall_; }
  uint64_t delay_ms() const { return delay_ms_; }

 private:
  bool counting_ = false;
  bool stall_ = false;
  uint64_t delay_ms_ = 0;
  std::string step_;
  uint64_t n_ = 0;
  std::map<std::string, uint64_t, std::less<>> seen_;
};

// Installs the plan of one dump or restore on this thread for its lifetime
// (the plan of an enclosing scope comes back after it).
class FaultScope {
 public:
  // cancel (may be null): every step, and check_cancelled() in waits, fail
  // once it is requested.
  FaultScope(const Logger& log, const Cancel* cancel);
  ~FaultScope();
  FaultScope(const FaultScope&) = delete;
  FaultScope& operator=(const FaultScope&) = delete;
  static void* operator new(size_t) = delete;

 private:
  FaultPlan plan_;
  Logger log_;
  const Cancel* cancel_;
  FaultScope* outer_;
  friend Status check_cancelled();
  friend Status fault_point(std::string_view step);
  friend Status fault_point(std::string_view phase, std::string_view kind);
  friend class FaultPause;
};

// No step fails (none is counted) while it lives: the failure paths.
class FaultPause {
 public:
  FaultPause();
  ~FaultPause();
  FaultPause(const FaultPause&) = delete;
  FaultPause& operator=(const FaultPause&) = delete;
  static void* operator new(size_t) = delete;

 private:
  FaultScope* paused_;
};

// One occurrence of a step of the running dump or restore: an error if the
// dump or restore was cancelled, or if the plan says this one fails; else
// nothing.
[[nodiscard]] Status fault_point(std::string_view step);
// An error if the running dump or restore was cancelled (for waits; not a
// step: a wait's iterations are not counted).
[[nodiscard]] Status check_cancelled();

// The step PHASE/KIND, a kind's name as a step names it ("unix socket" ->
// "take/unix-socket"); the name is made only when a plan is in force.
[[nodiscard]] Status fault_point(std::string_view phase, std::string_view kind);
std::string fault_step_name(std::string_view phase, std::string_view kind);

}  // namespace minicriu
