// Unprivileged users (issue 16): minicriu run as a user that is not root, with
// CAP_CHECKPOINT_RESTORE as an ambient capability or with no capability at
// all. The test driver runs as root; each command and each target runs in a
// forked child that became the user (setresuid, capset, ambient caps) before
// exec. The user is a bare uid with no passwd entry: nothing on the system is
// changed.
//
// A user may dump what they could ptrace and restore what they could have
// made themselves; everything else is refused in one line naming the process
// and the field, before anything is touched or created.
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "e2e_util.hpp"
#include "images/image_io.hpp"
#include "minicriu/minicriu.hpp"

namespace {

using namespace e2e;
namespace fs = std::filesystem;

constexpr uid_t kUser = 3717;   // the user of these tests
constexpr uid_t kOther = 3718;  // another user
constexpr uint64_t kCheckpointRestore = uint64_t{1} << 40;
constexpr uint64_t kNetBindService = uint64_t{1} << 10;

struct User {
  uid_t uid = kUser;
  uint64_t caps = 0;  // permitted, effective, inheritable and ambient
  bool no_new_privs = false;
};
const User kWithCap{kUser, kCheckpointRestore};
const User kWithout{kUser, 0};

// In a forked child: become u (its uid as gid, no groups), keeping u.caps
// across the exec that follows as ambient capabilities. false on failure.
bool become(const User& u) {
  if (::setgroups(0, nullptr) != 0 || ::setresgid(u.uid, u.uid, u.uid) != 0) return false;
  if (::prctl(PR_SET_KEEPCAPS, 1) != 0 || ::setresuid(u.uid, u.uid, u.uid) != 0) return false;
  __user_cap_header_struct head{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  for (int i = 0; i < 2; i++) {
    auto half = static_cast<uint32_t>(u.caps >> (32 * i));
    data[i] = {half, half, half};
  }
  if (::syscall(SYS_capset, &head, data) != 0) return false;
  for (int cap = 0; cap < 64; cap++)
    if ((u.caps >> cap) & 1 && ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0) return false;
  if (u.no_new_privs && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return true;
}

int decode(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

// Runs argv as u; its output (stdout and stderr) as run() gives it.
// keep_fd (if not -1) is the command's fd 3.
CommandResult run_as(const User& u, const std::vector<std::string>& argv, int keep_fd = -1) {
  char out[] = "/tmp/minicriu-unpriv-out-XXXXXX";
  int fd = ::mkstemp(out);
  ::close(fd);
  pid_t pid = ::fork();
  if (pid == 0) {
    int o = ::open(out, O_WRONLY | O_APPEND);
    int in = ::open("/dev/null", O_RDONLY);
    if (keep_fd >= 0) ::dup2(keep_fd, 3);
    ::dup2(in, 0);
    ::dup2(o, 1);
    ::dup2(o, 2);
    ::close_range(keep_fd >= 0 ? 4 : 3, ~0u, 0);
    if (!become(u)) {
      ::perror("becoming the test user");
      ::_exit(126);
    }
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  CommandResult r;
  r.status = decode(status);
  r.output = read_text(out);
  ::unlink(out);
  // The user's journal directory (without XDG_RUNTIME_DIR), empty once its
  // dumps are done: not left behind by the test (rmdir fails if it is not).
  ::rmdir(("/tmp/minicriu-" + std::to_string(u.uid)).c_str());
  return r;
}

CommandResult minicriu_as(const User& u, std::vector<std::string> args) {
  args.insert(args.begin(), minicriu_bin());
  return run_as(u, args);
}

// A directory of the test that the user owns (a TempDir is root's, 0700).
struct UserDir {
  TempDir dir;
  explicit UserDir(uid_t uid = kUser) { EXPECT_EQ(::chown(dir.path().c_str(), uid, uid), 0); }
  std::string images(const std::string& name = "images", uid_t uid = kUser) const {
    std::string path = images_dir(dir, name);
    EXPECT_EQ(::chown(path.c_str(), uid, uid), 0);
    return path;
  }
};

// A test program started as u (our child, in a process group of its own):
// stdio to a log in dir, keep_fd (if not -1) as its fd 3.
class UserProgram {
 public:
  UserProgram(const User& u, const std::string& name, const TempDir& dir, std::vector<std::string> args = {},
              int keep_fd = -1)
      : ready_(dir / (name + ".ready")), log_(dir / (name + ".log")) {
    std::vector<std::string> argv{program(name), ready_, dir.path()};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      int o = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (::fchown(o, u.uid, u.uid) != 0) ::_exit(126);  // the process's own, as its files are
      int in = ::open("/dev/null", O_RDONLY);
      if (keep_fd >= 0) ::dup2(keep_fd, 3);
      ::dup2(in, 0);
      ::dup2(o, 1);
      ::dup2(o, 2);
      ::close_range(keep_fd >= 0 ? 4 : 3, ~0u, 0);
      ::setpgid(0, 0);
      if (u.uid != 0 && !become(u)) ::_exit(126);
      std::vector<char*> a;
      for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
      a.push_back(nullptr);
      ::execv(a[0], a.data());
      ::_exit(127);
    }
  }
  ~UserProgram() {
    if (pid_ > 0 && pid_exists(pid_)) {
      ::kill(pid_, SIGKILL);
      wait_pid(pid_, 5000);
    }
  }
  pid_t pid() const { return pid_; }
  bool wait_ready() {
    for (int i = 0; i < 2000; i++) {
      if (::access(ready_.c_str(), F_OK) == 0) return true;
      int st;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }
  // It checks itself (SIGUSR1) and exits: its exit code (or 128+signal).
  int verify() {
    ::kill(pid_, SIGUSR1);
    int r = wait_pid(pid_).value_or(-1);
    pid_ = -1;
    return r;
  }
  void forget() { pid_ = -1; }
  std::string log() const { return read_text(log_); }

 private:
  std::string ready_, log_;
  pid_t pid_ = -1;
};

std::string status_line(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key + ":", 0) == 0) return line.substr(key.size() + 1);
  return "";
}

// `minicriu dump` as u, killing the target; it is reaped (as our child).
void dump_as(const User& u, UserProgram& p, const std::string& images) {
  auto r = minicriu_as(u, {"dump", "-t", std::to_string(p.pid()), "-D", images});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(wait_pid(p.pid()).value_or(-1), 128 + SIGKILL);
  p.forget();
  reap_zombies();
}

// `minicriu restore -d` as u: the restored root's pid, -1 on failure.
pid_t restore_as(const User& u, const std::string& images, std::string* output = nullptr) {
  auto r = minicriu_as(u, {"restore", "-d", "-D", images});
  if (output) *output = r.output;
  if (r.status != 0) return -1;
  std::string out = r.output;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  auto nl = out.rfind('\n');
  std::string last = nl == std::string::npos ? out : out.substr(nl + 1);
  return !last.empty() && std::isdigit(static_cast<unsigned char>(last[0])) ? std::stoi(last) : -1;
}

// Every file of the images is the user's and 0600.
void expect_private_images(const std::string& images, uid_t owner) {
  int n = 0;
  for (auto& e : fs::directory_iterator(images)) {
    struct stat st;
    ASSERT_EQ(::lstat(e.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u) << e.path();
    EXPECT_EQ(st.st_uid, owner) << e.path();
    n++;
  }
  EXPECT_GT(n, 3);
}

TEST(Unpriv, CheckSaysWhatThisUserMayDo) {
  auto with = minicriu_as(kWithCap, {"check"});
  EXPECT_NE(with.output.find("dump as this user: only processes it could ptrace: real, effective and saved uids "
                             "3717 and gids 3717, no capability beyond its own (CAP_CHECKPOINT_RESTORE)"),
            std::string::npos)
      << with.output;
  EXPECT_NE(with.output.find("TCP connections no (CAP_NET_ADMIN"), std::string::npos) << with.output;
  EXPECT_NE(with.output.find("ok   restore as this user: processes with uids 3717, gids 3717 and its own groups"),
            std::string::npos)
      << with.output;
  auto without = minicriu_as(kWithout, {"check"});
  EXPECT_NE(without.output.find("no   restore as this user: nothing: it needs CAP_CHECKPOINT_RESTORE"),
            std::string::npos)
      << without.output;
  EXPECT_NE(without.output.find("shared memory, memfd and deleted-file mappings no"), std::string::npos)
      << without.output;
  auto root = run_minicriu({"check"});
  EXPECT_NE(root.output.find("ok   dump as this user: any process (CAP_SYS_PTRACE)"), std::string::npos)
      << root.output;
  EXPECT_NE(root.output.find("ok   restore as this user: processes with any uids (CAP_SETUID)"), std::string::npos)
      << root.output;
}

// The user's own processes, dumped and restored by the user with
// CAP_CHECKPOINT_RESTORE: they come back with their pids, as the user, and
// pass their own checks; the images are the user's, 0600.
struct UnprivCase {
  std::string program;
  std::vector<std::string> args;
};

class UnprivCycle : public testing::TestWithParam<UnprivCase> {};

TEST_P(UnprivCycle, TheUserDumpsAndRestoresTheirOwnTree) {
  UserDir d;
  UserProgram p(kWithout, GetParam().program, d.dir, GetParam().args);
  ASSERT_TRUE(p.wait_ready()) << p.log();
  pid_t pid = p.pid();
  std::string images = d.images();
  ASSERT_NO_FATAL_FAILURE(dump_as(kWithCap, p, images));
  expect_private_images(images, kUser);
  RestoredTree restored;
  restored.add_from(images);
  auto view = show_json(images);
  for (auto& proc : view.processes())
    ASSERT_TRUE(wait_gone(static_cast<pid_t>(proc.pstree().pid())));
  std::string out;
  ASSERT_EQ(restore_as(kWithCap, images, &out), pid) << out;
  EXPECT_EQ(status_line(pid, "Uid"), "\t3717\t3717\t3717\t3717");
  EXPECT_EQ(status_line(pid, "CapEff"), "\t0000000000000000");
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << p.log();
}

std::string case_name(const testing::TestParamInfo<UnprivCase>& info) {
  std::string name = info.param.program;
  for (auto& a : info.param.args) name += "_" + a;
  for (auto& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

INSTANTIATE_TEST_SUITE_P(Programs, UnprivCycle,
                         testing::Values(UnprivCase{"basic", {}}, UnprivCase{"threads", {}}, UnprivCase{"tree", {"extras"}},
                                         UnprivCase{"pipes", {}}, UnprivCase{"timers", {}}, UnprivCase{"unixsk", {}},
                                         UnprivCase{"shared", {}}, UnprivCase{"ghost", {"shared"}}, UnprivCase{"kinds", {}},
                                         UnprivCase{"udp", {}}),
                         case_name);

// Without CAP_CHECKPOINT_RESTORE a user still dumps their processes (with
// --leave-running, and killing them), but restore is refused in one line
// before anything is made; the same images restore with the capability.
TEST(Unpriv, WithoutCheckpointRestoreTheUserDumpsButMayNotRestore) {
  UserDir d;
  UserProgram p(kWithout, "basic", d.dir);
  ASSERT_TRUE(p.wait_ready()) << p.log();
  pid_t pid = p.pid();
  auto running = minicriu_as(kWithout, {"dump", "-R", "-t", std::to_string(pid), "-D", d.images("running")});
  ASSERT_EQ(running.status, 0) << running.output;
  EXPECT_EQ(status_line(pid, "TracerPid"), "\t0");
  std::string images = d.images();
  ASSERT_NO_FATAL_FAILURE(dump_as(kWithout, p, images));
  expect_private_images(images, kUser);
  RestoredTree restored;
  restored.add_from(images);
  auto refused = minicriu_as(kWithout, {"restore", "-d", "-D", images});
  expect_one_line_error(refused, "restore needs CAP_CHECKPOINT_RESTORE");
  EXPECT_NE(refused.output.find("minicriu (uid 3717) does not have"), std::string::npos) << refused.output;
  EXPECT_FALSE(pid_exists(pid));
  std::string out;
  ASSERT_EQ(restore_as(kWithCap, images, &out), pid) << out;
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << p.log();
}

// A user may not dump root's process, another user's, or one of their own
// that holds a capability they lack: one line naming the pid and why; the
// target was never seized and runs on intact.
TEST(Unpriv, ProcessesTheUserCouldNotPtraceAreRefusedAndRunOn) {
  struct Target {
    User owner;
    std::string needle;
  };
  for (const Target& t : {Target{User{0, 0}, "its real uid is 0"}, Target{User{kOther, 0}, "its real uid is 3718"},
                          Target{User{kUser, kNetBindService}, "it has capabilities minicriu lacks: CAP_NET_BIND_SERVICE"}}) {
    SCOPED_TRACE(t.needle);
    UserDir d(t.owner.uid);
    UserProgram p(t.owner, "basic", d.dir);
    ASSERT_TRUE(p.wait_ready()) << p.log();
    Holdings before = holdings_of(p.pid());
    auto r = minicriu_as(kWithCap, {"dump", "-t", std::to_string(p.pid()), "-D", UserDir().images()});
    expect_one_line_error(r, "pid " + std::to_string(p.pid()) + ": minicriu (uid 3717, without CAP_SYS_PTRACE) "
                                                                "may dump only processes it could ptrace");
    EXPECT_NE(r.output.find(t.needle), std::string::npos) << r.output;
    EXPECT_EQ(holdings_of(p.pid()), before);
    EXPECT_EQ(p.verify(), 0) << p.log();
  }
}

// A checkpoint of the user's doctored to claim more than the user has: each
// refused at restore in one line naming the process and the field, nothing
// made; the real images restore after.
TEST(Unpriv, ADoctoredImageClaimingMoreIsRefusedBeforeAnythingIsMade) {
  UserDir d;
  UserProgram p(kWithout, "basic", d.dir);
  ASSERT_TRUE(p.wait_ready()) << p.log();
  pid_t pid = p.pid();
  std::string images = d.images();
  ASSERT_NO_FATAL_FAILURE(dump_as(kWithCap, p, images));
  RestoredTree restored;
  restored.add_from(images);
  std::string core_path = images + "/core-" + std::to_string(pid) + ".img";
  auto core = minicriu::read_single_image<minicriu::img::ProcessCore>(core_path, minicriu::ImageKind::core);
  ASSERT_TRUE(core) << core.error().what();
  auto write_core = [&](const minicriu::img::ProcessCore& c) {
    auto w = minicriu::ImageWriter::create(core_path, minicriu::ImageKind::core);
    ASSERT_TRUE(w);
    ASSERT_TRUE(w->write(c));
    ASSERT_TRUE(w->commit());
    ASSERT_EQ(::chown(core_path.c_str(), kUser, kUser), 0);
  };
  struct Doctoring {
    std::function<void(minicriu::img::Creds&)> edit;
    std::string needle;
    User as = kWithCap;
  };
  std::string who = "pid " + std::to_string(pid) + ": ";
  std::vector<Doctoring> cases = {
      {[](auto& c) { c.set_uids(0, 0); }, who + "its real uid 0 is not one minicriu (uid 3717) holds, and giving it "
                                                "needs CAP_SETUID"},
      {[](auto& c) { c.set_uids(1, 0); }, who + "its effective uid 0 is not one minicriu"},
      {[](auto& c) { c.set_uids(3, 0); }, who + "its filesystem uid 0 is none of its real, effective and saved ones"},
      {[](auto& c) { c.set_gids(2, 0); }, who + "its saved gid 0 is not one minicriu (uid 3717) holds, and giving it "
                                                "needs CAP_SETGID"},
      {[](auto& c) { c.add_groups(0); }, who + "its supplementary groups (0) are not minicriu's own (none)"},
      {[](auto& c) {
         c.set_cap_prm(c.cap_prm() | (1u << 21));
         c.set_cap_eff(c.cap_eff() | (1u << 21));
       },
       who + "its permitted capabilities hold CAP_SYS_ADMIN, which minicriu (uid 3717) does not have"},
      {[](auto& c) { c.set_cap_eff(c.cap_eff() | (1u << 12)); },
       who + "its effective capabilities CAP_NET_ADMIN are not permitted ones"},
      {[](auto& c) { c.set_cap_bnd(c.cap_bnd() & ~(uint64_t{1} << 12)); },
       who + "its capability bounding set lacks CAP_NET_ADMIN, which minicriu's holds, and dropping them needs "
             "CAP_SETPCAP"},
      {[](auto& c) { c.set_cap_bnd(c.cap_bnd() | (uint64_t{1} << 50)); },
       who + "its capability bounding set holds capability 50, which minicriu's lacks"},
      {[](auto& c) { c.set_cap_inh(uint64_t{1} << 12); },
       who + "its inheritable capabilities hold CAP_NET_ADMIN, which minicriu may not give without CAP_SETPCAP"},
      {[](auto& c) { c.set_securebits(1); }, who + "its securebits 0x1 are not minicriu's 0x0, and setting them needs "
                                                   "CAP_SETPCAP"},
      {[](auto&) {}, who + "it ran without no_new_privs, which minicriu runs with and cannot clear",
       User{kUser, kCheckpointRestore, true}},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.needle);
    auto bad = *core;
    c.edit(*bad.mutable_creds());
    ASSERT_NO_FATAL_FAILURE(write_core(bad));
    auto r = minicriu_as(c.as, {"restore", "-d", "-D", images});
    expect_one_line_error(r, c.needle);
    EXPECT_FALSE(pid_exists(pid));
  }
  ASSERT_NO_FATAL_FAILURE(write_core(*core));
  std::string out;
  ASSERT_EQ(restore_as(kWithCap, images, &out), pid) << out;
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << p.log();
}

// A process of the user's that holds a file the user may not open (handed
// over by root before it dropped to the user): the user dumps it, but the
// restore, which reopens files with the user's own credentials, is refused
// in one line and makes nothing; root restores the same images, and the
// process runs on as the user with its file.
TEST(Unpriv, AFileTheUserMayNotOpenIsNotGivenBack) {
  UserDir d;
  std::string locked = d.dir / "root-only";
  ASSERT_EQ(::mkdir(locked.c_str(), 0755), 0);
  std::string secret = locked + "/secret";
  std::ofstream(secret) << "root's";
  ASSERT_EQ(::chmod(secret.c_str(), 0600), 0);
  int fd = ::open(secret.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  UserProgram p(kWithout, "basic", d.dir, {}, fd);
  ::close(fd);
  ASSERT_TRUE(p.wait_ready()) << p.log();
  pid_t pid = p.pid();
  std::string images = d.images();
  ASSERT_NO_FATAL_FAILURE(dump_as(kWithCap, p, images));
  RestoredTree restored;
  restored.add_from(images);
  auto r = minicriu_as(kWithCap, {"restore", "-d", "-D", images});
  expect_one_line_error(r, secret);
  EXPECT_NE(r.output.find("Permission denied"), std::string::npos) << r.output;
  EXPECT_FALSE(pid_exists(pid));
  ASSERT_EQ(restore_detached(images), pid);
  EXPECT_EQ(status_line(pid, "Uid"), "\t3717\t3717\t3717\t3717");
  EXPECT_EQ(fs::read_symlink("/proc/" + std::to_string(pid) + "/fd/3").string(), secret);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << p.log();
}

// TCP connections need TCP_REPAIR and the network lock (CAP_NET_ADMIN): the
// user's dump of a tree with one is refused in one line; no lock is left
// and the tree runs on intact.
TEST(Unpriv, ATcpConnectionIsRefusedWithoutNetAdmin) {
  UserDir d;
  UserProgram p(kWithout, "tcpstream", d.dir, {"pair", "v4"});
  ASSERT_TRUE(p.wait_ready()) << p.log();
  auto r = minicriu_as(kWithCap, {"dump", "-t", std::to_string(p.pid()), "-D", d.images()});
  expect_one_line_error(r, "a TCP connection is read with TCP_REPAIR and held silent by the network lock, which "
                           "need CAP_NET_ADMIN");
  auto tables = run({"/usr/sbin/nft", "list", "tables"});
  EXPECT_EQ(tables.output.find("minicriu-" + std::to_string(p.pid())), std::string::npos) << tables.output;
  EXPECT_EQ(p.verify(), 0) << p.log();
}

// Image directories minicriu makes (the rounds of an iterative dump) are
// 0700, image files 0600 whatever the umask, a log file 0600.
TEST(Unpriv, ImageDirectoriesAndFilesAreTheirOwnersOnly) {
  TempDir dir;
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  mode_t old = ::umask(0);
  minicriu::DumpOptions o;
  o.pid = p.pid();
  o.images_dir = images_dir(dir, "iters");
  o.leave_running = true;
  auto r = minicriu::dump_iters(o, [](const minicriu::DumpRound&) { return 0; });
  ::umask(old);
  ASSERT_TRUE(r) << r.error().what();
  for (const char* round : {"1", "2"}) {
    struct stat st;
    ASSERT_EQ(::stat((o.images_dir + "/" + round).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u) << round;
    for (auto& e : fs::directory_iterator(o.images_dir + "/" + round)) {
      if (e.is_symlink()) continue;  // the link to the parent round
      ASSERT_EQ(::lstat(e.path().c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 07777, 0600u) << e.path();
    }
  }
  std::string log = dir / "dump.log";
  auto logged = run({"/bin/sh", "-c", "umask 0; exec " + minicriu_bin() + " dump -R -t " + std::to_string(p.pid()) +
                                          " -D " + images_dir(dir) + " -o " + log});
  ASSERT_EQ(logged.status, 0) << logged.output;
  struct stat st;
  ASSERT_EQ(::stat(log.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  expect_intact(p);
}

}  // namespace
