#include "images/image_set.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <regex>
#include <set>

#include "base/unique_fd.hpp"

namespace minicriu {

namespace {

// The names images have (inventory.img, pages-12.img, shmem-3.data...): the
// files of that shape beside a previous checkpoint's inventory were its
// images, and a new dump replaces them.
bool is_image_name(const std::string& name) {
  static const std::regex shape("[a-z]+(-[a-z]+)?(-[0-9]+)?(\\.[0-9]+)?\\.(img|data)");
  return std::regex_match(name, shape);
}

Status sync_dir(const std::string& path) {
  UniqueFd d(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d || ::fsync(d.get()) != 0) return failf_errno("cannot sync the image directory {}", path);
  return {};
}

}  // namespace

Status ImageSet::commit(ImageWriter& w) {
  TRY(w.sync());
  pending_.push_back(w.path());
  return {};
}

Status ImageSet::commit(RawImageFile& f) {
  TRY(f.sync());
  pending_.push_back(f.path());
  return {};
}

Status ImageSet::publish() {
  std::string inventory = dir_.inventory();
  bool replaces = ::access(inventory.c_str(), F_OK) == 0;
  if (replaces && ::unlink(inventory.c_str()) != 0)
    return failf_errno("cannot remove the previous inventory in {}", dir_.path());
  std::set<std::string> mine;
  bool has_inventory = false;
  for (auto& p : pending_) {
    mine.insert(p.substr(p.rfind('/') + 1));
    if (p == inventory) {
      has_inventory = true;
      continue;
    }
    TRY(rename_image_part(p));
  }
  // Only where a checkpoint was: other files of its shape were its images.
  if (DIR* d = replaces ? ::opendir(dir_.path().c_str()) : nullptr) {
    std::vector<std::string> stale;
    while (dirent* e = ::readdir(d))
      if (is_image_name(e->d_name) && !mine.count(e->d_name)) stale.emplace_back(e->d_name);
    ::closedir(d);
    for (auto& name : stale) ::unlink(dir_.file(name).c_str());
  }
  if (has_inventory) TRY(rename_image_part(inventory));
  pending_.clear();
  return sync_dir(dir_.path());
}

void ImageSet::remove_all() {
  for (auto& p : pending_) ::unlink(image_part_path(p).c_str());
  pending_.clear();
}

}  // namespace minicriu
