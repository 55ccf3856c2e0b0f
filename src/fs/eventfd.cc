// eventfd: a 64-bit counter. Dumped from fdinfo, never by reading it (a read
// takes the count away, or one unit of it in semaphore mode); restored by
// creating a new eventfd with the same count and mode.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <climits>

#include "fs/anon_inode.hpp"
#include "kinds/kind.hpp"

namespace minicriu {

namespace {

class EventFdKind final : public Kind {
 public:
  const char* name() const override { return "eventfd"; }

  bool takes(const FdDumpInfo& fd) const override { return is_anon_inode(fd, "eventfd"); }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv&) override {
    const std::string& text = fd.fdinfo.text;
    // "eventfd-count: %16llx" (fs/eventfd.c, eventfd_show_fdinfo): hexadecimal.
    ASSIGN_OR_RETURN(uint64_t count, fdinfo_number(fd, text, "eventfd-count", 16));
    img::EventFd* e = entry.mutable_eventfd();
    e->set_count(count);
    e->set_flags(fd.fdinfo.flags);
    // EFD_SEMAPHORE is not among the file's flags; fdinfo shows it since Linux
    // 6.6. Before that the mode cannot be seen from outside, and an eventfd is
    // taken as a plain counter, which is what almost every program creates.
    if (proc::fdinfo_field(text, "eventfd-semaphore")) {
      ASSIGN_OR_RETURN(uint64_t sem, fdinfo_number(fd, text, "eventfd-semaphore", 10));
      e->set_semaphore(sem != 0);
    }
    return {};
  }

  bool owns(const img::FileEntry& entry) const override { return entry.has_eventfd(); }

  Result<UniqueFd> open(const img::FileEntry& entry) override {
    const img::EventFd& e = entry.eventfd();
    // Close-on-exec is a property of each fd, set by the fd table; our own
    // handle keeps it so that it never leaks into a child.
    int flags = EFD_CLOEXEC;
    if (e.flags() & O_NONBLOCK) flags |= EFD_NONBLOCK;
    if (e.semaphore()) flags |= EFD_SEMAPHORE;
    // eventfd() takes an unsigned int; a larger count is added by a write.
    bool fits = e.count() <= UINT_MAX;
    UniqueFd fd(::eventfd(fits ? static_cast<unsigned>(e.count()) : 0, flags));
    if (!fd) return failf_errno("file {}: cannot create an eventfd", entry.id());
    if (!fits) {
      uint64_t count = e.count();
      if (::write(fd.get(), &count, sizeof(count)) != sizeof(count))
        return failf_errno("file {}: cannot set the eventfd count to {}", entry.id(), count);
    }
    return fd;
  }

  std::string describe(const img::FileEntry& f) const override {
    return fmt::format("eventfd (count {}{}, flags {:#o})", f.eventfd().count(),
                       f.eventfd().semaphore() ? ", semaphore" : "", f.eventfd().flags());
  }
};

}  // namespace

std::unique_ptr<Kind> make_eventfd_kind() { return std::make_unique<EventFdKind>(); }

}  // namespace minicriu
