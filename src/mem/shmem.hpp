// Shared memory objects: anonymous shared mappings (MAP_SHARED|MAP_ANONYMOUS,
// shmem behind "/dev/zero (deleted)") and memfds. Each object is dumped once,
// from the object itself (its pages, sparse), however many processes map it,
// and created once at restore, so that after restore a write by one process is
// seen by the others again.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <map>
#include <memory>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/unique_fd.hpp"
#include "images/image_dir.hpp"
#include "images/image_io.hpp"
#include "images/image_set.hpp"
#include "mem/lazy_shmem.hpp"
#include "minicriu.pb.h"

namespace minicriu {

inline constexpr ImageKind kShmemImage{10, "shmem"};
inline std::string shmem_image(const ImageDir& dir) { return dir.file("shmem.img"); }
inline std::string shmem_data_image(const ImageDir& dir, uint32_t id) {
  return dir.file("shmem-" + std::to_string(id) + ".data");
}

class ShmemStore {
 public:
  ShmemStore(const ImageDir& dir, const Logger& log) : dir_(dir), log_(log) {}
  // The object behind fd (a memfd fd, or a mapping opened through map_files),
  // dumped the first time its inode is seen.
  [[nodiscard]] Result<uint32_t> add(const std::string& what, int fd, const struct stat& st,
                                     bool memfd, const std::string& name);
  // The object a shared anonymous or memfd mapping maps (by map_files).
  [[nodiscard]] Result<uint32_t> add_mapping(pid_t pid, uint64_t start, uint64_t end,
                                             const std::string& path);
  const std::vector<img::ShmemObject>& entries() const { return entries_; }
  // The objects' data and shmem.img.
  [[nodiscard]] Status commit(ImageSet& images);

 private:
  [[nodiscard]] Status describe_sysv(const std::string& what, int shmid, img::ShmemObject& o);

  const ImageDir& dir_;
  const Logger& log_;
  std::vector<img::ShmemObject> entries_;
  std::vector<std::unique_ptr<RawImageFile>> data_;
};

// "/memfd:NAME (deleted)" -> NAME; empty if the text is not a memfd's.
std::string memfd_name(const std::string& link);

class ShmemRestorer {
 public:
  explicit ShmemRestorer(const ImageDir& dir) : dir_(dir.path()) {}
  ~ShmemRestorer();
  ShmemRestorer(const ShmemRestorer&) = delete;
  ShmemRestorer& operator=(const ShmemRestorer&) = delete;
  [[nodiscard]] static Result<std::unique_ptr<ShmemRestorer>> load(const ImageDir& dir);
  // An fd on the object, created and filled on first use; owned by us.
  [[nodiscard]] Result<int> object_fd(uint32_t id);
  // The object's image entry; null if there is none.
  const img::ShmemObject* object(uint32_t id) const {
    auto it = objects_.find(id);
    return it == objects_.end() ? nullptr : &it->second;
  }
  // Seals go on last, once every task of the tree has made its mappings:
  // F_SEAL_FUTURE_WRITE forbids new writable shared mappings, F_SEAL_WRITE
  // any shared mapping that may write. Seals already on are left alone
  // (F_SEAL_SEAL forbids adding them twice).
  [[nodiscard]] Status seal_all();
  const std::map<uint32_t, img::ShmemObject>& objects() const { return objects_; }
  // Once every process is attached: System V segments that were removed
  // (IPC_RMID) at the dump are removed again. Until then, a failed restore
  // removes every segment it made.
  [[nodiscard]] Status finish();
  // restore --lazy: these objects are made with only the data no lazy
  // mapping covers; the lazy pager brings the rest (lazy_shmem.hpp).
  void set_lazy(LazyShmemPlan plan) { lazy_ = std::move(plan); }
  // Every object now, kept at or above fd_floor (see RestoreEnv::fd_floor):
  // before the processes of a tree are created, so that all of them inherit
  // the same objects.
  [[nodiscard]] Status create_all(int fd_floor);

 private:
  ImageDir dir_;
  std::map<uint32_t, img::ShmemObject> objects_;
  [[nodiscard]] Result<UniqueFd> create_sysv(const img::ShmemObject& obj);

  std::map<uint32_t, UniqueFd> fds_;
  LazyShmemPlan lazy_;
  std::vector<int> sysv_created_;
  int fd_floor_ = 0;
};

}  // namespace minicriu
