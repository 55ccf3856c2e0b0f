#include "mem/shmem.hpp"
#include "base/page.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

#include <optional>

#include "kinds/kind.hpp"
#include "mem/vma.hpp"
#include "fs/ghost_file.hpp"
#include "fs/sparse_data.hpp"

namespace minicriu {

std::string memfd_name(const std::string& link) {
  static const std::string kPrefix = "/memfd:";
  if (link.rfind(kPrefix, 0) != 0) return {};
  return strip_deleted_suffix(link.substr(kPrefix.size()));
}

Result<uint32_t> ShmemStore::add(const std::string& what, int fd, const struct stat& st, bool memfd,
                                 const std::string& name) {
  for (auto& o : entries_)
    if (o.dev() == st.st_dev && o.ino() == st.st_ino) return o.id();
  std::string desc = fmt::format("{}: {}", what, memfd ? "memfd:" + name : "shared anonymous memory");
  // Our own description: SEEK_DATA must not move the target's offset.
  UniqueFd own(::open(fmt::format("/proc/self/fd/{}", fd).c_str(), O_RDONLY | O_CLOEXEC));
  if (!own) return failf_errno("{}: cannot reopen it", desc);
  img::ShmemObject o;
  o.set_id(static_cast<uint32_t>(entries_.size() + 1));
  o.set_memfd(memfd);
  o.set_name(name);
  o.set_size(static_cast<uint64_t>(st.st_size));
  o.set_dev(st.st_dev);
  o.set_ino(st.st_ino);
  if (memfd) {
    int seals = ::fcntl(own.get(), F_GET_SEALS);
    o.set_seals(seals > 0 ? static_cast<uint32_t>(seals) : 0);
    o.set_mode(st.st_mode & 07777);
    o.set_uid(st.st_uid);
    o.set_gid(st.st_gid);
  }
  ASSIGN_OR_RETURN(auto extents, data_extents(own.get(), o.size(), desc));
  ASSIGN_OR_RETURN(auto data, RawImageFile::create(shmem_data_image(dir_, o.id())));
  TRY(copy_extents_out(data.fd(), own.get(), extents, desc));
  uint64_t allocated = 0;
  for (auto& e : extents) {
    allocated += e.length();
    *o.add_extents() = e;
  }
  o.set_allocated(allocated);
  log_.info("{}: {} KiB of {} KiB stored", desc, allocated >> 10, o.size() >> 10);
  data_.push_back(std::make_unique<RawImageFile>(std::move(data)));
  entries_.push_back(std::move(o));
  return entries_.back().id();
}

Result<uint32_t> ShmemStore::add_mapping(pid_t pid, uint64_t start, uint64_t end, const std::string& path) {
  std::string what = fmt::format("pid {}: mapping {:x}-{:x}", pid, start, end);
  std::string map_file = fmt::format("/proc/{}/map_files/{:x}-{:x}", pid, start, end);
  UniqueFd fd(::open(map_file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd && errno == EPERM)
    return std::unexpected(Error(fmt::format("{}: shared memory is reached through {}, which needs "
                                             "CAP_CHECKPOINT_RESTORE; minicriu runs without it: dump as root or "
                                             "with the capability", what, map_file), EPERM));
  if (!fd) return failf_errno("{}: cannot open {}", what, map_file);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return failf_errno("{}: fstat", what);
  std::string name = memfd_name(path);
  ASSIGN_OR_RETURN(uint32_t id, add(what, fd.get(), st, !name.empty(), name));
  if (path.rfind("/SYSV", 0) == 0) TRY(describe_sysv(what, static_cast<int>(st.st_ino), entries_[id - 1]));
  return id;
}

// A segment's inode number is its id (ipc/shm.c); IPC_STAT tells the rest.
Status ShmemStore::describe_sysv(const std::string& what, int shmid, img::ShmemObject& o) {
  if (o.has_sysv()) return {};
  shmid_ds ds{};
  if (::shmctl(shmid, IPC_STAT, &ds) != 0)
    return failf_errno("{}: System V segment {}: IPC_STAT (another IPC namespace?)", what, shmid);
  img::SysvShm* s = o.mutable_sysv();
  s->set_shmid(shmid);
  s->set_key(ds.shm_perm.__key);
  s->set_mode(ds.shm_perm.mode & 0777);
  s->set_uid(ds.shm_perm.uid);
  s->set_gid(ds.shm_perm.gid);
  s->set_removed((ds.shm_perm.mode & SHM_DEST) != 0);
  return {};
}

Status ShmemStore::commit(ImageSet& images) {
  for (auto& d : data_) TRY(images.commit(*d));
  data_.clear();
  return images.write(shmem_image(dir_), kShmemImage, entries_);
}

Result<std::unique_ptr<ShmemRestorer>> ShmemRestorer::load(const ImageDir& dir) {
  auto r = std::make_unique<ShmemRestorer>(dir);
  ASSIGN_OR_RETURN(auto objects, read_all_images<img::ShmemObject>(shmem_image(dir), kShmemImage));
  for (auto& o : objects) {
    uint64_t allocated = 0;
    for (auto& e : o.extents()) {
      if (e.offset() + e.length() > o.size() || e.offset() + e.length() < e.offset())
        return failf("{}: object {} has an extent beyond its size", shmem_image(dir), o.id());
      allocated += e.length();
    }
    struct stat st;
    if (allocated != o.allocated() || ::stat(shmem_data_image(dir, o.id()).c_str(), &st) != 0 ||
        static_cast<uint64_t>(st.st_size) != allocated)
      return failf("{} does not hold the {} bytes of shared memory object {}", shmem_data_image(dir, o.id()),
                   o.allocated(), o.id());
    r->objects_[o.id()] = std::move(o);
  }
  return r;
}

namespace {

// restore --lazy: the bytes of the object's extents that no lazy mapping
// covers (no fault can bring them), written now.
Status copy_unmapped_in(int out, int data, const LazyShmemObject& o, const std::string& what) {
  for (auto& e : o.extents) {
    uint64_t at = e.offset, end = e.offset + e.length;
    auto write_to = [&](uint64_t to) -> Status {
      if (to <= at) return {};
      TRY(seek_to(out, at, what));
      auto in = static_cast<int64_t>(e.data_offset + (at - e.offset));
      return copy_range(out, data, &in, to - at, what);
    };
    for (auto& [s, t] : o.mapped) {
      if (t <= at) continue;
      if (s >= end) break;
      TRY(write_to(std::min(s, end)));
      at = std::max(at, t);
      if (at >= end) break;
    }
    if (at < end) TRY(write_to(end));
  }
  return {};
}

}  // namespace

Result<int> ShmemRestorer::object_fd(uint32_t id) {
  if (auto it = fds_.find(id); it != fds_.end()) return it->second.get();
  auto o = objects_.find(id);
  if (o == objects_.end()) return failf("shared memory object {} is not in shmem.img", id);
  const img::ShmemObject& obj = o->second;
  UniqueFd fd;
  if (obj.has_sysv()) {
    ASSIGN_OR_RETURN(fd, create_sysv(obj));
  } else if (obj.memfd()) {
    fd.reset(::memfd_create(obj.name().c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd) return failf_errno("memfd_create({})", obj.name());
  } else {
    // Anonymous shared memory is shmem made by mmap; map_files gives us an fd
    // on that very object, which every process then maps ("/dev/zero").
    size_t len = obj.size() ? obj.size() : kPageSize;
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return failf_errno("shared anonymous memory of {} bytes", obj.size());
    auto start = reinterpret_cast<uint64_t>(p);
    fd.reset(::open(fmt::format("/proc/self/map_files/{:x}-{:x}", start, start + len).c_str(),
                    O_RDWR | O_CLOEXEC));
    int e = errno;
    ::munmap(p, len);
    if (!fd) return std::unexpected(Error("cannot open the shared anonymous memory object", e));
  }
  if (!obj.has_sysv() && ::ftruncate(fd.get(), static_cast<off_t>(obj.size())) != 0)
    return failf_errno("shared memory object {}: ftruncate to {}", id, obj.size());
  // Mode and owner before the seals: F_SEAL_EXEC forbids changing the x bits.
  if (obj.memfd() && obj.has_mode() && ::fchmod(fd.get(), static_cast<mode_t>(obj.mode())) != 0)
    return failf_errno("memfd:{}: fchmod {:o}", obj.name(), obj.mode());
  if (obj.memfd() && obj.has_mode() && ::fchown(fd.get(), obj.uid(), obj.gid()) != 0)
    return failf_errno("memfd:{}: fchown {}:{}", obj.name(), obj.uid(), obj.gid());
  UniqueFd data(::open(shmem_data_image(dir_, id).c_str(), O_RDONLY | O_CLOEXEC));
  if (!data) return failf_errno("cannot open {}", shmem_data_image(dir_, id));
  std::string what = fmt::format("shared memory object {}", id);
  if (auto lazy = lazy_.find(id); lazy != lazy_.end()) {
    TRY(copy_unmapped_in(fd.get(), data.get(), lazy->second, what));
  } else {
    TRY(copy_extents_in(fd.get(), data.get(), obj.extents(), what));
  }
  fd = move_fd_above(std::move(fd), fd_floor_);
  int raw = fd.get();
  fds_.emplace(id, std::move(fd));
  return raw;
}

// A System V segment with its dumped id: kernel.shm_next_id picks the id of
// the next shmget (needs CAP_SYS_ADMIN). Our fd on it comes from map_files of
// a short attachment, for filling it like any shmem object.
Result<UniqueFd> ShmemRestorer::create_sysv(const img::ShmemObject& obj) {
  const img::SysvShm& s = obj.sysv();
  // A keyed segment outlives a dump that killed its tree: the same segment,
  // left unattached, gives way to the image, the checkpoint's truth. One that
  // somebody attached since is not ours to replace.
  shmid_ds old{};
  if (!s.removed() && ::shmctl(s.shmid(), IPC_STAT, &old) == 0) {
    if (old.shm_perm.__key != s.key() || old.shm_nattch != 0)
      return failf("System V segment {} is in use (key {:#x}, {} attachment(s), last by pid {}); "
                   "remove it (ipcrm -m {}) or restore elsewhere", s.shmid(),
                   static_cast<uint32_t>(old.shm_perm.__key), old.shm_nattch, old.shm_lpid, s.shmid());
    if (::shmctl(s.shmid(), IPC_RMID, nullptr) != 0)
      return failf_errno("System V segment {}: removing the one left by the dump", s.shmid());
  }
  {
    UniqueFd next(::open("/proc/sys/kernel/shm_next_id", O_WRONLY | O_CLOEXEC));
    std::string v = std::to_string(s.shmid());
    if (!next || ::write(next.get(), v.data(), v.size()) != static_cast<ssize_t>(v.size()))
      return failf_errno("System V segment {}: cannot set kernel.shm_next_id", s.shmid());
  }
  key_t key = s.removed() ? IPC_PRIVATE : s.key();
  int id = ::shmget(key, obj.size(), IPC_CREAT | IPC_EXCL | static_cast<int>(s.mode() & 0777));
  if (id < 0)
    return failf_errno("System V segment {} (key {:#x}): shmget (is the key or the id taken?)",
                       s.shmid(), static_cast<uint32_t>(s.key()));
  if (id != s.shmid()) {
    ::shmctl(id, IPC_RMID, nullptr);
    return failf("System V segment {} came back as {}: the id is taken", s.shmid(), id);
  }
  sysv_created_.push_back(id);
  void* at = ::shmat(id, nullptr, 0);
  if (at == reinterpret_cast<void*>(-1)) return failf_errno("System V segment {}: shmat", id);
  auto start = reinterpret_cast<uint64_t>(at);
  uint64_t len = page_up(obj.size());
  UniqueFd fd(::open(fmt::format("/proc/self/map_files/{:x}-{:x}", start, start + len).c_str(),
                     O_RDWR | O_CLOEXEC));
  int e = errno;
  ::shmdt(at);
  if (!fd) return std::unexpected(Error(fmt::format("System V segment {}: map_files", id), e));
  shmid_ds ds{};
  ::shmctl(id, IPC_STAT, &ds);
  ds.shm_perm.uid = s.uid();
  ds.shm_perm.gid = s.gid();
  ds.shm_perm.mode = static_cast<unsigned short>(s.mode());
  if (::shmctl(id, IPC_SET, &ds) != 0) return failf_errno("System V segment {}: IPC_SET", id);
  return fd;
}

Status ShmemRestorer::finish() {
  for (auto& [id, obj] : objects_)
    if (obj.has_sysv() && obj.sysv().removed() && ::shmctl(obj.sysv().shmid(), IPC_RMID, nullptr) != 0)
      return failf_errno("System V segment {}: IPC_RMID", obj.sysv().shmid());
  sysv_created_.clear();  // they belong to the restored tree now
  return {};
}

ShmemRestorer::~ShmemRestorer() {
  // A restore that failed takes back the segments it made.
  for (int id : sysv_created_) ::shmctl(id, IPC_RMID, nullptr);
}

Status ShmemRestorer::create_all(int fd_floor) {
  fd_floor_ = fd_floor;
  for (auto& [id, obj] : objects_) {
    (void)obj;
    TRY(object_fd(id));
  }
  return {};
}

Status ShmemRestorer::seal_all() {
  for (auto& [id, fd] : fds_) {
    const auto& obj = objects_.at(id);
    if (!obj.memfd() || !obj.seals()) continue;
    int now = ::fcntl(fd.get(), F_GET_SEALS);
    if (now >= 0 && (static_cast<uint32_t>(now) & obj.seals()) == obj.seals()) continue;
    if (::fcntl(fd.get(), F_ADD_SEALS, obj.seals()) != 0)
      return failf_errno("memfd:{}: F_ADD_SEALS {:#x}", obj.name(), obj.seals());
  }
  return {};
}

namespace {

std::string object_words(const img::ShmemObject& o) {
  if (o.has_sysv())
    return fmt::format("System V segment {} (key {:#x}{})", o.sysv().shmid(), static_cast<uint32_t>(o.sysv().key()),
                       o.sysv().removed() ? ", removed" : "");
  return o.memfd() ? "memfd:" + o.name() : "shared anonymous memory";
}

std::vector<img::ShmemObject> entries_of(const ShmemRestorer& r) {
  std::vector<img::ShmemObject> out;
  for (auto& [id, o] : r.objects()) out.push_back(o);
  return out;
}

// Shared memory: memfds (their fds), anonymous shared mappings and System V
// segments (their mappings), each object once.
class ShmemKind final : public Kind {
 public:
  const char* name() const override { return "shared memory"; }

  bool takes(const FdDumpInfo& fd) const override {
    return S_ISREG(fd.st.st_mode) && !memfd_name(fd.link).empty() && fd.fd >= 0;
  }

  Status begin(DumpEnv& env) override {
    store_.emplace(env.dir, env.log);
    return {};
  }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv&) override {
    ASSIGN_OR_RETURN(uint32_t id, store_->add(fd.what, fd.local_fd, fd.st, true, memfd_name(fd.link)));
    img::MemfdFile* m = entry.mutable_memfd();
    m->set_shmem_id(id);
    m->set_flags(fd.fdinfo.flags);
    m->set_pos(fd.fdinfo.pos);
    return {};
  }

  Status take_vma(pid_t pid, VmaInfo& v, DumpEnv&) override {
    if (!v.shmem) return {};
    ASSIGN_OR_RETURN(uint32_t id, store_->add_mapping(pid, v.vma.start(), v.vma.end(), v.maps.path));
    v.vma.set_shmem_id(id);
    return {};
  }

  Status commit(ImageSet& images, DumpEnv&) override { return store_->commit(images); }

  bool owns(const img::FileEntry& entry) const override { return entry.has_memfd(); }

  Status load(const RestoreEnv& env) override {
    ASSIGN_OR_RETURN(restorer_, ShmemRestorer::load(env.dir));
    dir_ = &env.dir;
    return {};
  }

  Status create_shared(const RestoreEnv& env) override {
    if (env.options.lazy) {
      LazyShmemPlan lazy = plan_lazy_shmem(env.dir, env.checkpoint, entries_of(*restorer_));
      for (auto& [id, o] : lazy)
        env.log.debug("lazy restore: shared memory object {}: {} KiB come on first touch", id, o.lazy_bytes >> 10);
      restorer_->set_lazy(std::move(lazy));
    }
    return restorer_->create_all(env.fd_floor);
  }

  Result<UniqueFd> open(const img::FileEntry& entry) override {
    if (!restorer_) return fail("shared memory was not loaded for this restore");
    ASSIGN_OR_RETURN(int object, restorer_->object_fd(entry.memfd().shmem_id()));
    // A description of its own, with the flags and offset it had.
    int flags = static_cast<int>(entry.memfd().flags()) & (O_ACCMODE | O_APPEND | O_NONBLOCK);
    UniqueFd fd(::open(fmt::format("/proc/self/fd/{}", object).c_str(), flags | O_CLOEXEC));
    if (!fd) return failf_errno("cannot reopen memfd object {}", entry.memfd().shmem_id());
    if (::lseek(fd.get(), static_cast<off_t>(entry.memfd().pos()), SEEK_SET) < 0)
      return failf_errno("memfd object {}: seek", entry.memfd().shmem_id());
    return fd;
  }

  bool maps(const img::Vma& v) const override { return v.shmem_id() != 0; }

  Status map(const img::Vma& v, void* at, int prot) override {
    if (!restorer_) return fail("shared memory was not loaded for this restore");
    uint64_t size = v.end() - v.start();
    ASSIGN_OR_RETURN(int object, restorer_->object_fd(v.shmem_id()));
    if (v.kind() == img::VMA_SYSV_SHM) {
      // Attached for real (shm_nattch counts it, maps shows /SYSV), then moved.
      const img::ShmemObject* obj = restorer_->object(v.shmem_id());
      if (!obj || !obj->has_sysv()) return failf("System V mapping without its segment ({})", v.shmem_id());
      // SHM_RDONLY is what leaves VM_MAYWRITE off: not the protection now
      // (an attachment made read-write may be mprotect()ed read-only since).
      int flags = SHM_REMAP | (v.no_may_write() ? SHM_RDONLY : 0) | ((prot & PROT_EXEC) ? SHM_EXEC : 0);
      if (::shmat(obj->sysv().shmid(), at, flags) == reinterpret_cast<void*>(-1))
        return failf_errno("cannot attach System V segment {} ({} bytes)", obj->sysv().shmid(), size);
      return {};
    }
    // Shared anonymous memory is its shmem object, mapped shared; a memfd is
    // mapped as its VMA mapped it. A shared mapping without VM_MAYWRITE (made
    // from a read-only fd, or after a write seal) is made from a read-only
    // fd: mprotect(PROT_WRITE) fails on it as it did, and F_SEAL_WRITE, added
    // once the tree is ready, does not find it writable.
    int share = v.kind() == img::VMA_FILE_PRIVATE ? MAP_PRIVATE : MAP_SHARED;
    UniqueFd read_only;
    if (share == MAP_SHARED && v.no_may_write()) {
      read_only.reset(::open(fmt::format("/proc/self/fd/{}", object).c_str(), O_RDONLY | O_CLOEXEC));
      if (!read_only) return failf_errno("shared memory object {}: cannot reopen it read-only", v.shmem_id());
    }
    int from = read_only ? read_only.get() : object;
    if (::mmap(at, size, prot, share | MAP_FIXED, from, static_cast<off_t>(v.pgoff())) == MAP_FAILED)
      return failf_errno("cannot premap {} bytes of shared memory object {}", size, v.shmem_id());
    return {};
  }

  // Every process is attached: seals go on now that every mapping is made (a
  // task that sealed would forbid its children the writable mappings they
  // had, F_SEAL_FUTURE_WRITE); removed System V segments go again; our fds
  // on the objects go.
  Status resume(const RestoreEnv&) override {
    TRY(restorer_->seal_all());
    TRY(restorer_->finish());
    restorer_.reset();
    return {};
  }

  std::string describe(const img::FileEntry& f) const override {
    return fmt::format("memfd (shmem {}, flags {:#o}, pos {})", f.memfd().shmem_id(), f.memfd().flags(),
                       f.memfd().pos());
  }

  void describe_images(std::string& out) const override {
    if (!restorer_) return;
    for (auto& [id, o] : restorer_->objects())
      out += fmt::format("shmem {}: {} ({} bytes, {} bytes of data){}\n", o.id(), object_words(o), o.size(),
                         o.allocated(), o.seals() ? fmt::format(", seals {:#x}", o.seals()) : "");
  }

  void add_to_view(img::CheckpointView& view) const override {
    if (!restorer_) return;
    for (auto& [id, o] : restorer_->objects()) *view.add_shmem() = o;
  }

  void summarize(img::ShowSummary& summary) const override {
    if (!restorer_ || restorer_->objects().empty()) return;
    img::ObjectTally* t = summary.add_objects();
    t->set_what("shared memory objects");
    for (auto& [id, o] : restorer_->objects()) {
      t->set_count(t->count() + 1);
      t->set_bytes(t->bytes() + o.allocated());
    }
  }

  bool reads(const img::Vma& v) const override {
    return v.shmem_id() != 0 && restorer_ && restorer_->object(v.shmem_id());
  }

  Result<size_t> read_mapped(const img::Vma& v, uint64_t offset, std::span<uint8_t> out) const override {
    const img::ShmemObject* obj = restorer_ ? restorer_->object(v.shmem_id()) : nullptr;
    if (!obj) return failf("shared memory object {} is not in shmem.img", v.shmem_id());
    return data_.read(shmem_data_image(*dir_, obj->id()), obj->extents(), obj->size(), offset, out);
  }

 private:
  const ImageDir* dir_ = nullptr;
  mutable SparseDataFiles data_;  // the objects' data, opened as read
  std::optional<ShmemStore> store_;
  std::unique_ptr<ShmemRestorer> restorer_;
};

}  // namespace

std::unique_ptr<Kind> make_shmem_kind() { return std::make_unique<ShmemKind>(); }

}  // namespace minicriu
