// The one lifecycle every kind of kernel object implements (DESIGN.md, "Kinds:
// one lifecycle"): a file kind, a socket family, a pty, shared memory, a timer.
// A kind owns both directions in its own file; the orchestration walks the
// registered kinds as a list (kinds/registry.cc), phase by phase, in the order
// it owns, and never names a kind. Every phase has a default that does
// nothing, so a kind implements only the phases it has.
//
// One Kind object lives for one dump, one restore or one show: what a kind
// gathers (a dump's pipes, a restore's created sockets) is its own member
// state, not the orchestration's.
//
// Dump, in this order:
//   begin()             before the tree is frozen: the kind's options are checked
//   take(fd)            each fd this kind takes(), as the parasite handed it over
//   observe_fd(fd, id)  every fd of every process (dup'd ones too), whatever
//                       kind took its file: state the kernel keeps on any
//                       open file (locks, the SIGIO owner)
//   take_vma(vma)       each mapping (the object it maps, if it is this kind's)
//   take_process(p)     each process, once its fds and mappings were taken
//   check(tree)         once the whole tree is seen: peers outside, options
//   release(fate)       the tree is about to run again or to die: undo what
//                       was changed in its objects (repair mode...)
//   commit(images)      write this kind's images; non-destructive kinds first,
//                       then everything is synced and the room for the rest
//                       reserved, then
//   destructive()       only kinds that must consume application state
//                       (accepting pending connections), when the tree dies;
//                       then the destructive kinds commit into reserved room
//   finish(ok)          the dump is over: clean up, or undo on failure
//
// Restore, in this order:
//   load()              read and validate its images, before anything is made
//   list_external()     the keys of its objects that were outside the tree
//   take_stand_ins()    what the caller gives for them (--inherit-fd, the hook)
//   create_shared()     objects held by several processes, once, in the
//                       restoring program, above the fd floor (inherited)
//   list_held()         files held by objects of the kind, not by fds: opened
//                       with the shared files (RestoreEnv::shared_file())
//   restore_session()   in each task, after its session, before its children
//   open(entry)         an fd of an entry this kind owns(), in a task
//   open_after(entry)   once every fd of the task is in place (references)
//   map(vma)            a mapping of an object this kind made (shared memory)
//   restore_process()   in each task, its fds and memory in place, before the blob
//   restore_process_last()  in each task, once only its dumped fds are open (the
//                       restore's own are closed): what a close() would undo
//                       (a process's POSIX locks go with any close of their file)
//   resume()            every task is ready: the last touches before they run
//   after_resume()      the tree runs
//   (a failed restore destroys the Kind: its destructor takes back what it made)
//
// Show: describe(entry) for one fd, describe_process() for a process,
// describe_images() and add_to_view() for the kind's own images, summarize()
// for the figures of the summary, and read_mapped() for the data of the
// objects that VMAs map (show --backtrace and coredump read a checkpoint's
// memory without restoring it). All after load().
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <functional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/unique_fd.hpp"
#include "images/image_dir.hpp"
#include "minicriu.pb.h"
#include "proc/proc_parse.hpp"

namespace minicriu {

class ExternalPolicy;
class ExternalStandIns;
class ImageSet;
class NetworkLock;
class ParasiteSession;
struct Checkpoint;
struct ProcessImages;
struct VmaInfo;

// What the dumper knows of one fd of one process.
struct FdDumpInfo {
  pid_t pid = 0;
  int fd = -1;             // -1 for files without an fd (cwd, exe, a mapping's file)
  std::string what;        // who holds it, for messages: "pid 12: fd 5", "pid 12: exe"
  std::string link;        // readlink of /proc/PID/fd/N
  proc::FdInfo fdinfo;
  struct stat st {};       // fstat of the fd itself (from the parasite)
  int local_fd = -1;       // our copy of it (same open file description)
};

// What every kind may use during one dump.
struct DumpEnv {
  const DumpOptions& options;
  const ImageDir& dir;
  const Logger& log;
  const ExternalPolicy& external;
  // TCP connections are locked here before their queues are read (null: no
  // lock, e.g. unit tests). See net/network_lock.hpp.
  NetworkLock* net_lock = nullptr;
  // Every thread of the dumped tree (a process's pid is its leader's tid),
  // once it is frozen; they come back with the same numbers.
  std::vector<pid_t> tree_tids;
  // files.img as it is being built, for kinds that complete entries once the
  // whole tree is seen (a peer accepted as external, data of connections
  // taken from an accept queue).
  std::vector<img::FileEntry>* files = nullptr;
  // A file that no fd of the tree holds (an fd in flight in a unix socket's
  // queue, SCM_RIGHTS): local_fd is ours (kept open by the dumper from now
  // on), what names it for messages. Its own kind takes it as it takes the
  // file of any fd (observe_fd() does not run: no process holds it), and the
  // id of its entry in files.img comes back; the same open file description
  // as an fd of the tree gets the same id. Set by the dumper.
  std::function<Result<uint32_t>(int local_fd, const std::string& what)> add_file;
};

// One process being dumped, for take_process(): its parasite still runs.
struct ProcessDump {
  pid_t pid = 0;
  const proc::Stat& stat;
  img::ProcessEntry& entry;
  img::ProcessCore& core;
  img::MmCore& mm;
  ParasiteSession& parasite;
};

// The tree as check() sees it, every process dumped.
struct DumpTree {
  std::set<pid_t> pids;
  std::vector<const img::ProcessEntry*> processes;  // zombies included
};

// What happens to the tree after release().
enum class TreeFate { runs, dies };

// What every kind may use during one restore (or one show, which only loads).
struct RestoreEnv {
  const RestoreOptions& options;
  const ImageDir& dir;
  const Checkpoint& checkpoint;
  const Logger& log;
  // Fds kept by the restoring program for the tree (pipe ends, sockets)
  // stay at or above this number, clear of every dumped fd number; set
  // before create_shared().
  int fd_floor = 0;
  // The file of an entry that one of the kinds' objects holds (list_held()),
  // opened once by its kind before the tree, above fd_floor, sharing its open
  // file description with the fds of the tree that hold it too. Valid from
  // the end of create_shared() until resume() is over; the fd stays ours.
  std::function<Result<int>(uint32_t file_id)> shared_file;
};

// A task being restored, for restore_session() and restore_process(). What
// cannot be done but is no error is said in a warning, sent to the user.
struct TaskEnv {
  const Checkpoint& checkpoint;
  const ProcessImages& process;
  std::vector<std::string>& warnings;
};

// The fd that stands, in the restoring task, for fd number dumped_fd of the
// process being restored; -1 if that process had no such fd. All fds are in
// place under their dumped numbers when open_after() runs: the kernel may
// remember the number (an epoll entry keeps the fd it was added with).
// file(id): an fd of the task on a file of files.img that the process holds,
// or that a file it holds references (Kind::references); -1 if none.
struct FdLookup {
  std::function<int(int dumped_fd)> fd;
  std::function<int(uint32_t file_id)> file;
  int operator()(int dumped_fd) const { return fd(dumped_fd); }
};

class Kind {
 public:
  virtual ~Kind() = default;
  // For messages and the registry: "pipe", "unix socket".
  virtual const char* name() const = 0;

  // ---- dump ----------------------------------------------------------------
  [[nodiscard]] virtual Status begin(DumpEnv& env) {
    (void)env;
    return {};
  }
  // This kind takes the fd (the first kind of the list that does, gets it).
  virtual bool takes(const FdDumpInfo& fd) const {
    (void)fd;
    return false;
  }
  // Fills the kind's part of entry (its id is set already), or refuses the fd
  // in one line naming it and what to do.
  [[nodiscard]] virtual Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv& env);
  // Every fd of every process, dup'd and inherited ones included (file_id:
  // the entry of its open file description, taken by its own kind first).
  [[nodiscard]] virtual Status observe_fd(const FdDumpInfo& fd, uint32_t file_id, DumpEnv& env) {
    (void)fd, (void)file_id, (void)env;
    return {};
  }
  [[nodiscard]] virtual Status take_vma(pid_t pid, VmaInfo& vma, DumpEnv& env) {
    (void)pid, (void)vma, (void)env;
    return {};
  }
  [[nodiscard]] virtual Status take_process(ProcessDump& p, DumpEnv& env) {
    (void)p, (void)env;
    return {};
  }
  [[nodiscard]] virtual Status check(const DumpTree& tree, DumpEnv& env) {
    (void)tree, (void)env;
    return {};
  }
  // Called once, before the tree runs again (left running, or the dump
  // failed) or dies (a complete dump that kills it). Must not fail.
  virtual void release(TreeFate fate, DumpEnv& env) { (void)fate, (void)env; }
  // A destructive kind consumes application state in destructive(), which
  // runs only when the tree will die, after every image but its own, files.img
  // and the inventory is synced. Nothing may fail for lack of space after it:
  // destructive_room() is what it may add to files.img, reserved before.
  virtual bool is_destructive() const { return false; }
  virtual uint64_t destructive_room(const DumpEnv& env) const {
    (void)env;
    return 0;
  }
  [[nodiscard]] virtual Status destructive(DumpEnv& env) {
    (void)env;
    return {};
  }
  [[nodiscard]] virtual Status commit(ImageSet& images, DumpEnv& env) {
    (void)images, (void)env;
    return {};
  }
  // The end of the dump, after release(), whatever came of it. Must not fail.
  virtual void finish(bool ok, DumpEnv& env) { (void)ok, (void)env; }

  // ---- restore -------------------------------------------------------------
  // This kind restores the entry (every entry has exactly one owner).
  virtual bool owns(const img::FileEntry& entry) const {
    (void)entry;
    return false;
  }
  [[nodiscard]] virtual Status load(const RestoreEnv& env) {
    (void)env;
    return {};
  }
  // Keys ("socket:[INODE]") of the objects of the images that were outside
  // the tree, which --inherit-fd may name.
  virtual void list_external(const RestoreEnv& env, std::set<std::string>& keys) const {
    (void)env, (void)keys;
  }
  [[nodiscard]] virtual Status take_stand_ins(const ExternalStandIns& stand_ins, const RestoreEnv& env) {
    (void)stand_ins, (void)env;
    return {};
  }
  [[nodiscard]] virtual Status create_shared(const RestoreEnv& env) {
    (void)env;
    return {};
  }
  // Entries of files.img that this kind's objects hold rather than an fd
  // (the fds in flight in a unix queue): opened for RestoreEnv::shared_file().
  virtual void list_held(const RestoreEnv& env, std::set<uint32_t>& file_ids) const {
    (void)env, (void)file_ids;
  }
  [[nodiscard]] virtual Status restore_session(TaskEnv& task) {
    (void)task;
    return {};
  }
  // A new fd (close-on-exec) on the file as it was at the dump.
  [[nodiscard]] virtual Result<UniqueFd> open(const img::FileEntry& entry);
  // Whether a file several processes hold may be opened once, before the
  // tree exists, and inherited by all (create_shared time); if not, each
  // holder opens its own in its task (a pidfd to a process of the tree,
  // which does not exist yet then).
  virtual bool opens_before_tree(const img::FileEntry& entry) const {
    (void)entry;
    return true;
  }
  [[nodiscard]] virtual Status open_after(const img::FileEntry& entry, int fd, const FdLookup& lookup) {
    (void)entry, (void)fd, (void)lookup;
    return {};
  }
  // Files of files.img (ids) that open_after() of this entry needs besides
  // the fds of its process (an epoll entry whose fd was closed since): the
  // process gets them as if it held them (FdLookup::file).
  virtual void references(const img::FileEntry& entry, std::vector<uint32_t>& file_ids) const {
    (void)entry, (void)file_ids;
  }
  // A mapping of an object this kind made (vma.shmem_id()): maps it at `at`
  // (MAP_FIXED, inside the premap area) with prot.
  virtual bool maps(const img::Vma& vma) const {
    (void)vma;
    return false;
  }
  [[nodiscard]] virtual Status map(const img::Vma& vma, void* at, int prot);
  [[nodiscard]] virtual Status restore_process(TaskEnv& task) {
    (void)task;
    return {};
  }
  [[nodiscard]] virtual Status restore_process_last(TaskEnv& task) {
    (void)task;
    return {};
  }
  [[nodiscard]] virtual Status resume(const RestoreEnv& env) {
    (void)env;
    return {};
  }
  virtual void after_resume(const RestoreEnv& env) { (void)env; }

  // ---- show ----------------------------------------------------------------
  // One line for people about an entry this kind owns.
  virtual std::string describe(const img::FileEntry& entry) const;
  // Lines about the kind's own images (after load()), each ending in '\n'.
  virtual void describe_images(std::string& out) const { (void)out; }
  // Lines about what this kind keeps of one process ("  " first, '\n' last).
  virtual void describe_process(const ProcessImages& p, std::string& out) const { (void)p, (void)out; }
  // The kind's own images, for `show --json`.
  virtual void add_to_view(img::CheckpointView& view) const { (void)view; }
  // Counts of the kind's own objects for the summary (summary.objects:
  // "ghost files", how many, the bytes of data the images hold for them).
  virtual void summarize(img::ShowSummary& summary) const { (void)summary; }
  // This kind holds the data of the object the VMA maps (shared memory, a
  // ghost file): read_mapped() reads it at `offset` bytes into the object
  // (the VMA's pgoff and beyond), what is a hole reading as zeros. It returns
  // how many bytes it read, fewer than out.size() only at the object's end.
  virtual bool reads(const img::Vma& vma) const {
    (void)vma;
    return false;
  }
  [[nodiscard]] virtual Result<size_t> read_mapped(const img::Vma& vma, uint64_t offset,
                                                   std::span<uint8_t> out) const;
};

}  // namespace minicriu
