// Pipes and fifos (one kernel object: a fifo is a pipe with a name): every end
// an open file description (PipeFile, FifoFile), every pipe's queued bytes
// once (PipeData), read at dump without consuming them (tee), written back at
// restore before anyone can read. The kind is in pipe.cc; these are its parts.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "images/image_dir.hpp"
#include "images/image_io.hpp"
#include "images/image_set.hpp"
#include "minicriu.pb.h"

namespace minicriu {

inline constexpr ImageKind kPipesImage{9, "pipes"};
inline std::string pipes_image(const ImageDir& dir) { return dir.file("pipes.img"); }
inline std::string pipes_data_image(const ImageDir& dir) { return dir.file("pipes-data.img"); }

// Dump side: the pipes of one dump and their queued bytes.
class PipeStore {
 public:
  explicit PipeStore(const ImageDir& dir) : dir_(dir) {}
  // Records the pipe behind local_fd (either end) once, with its bytes.
  [[nodiscard]] Status add(const std::string& what, int local_fd, uint64_t pipe_ino);
  const std::vector<img::PipeData>& entries() const { return entries_; }
  // Pipes that processes outside the tree hold too: what holds them, for a
  // refusal. Scans /proc/*/fd of every process not in `tree`.
  [[nodiscard]] Result<std::string> find_external_holder(const std::set<pid_t>& tree) const;
  // The bytes and pipes.img.
  [[nodiscard]] Status commit(ImageSet& images);

 private:
  const ImageDir& dir_;
  std::vector<img::PipeData> entries_;
  std::map<uint64_t, std::string> first_holder_;  // for messages
  std::unique_ptr<RawImageFile> data_;
};

// Restore side: each pipe created once, its bytes written back, its ends
// handed out as the fds that held them ask. Ends nobody asked for are closed
// with this object, so a reader still sees EOF when the last writer goes.
class PipeRestorer {
 public:
  PipeRestorer() = default;
  PipeRestorer(const PipeRestorer&) = delete;
  PipeRestorer& operator=(const PipeRestorer&) = delete;
  [[nodiscard]] static Result<std::unique_ptr<PipeRestorer>> load(const ImageDir& dir);
  // A new open file description of the given end of the pipe.
  [[nodiscard]] Result<UniqueFd> open_end(const img::PipeFile& end);
  // A named pipe opened by its path with its flags, its bytes put back first.
  [[nodiscard]] Result<UniqueFd> open_fifo(const img::FifoFile& fifo);
  // Every pipe now, with its bytes, kept at or above fd_floor (see
  // RestoreEnv::fd_floor): before the processes of a tree are created, so
  // that all of them inherit the same pipes.
  [[nodiscard]] Status create_all(int fd_floor);
  // What pipes.img holds, by pipe inode.
  const std::map<uint64_t, img::PipeData>& pipes() const { return data_; }

 private:
  struct Pipe {
    UniqueFd read_end, write_end;
    bool read_given = false, write_given = false;
  };
  [[nodiscard]] Result<Pipe*> create(uint64_t ino);
  [[nodiscard]] Status write_data(uint64_t ino, int write_end);

  std::string data_path_;
  std::map<uint64_t, img::PipeData> data_;
  std::map<uint64_t, uint64_t> data_offset_;
  std::map<uint64_t, Pipe> pipes_;
  // One O_RDWR description per fifo: keeps both sides open until every holder
  // has its own, so opening never blocks and the bytes are not lost.
  std::map<uint64_t, UniqueFd> fifo_anchors_;
  int fd_floor_ = 0;
};

}  // namespace minicriu
