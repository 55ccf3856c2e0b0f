#include "kinds/kind_set.hpp"

#include <sys/socket.h>

#include "base/fault.hpp"
#include "fs/ghost_file.hpp"

namespace minicriu {

Status Kind::take(const FdDumpInfo& fd, img::FileEntry&, DumpEnv&) {
  return failf("{}: the {} kind takes no fds", fd.what, name());
}

Result<UniqueFd> Kind::open(const img::FileEntry& entry) {
  return failf("file {}: the {} kind opens no files", entry.id(), name());
}

Status Kind::map(const img::Vma& vma, void*, int) {
  return failf("vma {:x}-{:x}: the {} kind maps nothing", vma.start(), vma.end(), name());
}

Result<size_t> Kind::read_mapped(const img::Vma& vma, uint64_t, std::span<uint8_t>) const {
  return failf("vma {:x}-{:x}: the {} kind holds no data for it", vma.start(), vma.end(), name());
}

std::string Kind::describe(const img::FileEntry& entry) const {
  return fmt::format("{} (file {})", name(), entry.id());
}

KindSet KindSet::make() {
  KindSet set;
  set.kinds_ = make_registered_kinds();
  return set;
}

Status KindSet::each(std::string_view name, const std::function<Status(Kind&)>& phase) {
  for (auto& k : kinds_) {
    TRY(fault_point(name, k->name()));
    TRY(phase(*k));
  }
  return {};
}

void KindSet::each_void(const std::function<void(Kind&)>& phase) {
  for (auto& k : kinds_) phase(*k);
}

namespace {

// What an fd no kind takes is, in words a user knows.
std::string describe_unsupported(const FdDumpInfo& fd) {
  const std::string& l = fd.link;
  if (l.rfind("pipe:", 0) == 0) return "a pipe";
  if (S_ISFIFO(fd.st.st_mode)) return "a fifo";
  if (l.rfind("socket:", 0) == 0) {
    int domain = -1;
    socklen_t len = sizeof domain;
    if (fd.local_fd < 0 || ::getsockopt(fd.local_fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0)
      return "a socket";
    switch (domain) {
      case AF_NETLINK: return "a netlink socket";
      case AF_PACKET: return "a packet socket";
      default: return "a socket of family " + std::to_string(domain);
    }
  }
  if (l.rfind("anon_inode:", 0) == 0) return "an anonymous-inode file (" + l.substr(11) + ")";
  if (l.rfind("/memfd:", 0) == 0) return "a memfd";
  if (has_deleted_suffix(l))
    return fd.st.st_nlink > 0 ? "a deleted file that still has another name" : "a deleted file";
  return "a file of a kind this version does not support";
}

}  // namespace

Result<Kind*> KindSet::taker(const FdDumpInfo& fd) const {
  for (auto& k : kinds_)
    if (k->takes(fd)) return k.get();
  return failf("{} is {} ({}), which minicriu cannot checkpoint yet; close it in the "
               "application before the dump", fd.what, describe_unsupported(fd), fd.link);
}

Result<Kind*> KindSet::owner(const img::FileEntry& entry) const {
  for (auto& k : kinds_)
    if (k->owns(entry)) return k.get();
  return failf("file {}: no kind of this version restores it", entry.id());
}

Kind* KindSet::mapper(const img::Vma& vma) const {
  for (auto& k : kinds_)
    if (k->maps(vma)) return k.get();
  return nullptr;
}

const Kind* KindSet::reader(const img::Vma& vma) const {
  for (auto& k : kinds_)
    if (k->reads(vma)) return k.get();
  return nullptr;
}

Result<UniqueFd> KindSet::open(const img::FileEntry& entry) const {
  ASSIGN_OR_RETURN(Kind * kind, owner(entry));
  TRY(fault_point("open", kind->name()));
  return kind->open(entry);
}

std::string KindSet::describe(const img::FileEntry& entry) const {
  auto kind = owner(entry);
  if (!kind) return fmt::format("file {} of an unknown kind", entry.id());
  return (*kind)->describe(entry);
}

}  // namespace minicriu
