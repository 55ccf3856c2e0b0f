// Dump on real processes: the image set is complete and decodes, the target is
// left running (--leave-running) or killed, and every refused dump leaves the
// target running and intact, which the target then proves by checking itself.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "e2e_util.hpp"
#include "minicriu.pb.h"

using namespace e2e;

namespace {


bool no_partial_images(const std::string& dir) {
  for (auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".img" || e.path().extension() == ".part") return false;
  return true;
}

}  // namespace

TEST(Dump, ProgramVerifiesItselfWithoutCheckpoint) {
  TempDir dir;
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  p.signal(SIGUSR1);
  EXPECT_EQ(p.wait_exit().value_or(-1), 0) << p.log();
}

TEST(Dump, LeaveRunningKeepsTargetIntactAndImagesDecode) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  EXPECT_TRUE(std::filesystem::exists(images + "/inventory.img"));

  auto shown = run_minicriu({"show", "-D", images});
  ASSERT_EQ(shown.status, 0) << shown.output;
  EXPECT_NE(shown.output.find("process " + std::to_string(p.pid())), std::string::npos) << shown.output;
  EXPECT_NE(shown.output.find("basic.data (flags"), std::string::npos) << shown.output;

  auto view = show_json(images);
  ASSERT_EQ(view.processes_size(), 1);
  const auto& proc = view.processes(0);
  EXPECT_EQ(proc.pstree().pid(), static_cast<uint32_t>(p.pid()));
  ASSERT_EQ(proc.core().threads_size(), 1);
  EXPECT_GE(proc.core().threads(0).xsave().size(), 576u);  // legacy area + header at least
  uint64_t pages = dumped_pages(proc);
  EXPECT_GE(pages, (32u << 20) / 4096) << "the 32 MiB pattern was not dumped";
  EXPECT_EQ(proc.pages_file_size(), pages * 4096);
  // fd and its dup share one open file description: one file entry, offset 777.
  int data_fds = 0;
  uint32_t id = 0;
  for (auto& fd : proc.fds())
    for (auto& f : view.files())
      if (f.id() == fd.file_id() && f.has_reg() && f.reg().path().ends_with("basic.data")) {
        data_fds++;
        EXPECT_EQ(f.reg().pos(), 777u);
        if (id) {
          EXPECT_EQ(id, f.id());
        }
        id = f.id();
      }
  EXPECT_EQ(data_fds, 2);
  expect_intact(p);
}

TEST(Dump, WithoutLeaveRunningKillsTheTreeAfterACompleteDump) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(images + "/inventory.img"));
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  EXPECT_EQ(run_minicriu({"show", "-D", images}).status, 0);
}

TEST(DumpFails, NonExistentPid) {
  TempDir dir;
  // A pid above pid_max's default range that nothing holds.
  pid_t pid = 4000000;
  while (pid_exists(pid)) pid++;
  expect_one_line_error(run_minicriu({"dump", "-t", std::to_string(pid), "-D", dir.path()}),
                        "no such process");
}

TEST(DumpFails, PidAlreadyTracedIsRefusedAndLeftIntact) {
  TempDir dir;
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  // We trace it, as a debugger would.
  ASSERT_EQ(::ptrace(PTRACE_SEIZE, p.pid(), nullptr, nullptr), 0);
  expect_one_line_error(run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", dir.path()}),
                        "already traced by pid " + std::to_string(::getpid()));
  ASSERT_EQ(::ptrace(PTRACE_INTERRUPT, p.pid(), nullptr, nullptr), 0);
  int status;
  ASSERT_EQ(::waitpid(p.pid(), &status, __WALL), p.pid());
  ASSERT_EQ(::ptrace(PTRACE_DETACH, p.pid(), nullptr, nullptr), 0);
  EXPECT_TRUE(no_partial_images(dir.path()));
  expect_intact(p);
}

TEST(DumpFails, ImageDirMissing) {
  TempDir dir;
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  expect_one_line_error(run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", dir / "nope"}),
                        "is not usable");
  expect_intact(p);
}

TEST(DumpFails, ImageDirReadOnly) {
  TempDir dir;
  TmpfsMount ro(dir / "ro", "size=1m");
  if (!ro.ok()) GTEST_SKIP() << "cannot mount tmpfs here (needs root)";
  ASSERT_EQ(::mount(nullptr, (dir / "ro").c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr), 0);
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  expect_one_line_error(run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", dir / "ro"}),
                        "is not writable");
  expect_intact(p);
}

TEST(DumpFails, DiskFullMidDumpLeavesTargetIntactAndNoImages) {
  TempDir dir;
  TmpfsMount small(dir / "small", "size=2m");
  if (!small.ok()) GTEST_SKIP() << "cannot mount tmpfs here (needs root)";
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  // 32 MiB of pattern cannot fit in 2 MiB: the page splice fails with ENOSPC
  // while the target is frozen with the parasite inside.
  expect_one_line_error(run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", dir / "small"}),
                        "No space left on device");
  EXPECT_TRUE(no_partial_images(dir / "small"));
  expect_intact(p);
}

TEST(DumpFails, UnsupportedFdIsNamedAndTargetLeftIntact) {
  TempDir dir;
  // A vsock socket: not supported yet (netlink ones are, since
  // src/net/netlink_socket.cc).
  Program p("basic", dir, {"unsupported"});
  ASSERT_TRUE(p.wait_ready());
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", dir.path()});
  expect_one_line_error(r, "pid " + std::to_string(p.pid()) + ": fd ");
  EXPECT_NE(r.output.find("(socket:["), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("which minicriu cannot checkpoint yet; close it in the application before the dump"),
            std::string::npos) << r.output;
  EXPECT_TRUE(no_partial_images(dir.path()));
  expect_intact(p);
}

TEST(DumpFails, BadArgumentsAreOneLine) {
  auto r = run_minicriu({"dump", "-t", "notapid", "-D", "/tmp"});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--tree"), std::string::npos) << r.output;
}

TEST(Dump, EightThreadsInBlockingCallsCarryOnAfterLeaveRunning) {
  TempDir dir;
  Program p("threads", dir);
  ASSERT_TRUE(p.wait_ready());
  for (int round = 0; round < 3; round++) {
    std::string images = dir / ("images" + std::to_string(round));
    std::filesystem::create_directory(images);
    auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images, "-R"});
    ASSERT_EQ(r.status, 0) << r.output;
    auto view = show_json(images);
    ASSERT_EQ(view.processes(0).core().threads_size(), 9);
    EXPECT_EQ(view.processes(0).pstree().tids(0), static_cast<uint32_t>(p.pid()));
    ::usleep(20 * 1000);
  }
  expect_intact(p);
}

TEST(Dump, TheCApiAsARuntimeUsesIt) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  auto r = run({RUNTIME_CHECKPOINT_BIN, std::to_string(p.pid()), images});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("[minicriu]"), std::string::npos) << "log callback not called: " << r.output;
  EXPECT_TRUE(std::filesystem::exists(images + "/inventory.img"));
  auto bad = run({RUNTIME_CHECKPOINT_BIN, "4000000", images});
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.output.find("checkpoint failed: pid 4000000: no such process"), std::string::npos) << bad.output;
  expect_intact(p);
}

TEST(Dump, ThreeLevelTreeIsDumpedWholeAndLeftRunning) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("tree", dir);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  ASSERT_EQ(view.processes_size(), 4);
  EXPECT_EQ(view.processes(0).pstree().pid(), static_cast<uint32_t>(p.pid()));
  EXPECT_EQ(view.processes(0).pstree().ppid(), 0u);
  // Parents come before their children.
  for (int i = 1; i < 4; i++) {
    bool parent_before = false;
    for (int j = 0; j < i; j++)
      parent_before |= view.processes(j).pstree().pid() == view.processes(i).pstree().ppid();
    EXPECT_TRUE(parent_before) << "process " << i;
  }
  expect_intact(p);
}

TEST(Dump, KillingATreeKillsEveryProcessOfIt) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("tree", dir);
  ASSERT_TRUE(p.wait_ready());
  auto json_pids = [&] {
    auto view = show_json(images);
    std::vector<pid_t> pids;
    for (auto& proc : view.processes()) pids.push_back(static_cast<pid_t>(proc.pstree().pid()));
    return pids;
  };
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images});
  ASSERT_EQ(r.status, 0) << r.output;
  auto pids = json_pids();
  ASSERT_EQ(pids.size(), 4u);
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  // The descendants were reparented to us (subreaper) and must be dead too.
  for (pid_t pid : pids) EXPECT_TRUE(wait_gone(pid)) << "pid " << pid << " survived";
}

TEST(Check, ThisMachineHasWhatDumpAndRestoreNeed) {
  auto r = run_minicriu({"check"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("ok   ptrace seize"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ok   clone3 with set_tid"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ok   TCP_REPAIR and inet sock_diag"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("FAIL"), std::string::npos) << r.output;
}

TEST(Dump, ZombiesCredsAndPrctlStateAreRecorded) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("tree", dir, {"extras"});
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  ASSERT_EQ(view.processes_size(), 6);
  int zombies = 0;
  for (auto& proc : view.processes()) {
    if (!proc.pstree().zombie()) continue;
    zombies++;
    EXPECT_EQ(proc.pstree().ppid(), static_cast<uint32_t>(p.pid()));
    EXPECT_EQ(proc.pstree().exit_status(), 7u << 8);
  }
  EXPECT_EQ(zombies, 1);
  const auto& root = view.processes(0).core();
  EXPECT_TRUE(root.prctl().child_subreaper());
  bool pdeathsig = false;
  for (auto& proc : view.processes())
    pdeathsig |= !proc.pstree().zombie() && proc.core().prctl().pdeathsig() == static_cast<uint32_t>(SIGUSR2);
  EXPECT_TRUE(pdeathsig) << "node 1's pdeathsig";
  EXPECT_EQ(root.umask(), 027u);
  ASSERT_EQ(root.creds().uids_size(), 4);
  EXPECT_EQ(root.creds().uids(1), ::geteuid());
  EXPECT_NE(root.creds().cap_bnd(), 0u);
  auto shown = run_minicriu({"show", "-D", images});
  EXPECT_NE(shown.output.find("zombie of ppid " + std::to_string(p.pid()) + ", wait status 0x700"),
            std::string::npos) << shown.output;
  expect_intact(p);
}

TEST(Dump, PosixTimersAndItimersAreRecordedAndKeepTicking) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("timers", dir);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  const auto& core = view.processes(0).core();
  ASSERT_EQ(core.posix_timers_size(), 1);
  EXPECT_EQ(core.posix_timers(0).interval_ns(), 50000000u);
  EXPECT_GT(core.posix_timers(0).value_ns(), 0u);
  EXPECT_LE(core.posix_timers(0).value_ns(), 50000000u);
  EXPECT_EQ(core.posix_timers(0).sigev_value(), 0x5eedu);
  EXPECT_EQ(core.posix_timers(0).signo(), static_cast<int>(SIGRTMIN));
  ASSERT_EQ(core.itimers_size(), 1);
  EXPECT_EQ(core.itimers(0).interval_us(), 100000u);
  expect_intact(p);
}

TEST(Dump, AStoppedProcessStaysStoppedAndIsRecordedSo) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  p.signal(SIGSTOP);
  auto state = [&] {
    std::string s = run({"/bin/sh", "-c", "grep State /proc/" + std::to_string(p.pid()) + "/status"}).output;
    return s;
  };
  for (int i = 0; i < 200 && state().find("T (stopped)") == std::string::npos; i++) ::usleep(5000);
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  EXPECT_TRUE(show_json(images).processes(0).pstree().stopped());
  ::usleep(100 * 1000);
  EXPECT_NE(state().find("T (stopped)"), std::string::npos) << "a stopped target was resumed by the dump";
  p.signal(SIGCONT);
  expect_intact(p);
}

TEST(Dump, ATargetInItsOwnNetworkNamespaceIsReached) {
  // The parasite's socket is made in the target's namespace.
  TempDir dir;
  Program p("basic", dir, {"netns"});
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NE(std::filesystem::read_symlink("/proc/" + std::to_string(p.pid()) + "/ns/net"),
            std::filesystem::read_symlink("/proc/self/ns/net"))
      << "the program did not get a network namespace of its own";
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images_dir(dir)));
  expect_intact(p);
}
