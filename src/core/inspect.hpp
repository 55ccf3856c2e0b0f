// A checkpoint opened to be looked at, not restored (show, show --backtrace,
// coredump): every image read, checked against the others and against the
// machine it describes (validate_images), and every kind's images loaded. A
// bad checkpoint is one error line naming the directory, never a crash.
#pragma once

#include <memory>
#include <string>

#include "base/log.hpp"
#include "images/checkpoint.hpp"
#include "images/image_dir.hpp"
#include "kinds/kind_set.hpp"

namespace minicriu {

struct InspectedCheckpoint {
  // Kinds keep references into it: it stays where it was made.
  InspectedCheckpoint(const InspectedCheckpoint&) = delete;
  InspectedCheckpoint& operator=(const InspectedCheckpoint&) = delete;

  [[nodiscard]] static Result<std::unique_ptr<InspectedCheckpoint>> load(const std::string& images_dir,
                                                                         const Logger& log);

  ImageDir dir;
  Checkpoint checkpoint;
  KindSet kinds;
  RestoreOptions no_options;
  RestoreEnv env;

 private:
  InspectedCheckpoint(std::string images_dir, const Logger& log);
};

}  // namespace minicriu
