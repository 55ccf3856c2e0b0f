// The image files one dump writes. Each is written and synced under a
// temporary name (IMAGE.part); publish() makes them all visible at the end,
// the inventory last, so a dump that fails leaves the directory as it found
// it, a previous checkpoint there included, and remove_all() takes back
// every temporary file.
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
  ~ImageSet() { remove_all(); }

  const ImageDir& dir() const { return dir_; }

  // A stream image of msgs, written and synced, to be published.
  template <typename M>
  [[nodiscard]] Status write(const std::string& path, ImageKind kind, const std::vector<M>& msgs) {
    ASSIGN_OR_RETURN(auto w, ImageWriter::create(path, kind));
    for (auto& m : msgs) TRY(w.write(m));
    return commit(w);
  }
  [[nodiscard]] Status commit(ImageWriter& w);
  [[nodiscard]] Status commit(RawImageFile& f);

  // Every committed image under its name, replacing a previous checkpoint's:
  // its inventory goes first (so that no mix of the two is ever taken for a
  // checkpoint), its other images that this one does not rewrite go too,
  // the new inventory comes last, and the directory is synced. Renames and
  // unlinks only: nothing here needs space.
  [[nodiscard]] Status publish();
  // Takes back every committed image not yet published (a failed dump).
  void remove_all();
  // The final paths of the images committed and not yet published (each is
  // at image_part_path() until publish()): what a dump sends a page server.
  const std::vector<std::string>& pending() const { return pending_; }

 private:
  const ImageDir& dir_;
  std::vector<std::string> pending_;  // final paths; the files are at image_part_path()
};

}  // namespace minicriu
