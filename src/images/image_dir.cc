#include "images/image_dir.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/unique_fd.hpp"

namespace minicriu {

Status ImageDir::check_writable() const {
  struct stat st;
  if (path_.empty()) return fail("no image directory given (use -D DIR)");
  if (::stat(path_.c_str(), &st) != 0)
    return failf_errno("image directory {} is not usable", path_);
  if (!S_ISDIR(st.st_mode)) return failf("image directory {} is not a directory", path_);
  // Root passes access(2) on a read-only mount's directory only by mode bits;
  // creating a file is the real test: an unnamed one (O_TMPFILE), else a
  // name of our own that nothing there may already hold.
  UniqueFd fd(::open(path_.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600));
  if (fd) return {};
  if (errno != EOPNOTSUPP && errno != EISDIR) return failf_errno("image directory {} is not writable", path_);
  std::string probe = fmt::format("{}/.minicriu-probe-{}", path_, ::getpid());
  fd.reset(::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return failf_errno("image directory {} is not writable", path_);
  ::unlink(probe.c_str());
  return {};
}


}  // namespace minicriu
