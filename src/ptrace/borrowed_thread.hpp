// A scope in which a stopped thread runs code of ours: remote syscalls, the
// parasite, the munmap of the restorer tail. Entering saves the thread's
// registers and signal mask and blocks every signal (SIGKILL and SIGSTOP
// cannot be), so that no handler of the target runs on our registers; leaving,
// by any path, puts both back. Like every guard here it cannot be copied or
// allocated on the heap: it lives on the stack (or inside the session that
// owns the whole run), and its destructor always runs.
#pragma once

#include <cstdint>

#include "arch/x86_64/regs.hpp"
#include "base/error.hpp"
#include "ptrace/tracee.hpp"

namespace minicriu {

class BorrowedThread {
 public:
  explicit BorrowedThread(Tracee& thread) : thread_(thread) {}
  BorrowedThread(const BorrowedThread&) = delete;
  BorrowedThread& operator=(const BorrowedThread&) = delete;
  static void* operator new(size_t) = delete;
  ~BorrowedThread() { (void)give_back(); }

  // Must succeed before run(): saves what give_back() puts back.
  [[nodiscard]] Status enter();
  bool entered() const { return entered_; }

  Tracee& thread() const { return thread_; }
  // The registers the thread had: the base for the ones we make it run.
  const arch::Regs& saved_regs() const { return saved_regs_; }
  uint64_t saved_sigmask() const { return saved_sigmask_; }

  // Loads regs (made from saved_regs() with arch::set_syscall or set_call),
  // for the thread to run when it is resumed.
  [[nodiscard]] Status load(const arch::Regs& regs) const;

  // Puts registers and signal mask back now (the thread must be stopped);
  // the first failure, after trying both. Does nothing a second time.
  [[nodiscard]] Status give_back();

 private:
  Tracee& thread_;
  arch::Regs saved_regs_{};
  uint64_t saved_sigmask_ = 0;
  bool entered_ = false;
};

}  // namespace minicriu
