#include "images/image_set.hpp"

#include <fcntl.h>
#include <unistd.h>

#include "base/unique_fd.hpp"

namespace minicriu {

Status ImageSet::commit(ImageWriter& w) {
  TRY(w.commit());
  written_.push_back(w.path());
  return {};
}

Status ImageSet::commit(RawImageFile& f) {
  TRY(f.commit());
  written_.push_back(f.path());
  return {};
}

Status ImageSet::sync_dir() const {
  UniqueFd d(::open(dir_.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d || ::fsync(d.get()) != 0) return failf_errno("cannot sync the image directory {}", dir_.path());
  return {};
}

void ImageSet::remove_all() {
  for (auto& p : written_) ::unlink(p.c_str());
  written_.clear();
}

}  // namespace minicriu
