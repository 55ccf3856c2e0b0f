#include "restorer/process_restore.hpp"

#include <fcntl.h>
#include <linux/capability.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/rseq.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <list>

#include "base/fault.hpp"
#include "base/unique_fd.hpp"
#include "fs/fd_table.hpp"
#include "mem/lazy_pager.hpp"
#include "restorer/blob_setup.hpp"
#include "restorer/machine.hpp"
#include "restorer/page_fill.hpp"
#include "restorer/premap.hpp"
#include "restorer/restore_channel.hpp"
#include "restorer/rlimit_plan.hpp"
#include "restorer/task_builder.hpp"
#include "restorer/task_sharing.hpp"

// After the images' headers: <signal.h> defines a sigmask() macro.
#include <signal.h>

namespace minicriu {

namespace {

// A process that led its session or group leads it again. One that belonged
// to a session or group led from outside the checkpoint joins minicriu's: that
// leader is not ours to recreate (the tree builder handles leaders inside).
// A child of a restored process inherits its session and group; it only has
// to lead its own, or join a group of its session that exists already
// (created earlier: parents before children, siblings in pstree order).
Status enter_session(const ProcessImages& p, int channel, bool root) {
  pid_t pid = static_cast<pid_t>(p.entry.pid());
  pid_t sid = static_cast<pid_t>(p.entry.sid());
  pid_t pgid = static_cast<pid_t>(p.entry.pgid());
  if (sid == pid) {
    if (::setsid() < 0) return fail_errno("setsid");
  } else if (::getsid(0) != sid) {
    if (!root)
      return failf("its session {} is neither its own nor its parent's; restoring a session "
                   "left by its leader is not supported", sid);
    send_warn(channel, fmt::format("pid {}: its session {} was led from outside the checkpoint; "
                                   "it joins the session of minicriu ({})", pid, sid, ::getsid(0)));
    if (pgid == pid && ::setpgid(0, 0) < 0) return fail_errno("setpgid");
    return {};
  }
  if (::getpgid(0) != pgid && ::setpgid(0, pgid == pid ? 0 : pgid) < 0)
    return failf_errno("cannot join process group {}", pgid);
  return {};
}

Result<UniqueFd> open_exe(const Checkpoint& c, const ProcessImages& p) {
  const img::FileEntry* exe = c.file(p.mm.exe_file_id());
  if (!exe || !exe->has_reg()) return UniqueFd();
  // Not O_PATH: PR_SET_MM_MAP's exe_fd must be a file opened for real.
  UniqueFd fd(::open(exe->reg().path().c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return failf_errno("cannot open the executable {}", exe->reg().path());
  // Already ours (a program restoring a copy of itself): the kernel refuses to
  // replace an exe that the restored mappings map (EBUSY), and need not.
  struct stat want, mine;
  if (::fstat(fd.get(), &want) == 0 && ::stat("/proc/self/exe", &mine) == 0 &&
      want.st_dev == mine.st_dev && want.st_ino == mine.st_ino)
    return UniqueFd();
  return fd;
}

RlimitPlan plan_limits(const ProcessImages& p) {
  std::vector<rlimit> now(RLIM_NLIMITS);
  for (int r = 0; r < RLIM_NLIMITS; r++) ::getrlimit(static_cast<__rlimit_resource>(r), &now[r]);
  // CAP_SYS_RESOURCE lets a hard limit rise again; without it, keep ours.
  bool can_raise = false;
  if (auto s = proc::read_file("/proc/self/status")) {
    auto eff = proc::status_field(*s, "CapEff");
    if (eff) can_raise = (std::strtoull(eff->c_str(), nullptr, 16) >> CAP_SYS_RESOURCE) & 1;
  }
  return plan_rlimits(p.core.rlimits(), now, can_raise);
}

// glibc registered rseq for minicriu's thread and the registration survives
// clone3 without CLONE_VM. It points into memory the blob unmaps, and the
// kernel writes to it on every return to user space: drop it first.
void unregister_glibc_rseq() {
  if (__rseq_size == 0) return;
  void* area = static_cast<char*>(__builtin_thread_pointer()) + __rseq_offset;
  // glibc 2.35+ registers 32 bytes; later versions report a smaller feature size.
  for (unsigned len : {32u, __rseq_size})
    if (::syscall(SYS_rseq, area, len, RSEQ_FLAG_UNREGISTER, RSEQ_SIG) == 0) return;
}

// The memory of a process, waiting in its premap area with its pages: made
// before its children, which inherit it (fork's copy-on-write again for the
// VMAs they still shared with it at the dump).
struct PremappedMemory {
  PremapPlan plan;
  Mapping area;
  SpecialMappings here;
};

Result<PremappedMemory> prepare_memory(const TreeRestore& tree, const ProcessImages& p,
                                       const InheritedSlots& inherited) {
  const Checkpoint& c = *tree.checkpoint;
  const KindSet& kinds = *tree.kinds;
  PremappedMemory m;
  ASSIGN_OR_RETURN(auto maps_text, proc::read_file("/proc/self/maps"));
  ASSIGN_OR_RETURN(auto maps, proc::parse_maps(maps_text));
  std::vector<AddrRange> busy;
  for (auto& e : maps) busy.push_back({e.start, e.end});
  // Clear of every dumped layout of the tree, not only this process's: the
  // children inherit this area and move their own VMAs out of it.
  for (auto& other : c.processes)
    for (auto& v : other.mm.vmas())
      if (v.kind() != img::VMA_VSYSCALL) busy.push_back({v.start(), v.end()});
  m.here = find_special_mappings(maps);
  BlobSizes blob = blob_sizes(p);
  PremapSizes sizes;
  sizes.specials[0] = m.here.has_vdso ? m.here.vdso.end - m.here.vdso.start : 0;
  sizes.specials[1] = m.here.has_vvar ? m.here.vvar.end - m.here.vvar.start : 0;
  sizes.specials[2] = m.here.has_vvar_vclock ? m.here.vvar_vclock.end - m.here.vvar_vclock.start : 0;
  sizes.blob = blob.blob;
  sizes.tail = blob.tail;
  std::vector<bool> lazy;
  if (tree.lazy_socket >= 0) lazy = lazy_vmas(c, p, tree.lazy_shmem ? *tree.lazy_shmem : LazyShmemPlan{});
  ASSIGN_OR_RETURN(m.plan, plan_premap(p.mm, busy, sizes, inherited, lazy));
  ASSIGN_OR_RETURN(m.area, premap_vmas(c, p, m.plan, kinds));
  if (!tree.page_server_host.empty()) {
    ASSIGN_OR_RETURN(auto source, connect_page_server(tree.page_server_host, tree.page_server_port));
    TRY(fill_pages_from(*source, p, m.plan, tree.pages_restored));
  } else {
    TRY(fill_pages(p, m.plan, tree.pages_restored));
  }
  return m;
}

// Each kind's last step in the task, its warnings sent on the channel.
Status kinds_in_task(KindSet& kinds, const Checkpoint& c, const ProcessImages& p, int channel,
                     const char* name, Status (Kind::*phase)(TaskEnv&)) {
  std::vector<std::string> warnings;
  TaskEnv task{c, p, warnings};
  Status st = kinds.each(name, [&](Kind& k) { return (k.*phase)(task); });
  for (auto& w : warnings) send_warn(channel, w);
  return st;
}

// What a task shares with its parent and with its children (task_sharing.hpp):
// the link to its parent, if it shares the parent's fd table or fs, and the
// links to its children that share its own.
struct Sharing {
  SharingLink* parent = nullptr;
  bool files_of_parent = false;      // its fd table is installed by its parent
  std::list<SharingLink> children;   // stable: each child works from its copy's address
};

// The first number above the dumped fds of a task whose table its parent
// installs (restore_fd_table's result for that table).
int dumped_fds_end(const ProcessImages& p) {
  int hi = 0;
  for (auto& f : p.fds) hi = std::max(hi, f.fd() + 1);
  return hi;
}

// The restore's own fds go (pipe ends, shmem objects, what was inherited
// from minicriu), once nobody sharing the table needs them: the one that
// installed the table closes them, keeping what each sharing child still
// needs (its channel, its executable, its own links), and tells them.
Status close_restore_fds(Sharing& sharing, int fds_end, std::vector<int> keep) {
  for (SharingLink& child : sharing.children) {
    if (!child.files()) continue;
    TRY(child.tell_child(SharingStep::installed));
    ASSIGN_OR_RETURN(auto needs, child.wait_child(SharingStep::prepared));
    keep.insert(keep.end(), needs.begin(), needs.end());
    for (int fd : child.fds()) keep.push_back(fd);
  }
  if (sharing.files_of_parent) {
    TRY(sharing.parent->tell_parent(SharingStep::prepared, keep));
    TRY(sharing.parent->wait_parent(SharingStep::closed));
    sharing.parent->close();
  } else {
    TRY(close_fds_above(fds_end, keep));
  }
  for (SharingLink& child : sharing.children)
    if (child.files()) TRY(child.tell_child(SharingStep::closed));
  return {};
}

Result<BlobJump> prepare(const TreeRestore& tree, const ProcessImages& p, int& channel, bool root,
                         PremappedMemory& mem, Sharing& sharing) {
  const Checkpoint& c = *tree.checkpoint;
  ::personality(p.core.personality());
  // prctl state; pdeathsig waits for the blob (SIGKILL until the parent says go).
  const img::ProcessPrctl& pr = p.core.prctl();
  if (pr.child_subreaper() && ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
    return fail_errno("PR_SET_CHILD_SUBREAPER");
  if (p.core.has_prctl() && ::prctl(PR_SET_DUMPABLE, pr.dumpable(), 0, 0, 0) != 0)
    return failf_errno("PR_SET_DUMPABLE {}", pr.dumpable());
  if (p.core.creds().no_new_privs() && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return fail_errno("PR_SET_NO_NEW_PRIVS");
  if (p.mm.thp_disabled()) ::prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);

  ASSIGN_OR_RETURN(UniqueFd exe, open_exe(c, p));
  std::vector<int> keep{channel};
  if (exe) keep.push_back(exe.release());
  Result<int> fds_end = sharing.files_of_parent ? dumped_fds_end(p)
                                                : restore_fd_table(p, c, *tree.kinds, *tree.shared, keep);
  channel = keep[0];
  if (!fds_end) return std::unexpected(fds_end.error());
  int exe_fd = keep.size() > 1 ? keep[1] : -1;

  // The cwd and the root are opened by their kinds, as any file: a removed
  // directory comes back as a ghost one.
  const img::FileEntry* cwd = c.file(p.core.cwd_file_id());
  ASSIGN_OR_RETURN(UniqueFd cwd_fd, with_context(tree.kinds->open(*cwd), "its working directory"));
  if (::fchdir(cwd_fd.get()) != 0)
    return failf_errno("cannot change to the working directory {}", cwd->reg().path());
  cwd_fd.reset();
  UniqueFd root_fd;
  const img::FileEntry* root_dir = p.core.root_file_id() ? c.file(p.core.root_file_id()) : nullptr;
  if (root_dir && root_dir->reg().path() != "/") {
    ASSIGN_OR_RETURN(root_fd, with_context(tree.kinds->open(*root_dir), "its root directory"));
  }
  ::umask(p.core.umask());
  RlimitPlan limits = plan_limits(p);
  for (auto& w : limits.warnings) send_warn(channel, fmt::format("pid {}: {}", p.entry.pid(), w));


  PremapPlan& plan = mem.plan;
  SpecialMappings& here = mem.here;
  // restore --lazy: its userfaultfd, made here (it acts on this process's
  // memory) while it still has minicriu's credentials, for the blob to
  // register the lazy VMAs with; the lazy pager gets a copy.
  UniqueFd uffd;
  if (tree.lazy_socket >= 0 && std::find(plan.lazy.begin(), plan.lazy.end(), true) != plan.lazy.end()) {
    TRY(fault_point("restore/lazy-uffd"));
    ASSIGN_OR_RETURN(uffd, make_task_uffd(tree.lazy_socket, static_cast<pid_t>(p.entry.pid())));
    keep.push_back(uffd.get());
  }
  // Its fds and memory are in place.
  TRY(kinds_in_task(*tree.kinds, c, p, channel, "restore_process", &Kind::restore_process));
  // What the restore opened for itself (pipe ends, shmem objects) goes now.
  if (root_fd) keep.push_back(root_fd.get());
  TRY(close_restore_fds(sharing, *fds_end, keep));
  // Nothing of the restore closes an fd of the table after this (but the
  // executable, in the blob).
  TRY(kinds_in_task(*tree.kinds, c, p, channel, "restore_process_last", &Kind::restore_process_last));
  // A chrooted process gets its root last: nothing after this opens a path.
  if (root_fd) {
    // chroot() takes a path: the root's own fd, through /proc, names it
    // even where it is a ghost directory. The cwd stays where it is.
    std::string self = fmt::format("/proc/self/fd/{}", root_fd.get());
    if (::chroot(self.c_str()) != 0) return failf_errno("cannot chroot to {}", root_dir->reg().path());
  }
  root_fd.reset();

  BlobInputs in;
  in.process = &p;
  in.plan = &plan;
  in.here = here;
  in.rlimits = limits.limits;
  in.channel_fd = channel;
  in.exe_fd = exe_fd;
  in.uffd = uffd.release();
  in.root = root;
  for (auto& ns : p.core.own_namespaces())
    send_warn(channel, fmt::format("pid {}: it ran in a {} namespace of its own; it comes back in "
                                   "minicriu's (namespaces are not restored)", p.entry.pid(), ns));
  if (root && p.core.prctl().pdeathsig())
    send_warn(channel, fmt::format("pid {}: its parent death signal {} is not restored: its parent "
                                   "was outside the checkpoint", p.entry.pid(), p.core.prctl().pdeathsig()));
  ASSIGN_OR_RETURN(auto jump, install_blob(in));
  // From here the area belongs to the blob, which unmaps what it no longer needs.
  mem.area.release();
  return jump;
}

}  // namespace

void restore_task(const TreeRestore& tree, const ProcessImages& p, const InheritedSlots& inherited,
                  SharingLink* parent_link) {
  const Checkpoint& c = *tree.checkpoint;
  int channel = tree.channels.at(static_cast<pid_t>(p.entry.pid()));
  Sharing sharing;
  sharing.parent = parent_link;
  sharing.files_of_parent = p.entry.files_of_parent();
  // Signals wait until each thread's rt_sigreturn sets its dumped mask.
  sigset_t all;
  sigfillset(&all);
  ::sigprocmask(SIG_SETMASK, &all, nullptr);
  // If minicriu (or, below the root, the restored parent) dies mid-restore,
  // this half-made process must not live on; the blob sets the dumped
  // pdeathsig once the parent said go.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  auto fail_task = [&](Error e) {
    e.context(fmt::format("pid {}", p.entry.pid()));
    // A parent waiting on the link would wait forever: it fails with this.
    if (sharing.parent) sharing.parent->tell_parent_failed(e);
    send_error(channel, e);
    ::_exit(1);
  };
  bool root = p.entry.ppid() == 0 || !c.process(static_cast<pid_t>(p.entry.ppid()));
  if (auto st = enter_session(p, channel, root); !st) fail_task(st.error());
  // Before the children: they inherit the session's terminal.
  if (auto st = kinds_in_task(*tree.kinds, c, p, channel, "restore_session", &Kind::restore_session); !st)
    fail_task(st.error());
  if (auto st = fault_point("restore/task-memory"); !st) fail_task(st.error());
  auto mem = prepare_memory(tree, p, inherited);
  if (!mem) fail_task(mem.error());
  // Where this process's private memory waits: its children's twins of it
  // start from these slots, inherited.
  InheritedSlots mine;
  for (int i = 0; i < p.mm.vmas_size(); i++)
    if (mem->plan.slot[i] &&
        (p.mm.vmas(i).kind() == img::VMA_ANON_PRIVATE || p.mm.vmas(i).kind() == img::VMA_FILE_PRIVATE))
      mine[p.mm.vmas(i).start()] = mem->plan.slot[i];
  // Children now, while this task is minicriu code and single-threaded: they
  // inherit its session and group, its memory, every shared object opened.
  int floor = restore_fd_floor(c);
  for (const ProcessImages& child : c.processes) {
    if (child.entry.ppid() != p.entry.pid()) continue;
    uint64_t shares = child.entry.zombie() ? 0 : sharing_flags(child.entry);
    if (!shares) {
      if (auto st = create_child_task(child, [&] { restore_task(tree, child, mine); }); !st)
        fail_task(st.error());
      continue;
    }
    auto link = SharingLink::make(static_cast<pid_t>(child.entry.pid()), shares, floor);
    if (!link) fail_task(link.error());
    SharingLink& to_child = sharing.children.emplace_back(std::move(*link));
    UniqueFd pidfd;
    if (auto st = create_child_task(child, [&] { restore_task(tree, child, mine, &to_child); }, &pidfd, floor); !st)
      fail_task(st.error());
    to_child.set_child_pidfd(std::move(pidfd));
  }
  // Nothing shared changes before every child that shares it is done with
  // what it inherited (the tree's shared files, its pages file, the cwd the
  // image directory may be relative to).
  for (SharingLink& child : sharing.children)
    if (auto st = child.wait_child(SharingStep::inherited); !st) fail_task(st.error());
  if (sharing.parent) {
    Status st = sharing.parent->tell_parent(SharingStep::inherited);
    if (st && sharing.files_of_parent) st = sharing.parent->wait_parent(SharingStep::installed);
    if (!st) fail_task(st.error());
  }
  auto jump = prepare(tree, p, channel, root, *mem, sharing);
  if (!jump) fail_task(jump.error());
  unregister_glibc_rseq();
  jump_to_blob(*jump);
}

}  // namespace minicriu
