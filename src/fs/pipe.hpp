// Pipes and fifos (one kernel object: a fifo is a pipe with a name): every end
// an open file description (PipeFile, FifoFile), every pipe's queued bytes
// once (PipeData), read at dump without consuming them (tee), written back at
// restore before anyone can read. A pipe also held outside the tree (a rank's
// stdio, whose other ends its runtime holds) is external once accepted: at
// restore what the caller gives stands in for it, and the bytes the tree had
// not read are written into that. The kind is in pipe.cc; these are its parts.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "base/error.hpp"
#include "base/external.hpp"
#include "base/log.hpp"
#include "base/unique_fd.hpp"
#include "images/image_dir.hpp"
#include "images/image_io.hpp"
#include "images/image_set.hpp"
#include "minicriu.pb.h"
#include "proc/proc_parse.hpp"

namespace minicriu {

inline constexpr ImageKind kPipesImage{9, "pipes"};
inline std::string pipes_image(const ImageDir& dir) { return dir.file("pipes.img"); }
inline std::string pipes_data_image(const ImageDir& dir) { return dir.file("pipes-data.img"); }
// How /proc names a pipe's fd, and the key of an external one
// (--inherit-fd fd[N]:pipe:[INODE]).
inline std::string pipe_link(uint64_t ino) { return fmt::format("pipe:[{}]", ino); }
// The end a tree holds of an external pipe, as ExternalObject::type says it.
inline const char* end_name(bool reads) { return reads ? "read" : "write"; }
// Bytes queued in a pipe (FIONREAD), -1 if it cannot say.
int queued_bytes(int fd);

// Dump side: the pipes of one dump and their queued bytes.
// The external pipes' members are in pipe_external.cc.
class PipeStore {
 public:
  explicit PipeStore(const ImageDir& dir) : dir_(dir) {}
  // Records the pipe behind local_fd (either end) once, with its bytes.
  [[nodiscard]] Status add(const std::string& what, int local_fd, uint64_t pipe_ino);
  // An end the tree holds: fd of pid, open with flags (O_ACCMODE), its /proc
  // link ("pipe:[N]", or a fifo's path).
  void add_end(uint64_t pipe_ino, pid_t pid, int fd, uint32_t flags, const std::string& what,
               const std::string& link);
  const std::vector<img::PipeData>& entries() const { return entries_; }
  // Pipes that processes outside the tree hold too (a scan of /proc/*/fd of
  // every process not in `tree`, ourselves included: a runtime linking us
  // may hold the other end): each must be accepted by the policy, held by the
  // tree at one end only, and, if the tree writes to it, have nothing queued
  // (those bytes are its reader's); else an error naming the first one, who
  // holds it outside and the options. Accepted ones are marked external.
  [[nodiscard]] Status check_outside(const std::set<pid_t>& tree, const ExternalPolicy& policy);
  // A dump that kills the tree: the queue of each external pipe the tree
  // reads from is watched from now on (through a read end of our own), since
  // the process outside may still write into it.
  [[nodiscard]] Status watch_external();
  // Fails if bytes came into a watched pipe since its queue was read: the
  // checkpoint would miss them.
  [[nodiscard]] Status check_watched() const;
  // After the kill: bytes that came in since check_watched() are named in a
  // warning (the restored tree will not read them). Drops the watches.
  void warn_late_bytes(const Logger& log);
  void drop_watches() { watches_.clear(); }
  // The bytes and pipes.img.
  [[nodiscard]] Status commit(ImageSet& images);

 private:
  struct End {
    pid_t pid;
    int fd;
    uint32_t flags;
    std::string what;  // "pid 12: fd 0"
    std::string link;
  };
  img::PipeData* entry(uint64_t pipe_ino);
  const img::PipeData* entry(uint64_t pipe_ino) const;
  [[nodiscard]] Status check_one(img::PipeData& pipe, const proc::FdHolder& outside,
                                 const ExternalPolicy& policy);

  const ImageDir& dir_;
  std::vector<img::PipeData> entries_;
  std::map<uint64_t, std::vector<End>> ends_;  // the tree's ends, by pipe
  std::map<uint64_t, UniqueFd> watches_;       // by pipe: a read end of ours
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
  // The keys ("pipe:[INODE]") of the external pipes.
  std::set<std::string> external_keys() const;
  // What stands in for each external pipe (--inherit-fd, the hook), taken
  // before anything of the tree is made and checked: a pipe or fifo end of
  // the tree's direction, whose queue lets the carried bytes come first (or
  // the very pipe of the dump, kept open outside, still holding them). Fails
  // naming the pipe and --inherit-fd when one has none.
  [[nodiscard]] Status take_stand_ins(const ExternalStandIns& stand_ins);
  // The bytes the tree had not read of each external pipe it reads from,
  // written into its stand-in: every holder has its end, the tree is about
  // to run.
  [[nodiscard]] Status fill_stand_ins();
  // A new open file description of the given end of the pipe.
  [[nodiscard]] Result<UniqueFd> open_end(const img::PipeFile& end);
  // A named pipe opened by its path with its flags, its bytes put back first.
  [[nodiscard]] Result<UniqueFd> open_fifo(const img::FifoFile& fifo);
  // The name a fifo with no name left was made again under (FifoFile.deleted).
  void set_fifo_path(uint64_t ino, std::string path) { fifo_paths_[ino] = std::move(path); }
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
  struct StandIn {
    UniqueFd fd;
    bool fill = false;  // the carried bytes still have to be written into it
  };
  [[nodiscard]] Result<Pipe*> create(uint64_t ino);
  [[nodiscard]] Status write_data(uint64_t ino, int write_end);
  // A new open file description of the stand-in's pipe, with flags.
  [[nodiscard]] Result<UniqueFd> open_stand_in(uint64_t ino, uint32_t flags) const;

  std::map<uint64_t, std::string> fifo_paths_;
  std::string data_path_;
  std::map<uint64_t, img::PipeData> data_;
  std::map<uint64_t, uint64_t> data_offset_;
  std::map<uint64_t, Pipe> pipes_;
  // One O_RDWR description per fifo: keeps both sides open until every holder
  // has its own, so opening never blocks and the bytes are not lost.
  std::map<uint64_t, UniqueFd> fifo_anchors_;
  std::map<uint64_t, StandIn> stand_ins_;  // external pipes, by inode
  int fd_floor_ = 0;
};

}  // namespace minicriu
