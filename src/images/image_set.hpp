// The image files one dump writes, so that a dump that fails removes every
// one of them and leaves no directory that could pass for a checkpoint.
#pragma once

#include <string>
#include <vector>

#include "base/error.hpp"
#include "images/image_dir.hpp"
#include "images/image_io.hpp"

namespace minicriu {

class ImageSet {
 public:
  explicit ImageSet(const ImageDir& dir) : dir_(dir) {}
  ImageSet(const ImageSet&) = delete;
  ImageSet& operator=(const ImageSet&) = delete;

  const ImageDir& dir() const { return dir_; }

  // A stream image of msgs, written, synced and visible under its name.
  template <typename M>
  [[nodiscard]] Status write(const std::string& path, ImageKind kind, const std::vector<M>& msgs) {
    ASSIGN_OR_RETURN(auto w, ImageWriter::create(path, kind));
    for (auto& m : msgs) TRY(w.write(m));
    return commit(w);
  }
  [[nodiscard]] Status commit(ImageWriter& w);
  [[nodiscard]] Status commit(RawImageFile& f);

  // fsync of the directory: the names of what was committed are durable.
  [[nodiscard]] Status sync_dir() const;
  // Removes every image committed so far (a failed dump).
  void remove_all();

 private:
  const ImageDir& dir_;
  std::vector<std::string> written_;
};

}  // namespace minicriu
