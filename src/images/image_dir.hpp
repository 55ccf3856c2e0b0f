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
  std::string pipes() const { return path_ + "/pipes.img"; }
  std::string pipes_data() const { return path_ + "/pipes-data.img"; }
  std::string shmem() const { return path_ + "/shmem.img"; }
  std::string shmem_data(uint32_t id) const { return path_ + "/shmem-" + std::to_string(id) + ".data"; }
  std::string ghosts() const { return path_ + "/ghosts.img"; }
  std::string ghost_data(uint32_t id) const { return path_ + "/ghost-" + std::to_string(id) + ".data"; }
  std::string core(pid_t pid) const { return per_pid("core", pid); }
  std::string mm(pid_t pid) const { return per_pid("mm", pid); }
  std::string pagemap(pid_t pid) const { return per_pid("pagemap", pid); }
  std::string pages(pid_t pid) const { return per_pid("pages", pid); }
  std::string fdinfo(pid_t pid) const { return per_pid("fdinfo", pid); }

  // The directory exists, is a directory, and a file can be created in it.
  [[nodiscard]] Status check_writable() const;
  // Removes a previous checkpoint's inventory first, so that a dump that fails
  // midway never leaves a directory that looks complete.
  [[nodiscard]] Status invalidate() const;

 private:
  std::string per_pid(const char* kind, pid_t pid) const {
    return path_ + "/" + kind + "-" + std::to_string(pid) + ".img";
  }
  std::string path_;
};

}  // namespace minicriu
