// Ghost files: open files whose last name was removed (nlink 0). Their
// contents live only in the kernel, so the dump carries them, sparse (only the
// allocated data), once per inode, within the GhostPolicy; the restore
// recreates each beside its old path under a temporary name, lets every holder
// open and map it, then unlinks it again.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"
#include "fs/ghost_policy.hpp"
#include "images/image_dir.hpp"
#include "images/image_io.hpp"
#include "images/image_set.hpp"
#include "minicriu.pb.h"

namespace minicriu {

inline constexpr ImageKind kGhostsImage{8, "ghosts"};
inline std::string ghosts_image(const ImageDir& dir) { return dir.file("ghosts.img"); }
inline std::string ghost_data_image(const ImageDir& dir, uint32_t id) {
  return dir.file("ghost-" + std::to_string(id) + ".data");
}

// " (deleted)" is what the kernel appends to the name of an unlinked file.
bool has_deleted_suffix(const std::string& link);
std::string strip_deleted_suffix(const std::string& link);

// "file", "directory", "character device", "block device": what a ghost is.
const char* ghost_type_words(uint32_t mode);

// Where an object with no name left, once in the directory parent, comes
// back: in parent if it exists; where it is gone, inside the ghost directory
// recreated for it or for one above it (ghost_dirs: the path at the dump ->
// the recreated one), else in fallback_dir (--ghost-dir) if not empty, else
// in the nearest directory above that exists; "" if none does.
std::string ghost_parent(const std::string& parent, const std::map<std::string, std::string>& ghost_dirs,
                         const std::string& fallback_dir);

// Dump side: the ghosts of one dump, their data files written as they come.
class GhostStore {
 public:
  GhostStore(const ImageDir& dir, GhostPolicy policy, const Logger& log)
      : dir_(dir), policy_(std::move(policy)), log_(log) {}

  // The ghost behind an open file (fd is any open description of it; ours is
  // reopened so the target's offset never moves). `who` names the holder for
  // the refusal line ("pid 12: fd 5").
  [[nodiscard]] Result<uint32_t> add(const std::string& who, int fd, const std::string& link,
                                     const struct stat& st);
  const std::vector<img::GhostFile>& entries() const { return entries_; }
  // The data files and ghosts.img.
  [[nodiscard]] Status commit(ImageSet& images);

 private:
  const ImageDir& dir_;
  GhostPolicy policy_;
  const Logger& log_;
  std::vector<img::GhostFile> entries_;
  std::vector<std::unique_ptr<RawImageFile>> data_;
};

// Restore side: every ghost recreated; unlinked again when this goes, which the
// restore does once every process has opened and mapped what it needs.
class RecreatedGhosts {
 public:
  RecreatedGhosts() = default;
  RecreatedGhosts(const RecreatedGhosts&) = delete;
  RecreatedGhosts& operator=(const RecreatedGhosts&) = delete;
  RecreatedGhosts(RecreatedGhosts&&) = default;
  RecreatedGhosts& operator=(RecreatedGhosts&&) = default;
  ~RecreatedGhosts() { unlink_all(); }

  // Each comes back beside its old path; where that directory is gone, in
  // the ghost of that directory if it is one too, else in fallback_dir (if
  // not empty), else in the nearest directory above that exists.
  [[nodiscard]] static Result<RecreatedGhosts> recreate(const ImageDir& dir,
                                                        const std::vector<img::GhostFile>& ghosts,
                                                        const std::string& fallback_dir);
  const std::map<uint32_t, std::string>& paths() const { return paths_; }
  void unlink_all();

 private:
  std::map<uint32_t, std::string> paths_;
  std::set<uint32_t> dirs_;  // ghosts that are directories (rmdir, not unlink)
};

}  // namespace minicriu
