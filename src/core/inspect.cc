#include "core/inspect.hpp"

#include "restorer/validate.hpp"

namespace minicriu {

InspectedCheckpoint::InspectedCheckpoint(std::string images_dir, const Logger& log)
    : dir(std::move(images_dir)), kinds(KindSet::make()), env{no_options, dir, checkpoint, log} {}

Result<std::unique_ptr<InspectedCheckpoint>> InspectedCheckpoint::load(const std::string& images_dir,
                                                                       const Logger& log) {
  std::unique_ptr<InspectedCheckpoint> c(new InspectedCheckpoint(images_dir, log));
  auto loaded = [&]() -> Status {
    ASSIGN_OR_RETURN(c->checkpoint, load_checkpoint(c->dir));
    TRY(validate_images(c->checkpoint, c->kinds));
    return c->kinds.each("load", [&](Kind& k) { return k.load(c->env); });
  }();
  if (!loaded) return std::unexpected(loaded.error().context(fmt::format("{} is not a readable checkpoint", c->dir.path())));
  return c;
}

}  // namespace minicriu
