// signalfd: a set of signals read as records. The file holds only its mask;
// the signals it reads are the pending signals of the reading thread and its
// process, which the process core carries. Dumped from fdinfo, restored with
// signalfd(-1, mask, flags).
#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>

#include <cstring>

#include "fs/anon_inode.hpp"
#include "kinds/kind.hpp"

namespace minicriu {

namespace {

class SignalFdKind final : public Kind {
 public:
  const char* name() const override { return "signalfd"; }

  bool takes(const FdDumpInfo& fd) const override { return is_anon_inode(fd, "signalfd"); }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv&) override {
    // "sigmask: %016llx" (fs/signalfd.c, signalfd_show_fdinfo), bit n-1 for signal n.
    ASSIGN_OR_RETURN(uint64_t mask, fdinfo_number(fd, fd.fdinfo.text, "sigmask", 16));
    img::SignalFd* s = entry.mutable_signalfd();
    s->set_mask(mask);
    s->set_flags(fd.fdinfo.flags);
    return {};
  }

  bool owns(const img::FileEntry& entry) const override { return entry.has_signalfd(); }

  Result<UniqueFd> open(const img::FileEntry& entry) override {
    const img::SignalFd& s = entry.signalfd();
    sigset_t mask;
    ::sigemptyset(&mask);
    // The kernel's sigset is 64 bits on x86_64; glibc's sigaddset refuses the
    // two real-time signals it keeps for itself (32, 33), so the set is built
    // from raw words instead.
    static_assert(sizeof(mask) >= sizeof(uint64_t));
    uint64_t bits = s.mask();
    std::memcpy(&mask, &bits, sizeof(bits));
    int flags = SFD_CLOEXEC;  // our handle only; the fd table sets close-on-exec per fd
    if (s.flags() & O_NONBLOCK) flags |= SFD_NONBLOCK;
    UniqueFd fd(::signalfd(-1, &mask, flags));
    if (!fd) return failf_errno("file {}: cannot create a signalfd for mask {:#x}", entry.id(), bits);
    return fd;
  }

  std::string describe(const img::FileEntry& f) const override {
    return fmt::format("signalfd (mask {:#x}, flags {:#o})", f.signalfd().mask(), f.signalfd().flags());
  }
};

}  // namespace

std::unique_ptr<Kind> make_signalfd_kind() { return std::make_unique<SignalFdKind>(); }

}  // namespace minicriu
