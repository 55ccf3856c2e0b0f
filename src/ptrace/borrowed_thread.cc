#include "ptrace/borrowed_thread.hpp"

#include "base/journal.hpp"

namespace minicriu {

Status BorrowedThread::enter() {
  if (entered_) return fail("thread borrowed twice");
  ASSIGN_OR_RETURN(saved_regs_, thread_.get_regs());
  ASSIGN_OR_RETURN(saved_sigmask_, thread_.get_sigmask());
  // On disk before anything changes: a guardian puts them back if we die.
  TRY(journal_note(fmt::format("regs {} {} {} {:x}", thread_.pid(), thread_.tid(), hex_bytes(&saved_regs_, sizeof(saved_regs_)),
                               saved_sigmask_)));
  // From here on give_back() has something to put back, even if blocking fails.
  entered_ = true;
  return thread_.set_sigmask(~0ull);
}

Status BorrowedThread::load(const arch::Regs& regs) const {
  if (!entered_) return fail("registers loaded into a thread that was not borrowed");
  return thread_.set_regs(regs);
}

Status BorrowedThread::give_back() {
  if (!entered_) return {};
  entered_ = false;
  Status regs = thread_.set_regs(saved_regs_);
  Status mask = thread_.set_sigmask(saved_sigmask_);
  TRY(regs);
  TRY(mask);
  return journal_note(fmt::format("regs-back {}", thread_.tid()));
}

}  // namespace minicriu
