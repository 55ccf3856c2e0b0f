#include "fs/ghost_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sys/sysmacros.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>

#include "base/paths.hpp"
#include "base/unique_fd.hpp"
#include "fs/regular_file.hpp"
#include "images/checkpoint.hpp"
#include "kinds/kind.hpp"
#include "fs/sparse_data.hpp"

namespace minicriu {

namespace {

constexpr const char kDeleted[] = " (deleted)";
constexpr size_t kDeletedLen = sizeof(kDeleted) - 1;

}  // namespace

bool has_deleted_suffix(const std::string& link) {
  return link.size() > kDeletedLen && link.compare(link.size() - kDeletedLen, kDeletedLen, kDeleted) == 0;
}

std::string strip_deleted_suffix(const std::string& link) {
  return has_deleted_suffix(link) ? link.substr(0, link.size() - kDeletedLen) : link;
}

Result<uint32_t> GhostStore::add(const std::string& who, int fd, const std::string& link,
                                 const struct stat& st) {
  for (auto& g : entries_)
    if (g.dev() == st.st_dev && g.ino() == st.st_ino) return g.id();
  std::string path = strip_deleted_suffix(link);
  std::string what = fmt::format("{}: ghost {} {}", who, ghost_type_words(st.st_mode), path);
  // Only a regular file has data: a removed directory was empty, a device
  // node is its numbers.
  std::vector<img::DataExtent> extents;
  UniqueFd own;
  if (S_ISREG(st.st_mode)) {
    // A description of our own: SEEK_DATA on the target's would move its offset.
    own.reset(::open(fmt::format("/proc/self/fd/{}", fd).c_str(), O_RDONLY | O_CLOEXEC));
    if (!own) return failf_errno("{}: cannot reopen it", what);
    ASSIGN_OR_RETURN(extents, data_extents(own.get(), static_cast<uint64_t>(st.st_size), what));
  }
  uint64_t allocated = 0;
  for (auto& e : extents) allocated += e.length();
  if (auto ok = policy_.decide(path, allocated); !ok)
    return std::unexpected(ok.error().context(what));

  img::GhostFile g;
  g.set_id(static_cast<uint32_t>(entries_.size() + 1));
  g.set_path(path);
  g.set_size(static_cast<uint64_t>(st.st_size));
  g.set_allocated(allocated);
  g.set_mode(st.st_mode);
  g.set_uid(st.st_uid);
  g.set_gid(st.st_gid);
  g.set_mtime_ns(static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec);
  g.set_dev(st.st_dev);
  g.set_ino(st.st_ino);
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) g.set_rdev(st.st_rdev);
  if (!S_ISREG(st.st_mode)) g.set_size(0);
  ASSIGN_OR_RETURN(auto data, RawImageFile::create(ghost_data_image(dir_, g.id())));
  if (own) TRY(copy_extents_out(data.fd(), own.get(), extents, what));
  for (auto& e : extents) *g.add_extents() = e;
  log_.info("{}: {} of data in {} extent(s), {} apparent", what, format_size(allocated),
            extents.size(), format_size(g.size()));
  data_.push_back(std::make_unique<RawImageFile>(std::move(data)));
  entries_.push_back(std::move(g));
  return entries_.back().id();
}

Status GhostStore::commit(ImageSet& images) {
  for (auto& d : data_) TRY(images.commit(*d));
  data_.clear();
  return images.write(ghosts_image(dir_), kGhostsImage, entries_);
}

std::string ghost_parent(const std::string& parent, const std::map<std::string, std::string>& ghost_dirs,
                         const std::string& fallback_dir) {
  std::error_code ec;
  if (!parent.empty() && std::filesystem::is_directory(parent, ec)) return parent;
  for (std::filesystem::path up = parent; !up.empty() && up != up.root_path(); up = up.parent_path())
    if (auto it = ghost_dirs.find(up.string()); it != ghost_dirs.end()) return it->second;
  if (!fallback_dir.empty()) return fallback_dir;
  for (std::filesystem::path up = std::filesystem::path(parent).parent_path();; up = up.parent_path()) {
    if (std::filesystem::is_directory(up, ec)) return up.string();
    if (up.empty() || up == up.root_path()) return "";
  }
}

const char* ghost_type_words(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFDIR: return "directory";
    case S_IFCHR: return "character device";
    case S_IFBLK: return "block device";
    default: return "file";
  }
}

Result<RecreatedGhosts> RecreatedGhosts::recreate(const ImageDir& dir,
                                                  const std::vector<img::GhostFile>& ghosts,
                                                  const std::string& fallback_dir) {
  RecreatedGhosts out;
  // Directories first, outer ones before inner ones: what was in a removed
  // directory comes back in its ghost.
  std::vector<const img::GhostFile*> order;
  for (auto& g : ghosts) order.push_back(&g);
  std::stable_sort(order.begin(), order.end(), [](const img::GhostFile* a, const img::GhostFile* b) {
    bool da = S_ISDIR(a->mode()), db = S_ISDIR(b->mode());
    if (da != db) return da;
    return da && a->path().size() < b->path().size();
  });
  std::map<std::string, std::string> ghost_dirs;  // the path at the dump -> the recreated one
  for (const img::GhostFile* gp : order) {
    const img::GhostFile& g = *gp;
    if (!is_canonical_path(g.path()))
      return failf("ghost file {:?}: not an absolute path without . or .. components; the images are damaged",
                   g.path());
    uint32_t type = g.mode() & S_IFMT;
    if (type != S_IFREG && type != S_IFDIR && type != S_IFCHR && type != S_IFBLK)
      return failf("ghost file {}: mode {:#o} is no type minicriu recreates; the images are damaged", g.path(),
                   g.mode());
    std::string what = fmt::format("ghost {} {}", ghost_type_words(g.mode()), g.path());
    std::string wanted = std::filesystem::path(g.path()).parent_path();
    std::string parent = ghost_parent(wanted, ghost_dirs, fallback_dir);
    if (parent.empty())
      return failf("{}: its directory {} is gone and no directory above it is left; give another with "
                   "--ghost-dir DIR", what, wanted);
    auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    std::string tmp = fmt::format("{}/.minicriu-ghost-{}-{}-{:x}", parent, g.id(), ::getpid(), stamp);
    if (type == S_IFDIR) {
      if (::mkdir(tmp.c_str(), 0700) != 0) return failf_errno("{}: cannot recreate it as {}", what, tmp);
      out.paths_[g.id()] = tmp;
      out.dirs_.insert(g.id());
      ghost_dirs[g.path()] = tmp;
    } else if (type != S_IFREG) {
      if (::mknod(tmp.c_str(), type | 0600, static_cast<dev_t>(g.rdev())) != 0)
        return failf_errno("{}: cannot recreate it as {} (mknod {}:{})", what, tmp, major(g.rdev()), minor(g.rdev()));
      out.paths_[g.id()] = tmp;
    } else {
      UniqueFd fd(::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!fd) return failf_errno("{}: cannot recreate it as {}", what, tmp);
      out.paths_[g.id()] = tmp;
      // The size first: what no extent fills stays a hole.
      if (::ftruncate(fd.get(), static_cast<off_t>(g.size())) != 0)
        return failf_errno("ghost file {}: ftruncate to {}", g.path(), g.size());
      UniqueFd data(::open(ghost_data_image(dir, g.id()).c_str(), O_RDONLY | O_CLOEXEC));
      if (!data) return failf_errno("ghost file {}: cannot open {}", g.path(), ghost_data_image(dir, g.id()));
      struct stat st;
      if (::fstat(data.get(), &st) != 0 || static_cast<uint64_t>(st.st_size) != g.allocated())
        return failf("ghost file {}: {} does not hold its {} bytes of data", g.path(),
                     ghost_data_image(dir, g.id()), g.allocated());
      TRY(copy_extents_in(fd.get(), data.get(), g.extents(), "ghost file " + g.path()));
    }
    // Owner, mode and mtime by the name: a device node is never opened here.
    (void)::fchownat(AT_FDCWD, tmp.c_str(), g.uid(), g.gid(), AT_SYMLINK_NOFOLLOW);
    (void)::fchmodat(AT_FDCWD, tmp.c_str(), g.mode() & 07777, 0);
    timespec times[2];
    times[0].tv_sec = 0;
    times[0].tv_nsec = UTIME_OMIT;
    times[1].tv_sec = g.mtime_ns() / 1000000000;
    times[1].tv_nsec = g.mtime_ns() % 1000000000;
    (void)::utimensat(AT_FDCWD, tmp.c_str(), times, AT_SYMLINK_NOFOLLOW);
  }
  return out;
}

void RecreatedGhosts::unlink_all() {
  // Inner names first: a ghost directory is empty again only once what was
  // made in it is gone (the longest paths first).
  std::vector<std::pair<uint32_t, std::string>> all(paths_.begin(), paths_.end());
  std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.second.size() > b.second.size(); });
  for (auto& [id, path] : all) {
    if (dirs_.count(id)) ::rmdir(path.c_str());
    else ::unlink(path.c_str());
  }
  paths_.clear();
  dirs_.clear();
}

}  // namespace minicriu

// The ghost file kind: an fd on a regular file with no name left.
namespace minicriu {

namespace {

class GhostFileKind final : public Kind {
 public:
  const char* name() const override { return "ghost file"; }

  // A file, a directory or a device node with no name left.
  bool takes(const FdDumpInfo& fd) const override {
    bool type = S_ISREG(fd.st.st_mode) || S_ISDIR(fd.st.st_mode) || S_ISCHR(fd.st.st_mode) ||
                S_ISBLK(fd.st.st_mode);
    return type && fd.st.st_nlink == 0 && has_deleted_suffix(fd.link) && fd.link.rfind("/memfd:", 0) != 0;
  }

  Status begin(DumpEnv& env) override {
    ASSIGN_OR_RETURN(GhostPolicy policy, GhostPolicy::from_options(env.options.ghost_limit,
                                                                    env.options.ghost_policy));
    store_.emplace(env.dir, std::move(policy), env.log);
    return {};
  }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv&) override {
    ASSIGN_OR_RETURN(uint32_t ghost, store_->add(fd.what, fd.local_fd, fd.link, fd.st));
    img::RegFile* reg = entry.mutable_reg();
    describe_reg_file(fd, strip_deleted_suffix(fd.link), *reg);
    reg->set_ghost_id(ghost);
    return {};
  }

  Status commit(ImageSet& images, DumpEnv&) override { return store_->commit(images); }

  bool owns(const img::FileEntry& entry) const override {
    return entry.has_reg() && entry.reg().ghost_id() != 0;
  }

  Status load(const RestoreEnv& env) override {
    ASSIGN_OR_RETURN(ghosts_, read_all_images<img::GhostFile>(ghosts_image(env.dir), kGhostsImage));
    dir_ = &env.dir;
    checkpoint_ = &env.checkpoint;
    return {};
  }

  // Ghost files come back under temporary names until every holder has them.
  Status create_shared(const RestoreEnv& env) override {
    ASSIGN_OR_RETURN(recreated_, RecreatedGhosts::recreate(env.dir, ghosts_, env.options.ghost_dir));
    return {};
  }

  Result<UniqueFd> open(const img::FileEntry& entry) override {
    const img::RegFile& reg = entry.reg();
    auto it = recreated_.paths().find(reg.ghost_id());
    if (it == recreated_.paths().end())
      return failf("ghost file {} (ghost {}) was not recreated", reg.path(), reg.ghost_id());
    return reopen_reg_file(it->second, reg);
  }

  // Every holder opened and mapped it: a ghost again.
  Status resume(const RestoreEnv&) override {
    recreated_.unlink_all();
    return {};
  }

  std::string describe(const img::FileEntry& f) const override { return reg_file_summary(f.reg()); }

  void describe_images(std::string& out) const override {
    for (auto& g : ghosts_)
      out += fmt::format("ghost {}: {} ({} bytes, {} bytes of data in {} extent(s))\n", g.id(), g.path(),
                         g.size(), g.allocated(), g.extents_size());
  }

  void add_to_view(img::CheckpointView& view) const override {
    for (auto& g : ghosts_) *view.add_ghosts() = g;
  }

  void summarize(img::ShowSummary& summary) const override {
    if (ghosts_.empty()) return;
    img::ObjectTally* t = summary.add_objects();
    t->set_what("ghost files");
    t->set_count(ghosts_.size());
    for (auto& g : ghosts_) t->set_bytes(t->bytes() + g.allocated());
  }

  // A mapping of a file that had no name left (a deleted library, a shared
  // memory pool file): its data is the ghost's.
  bool reads(const img::Vma& v) const override { return ghost_of(v) != nullptr; }

  Result<size_t> read_mapped(const img::Vma& v, uint64_t offset, std::span<uint8_t> out) const override {
    const img::GhostFile* g = ghost_of(v);
    if (!g) return failf("vma {:x}-{:x}: no ghost file holds its data", v.start(), v.end());
    return data_.read(ghost_data_image(*dir_, g->id()), g->extents(), g->size(), offset, out);
  }

 private:
  const img::GhostFile* ghost_of(const img::Vma& v) const {
    const img::FileEntry* f = checkpoint_ && v.file_id() ? checkpoint_->file(v.file_id()) : nullptr;
    if (!f || !owns(*f)) return nullptr;
    for (auto& g : ghosts_)
      if (g.id() == f->reg().ghost_id()) return &g;
    return nullptr;
  }

  const ImageDir* dir_ = nullptr;
  const Checkpoint* checkpoint_ = nullptr;
  mutable SparseDataFiles data_;  // the ghosts' data, opened as read
  std::optional<GhostStore> store_;
  std::vector<img::GhostFile> ghosts_;
  RecreatedGhosts recreated_;
};

}  // namespace

std::unique_ptr<Kind> make_ghost_file_kind() { return std::make_unique<GhostFileKind>(); }

}  // namespace minicriu
