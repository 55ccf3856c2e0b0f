#include "ptrace/tracee_memory.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <string>

namespace minicriu {

Result<TraceeMemory> TraceeMemory::open(pid_t pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/mem";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd) return failf_errno("pid {}: cannot open {}", pid, path);
  return TraceeMemory(pid, std::move(fd));
}

size_t TraceeMemory::read_some(RemotePtr<> at, void* buf, size_t size) const {
  char* p = static_cast<char*>(buf);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd_.get(), p + done, size - done, static_cast<off_t>(at.addr() + done));
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) errno = ESRCH;  // mem_rw() reads nothing once the process has no mm left (it exited)
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

Status TraceeMemory::read_bytes(RemotePtr<> at, void* buf, size_t size) const {
  if (read_some(at, buf, size) < size) return failf_errno("pid {}: cannot read {} bytes at {}", pid_, size, at);
  return {};
}

Status TraceeMemory::write_bytes(RemotePtr<> at, const void* buf, size_t size) const {
  const char* p = static_cast<const char*>(buf);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pwrite(fd_.get(), p + done, size - done, static_cast<off_t>(at.addr() + done));
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) errno = ESRCH;
    if (n <= 0) return failf_errno("pid {}: cannot write {} bytes at {}", pid_, size, at);
    done += static_cast<size_t>(n);
  }
  return {};
}

}  // namespace minicriu
