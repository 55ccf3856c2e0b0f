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
  // creating a file is the real test.
  std::string probe = path_ + "/.minicriu-probe";
  UniqueFd fd(::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return failf_errno("image directory {} is not writable", path_);
  ::unlink(probe.c_str());
  return {};
}

Status ImageDir::invalidate() const {
  if (::unlink(inventory().c_str()) != 0 && errno != ENOENT)
    return failf_errno("cannot remove the old inventory in {}", path_);
  return {};
}

}  // namespace minicriu
