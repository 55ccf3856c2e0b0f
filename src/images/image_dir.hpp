// The names of the files in one checkpoint directory.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "base/error.hpp"

namespace minicriu {

class ImageDir {
 public:
  explicit ImageDir(std::string path) : path_(std::move(path)) {}

  const std::string& path() const { return path_; }
  std::string inventory() const { return path_ + "/inventory.img"; }
  std::string pstree() const { return path_ + "/pstree.img"; }
  std::string files() const { return path_ + "/files.img"; }
  // A file of the directory by name: kinds name their own images.
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  std::string core(pid_t pid) const { return per_pid("core", pid); }
  std::string mm(pid_t pid) const { return per_pid("mm", pid); }
  std::string pagemap(pid_t pid) const { return per_pid("pagemap", pid); }
  std::string pages(pid_t pid) const { return per_pid("pages", pid); }
  // The page file of one lane (PagemapEntry.lane): 0 is pages(pid).
  std::string pages(pid_t pid, uint32_t lane) const {
    return lane == 0 ? pages(pid) : path_ + "/pages-" + std::to_string(pid) + "." + std::to_string(lane) + ".img";
  }
  // Lanes a page image may have: more workers than that write into shared files.
  static constexpr uint32_t kMaxPageLanes = 16;
  std::string fdinfo(pid_t pid) const { return per_pid("fdinfo", pid); }

  // The directory exists, is a directory, and a file can be created in it.
  [[nodiscard]] Status check_writable() const;

 private:
  std::string per_pid(const char* kind, pid_t pid) const {
    return path_ + "/" + kind + "-" + std::to_string(pid) + ".img";
  }
  std::string path_;
};

}  // namespace minicriu
