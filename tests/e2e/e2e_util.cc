#include "e2e_util.hpp"

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace e2e {

namespace {

using Clock = std::chrono::steady_clock;

struct Subreaper {
  Subreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 1); }
} subreaper;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int decode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// stdin from /dev/null, stdout and stderr to out; pass_fds[i] as fd 3 + i,
// nothing else.
void redirect_stdio(const std::string& out, const std::vector<int>& pass_fds) {
  std::vector<int> keep;
  for (int fd : pass_fds) keep.push_back(::fcntl(fd, F_DUPFD, 10 + static_cast<int>(pass_fds.size())));
  int in = ::open("/dev/null", O_RDONLY);
  int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  ::dup2(in, 0);
  ::dup2(o, 1);
  ::dup2(o, 2);
  for (size_t i = 0; i < keep.size(); i++) ::dup2(keep[i], 3 + static_cast<int>(i));
  ::close_range(3 + static_cast<unsigned>(keep.size()), ~0u, 0);
}

void redirect_stdio(const std::string& out, int pass_fd) {
  redirect_stdio(out, pass_fd >= 0 ? std::vector<int>{pass_fd} : std::vector<int>{});
}

[[noreturn]] void exec_child(const std::vector<std::string>& argv, const std::string& out, int pass_fd) {
  redirect_stdio(out, pass_fd);
  ::setpgid(0, 0);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  ::execv(args[0], args.data());
  ::_exit(127);
}

}  // namespace

std::string minicriu_bin() { return MINICRIU_BIN; }
std::string program(const std::string& name) {
  return name.find('/') != std::string::npos ? name : std::string(PROGRAMS_DIR) + "/" + name;
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/minicriu-e2e-XXXXXX";
  path_ = ::mkdtemp(tmpl);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

CommandResult run(const std::vector<std::string>& argv, int pass_fd) {
  return run(argv, pass_fd >= 0 ? std::vector<int>{pass_fd} : std::vector<int>{});
}

CommandResult run(const std::vector<std::string>& argv, const std::vector<int>& pass_fds) {
  char tmpl[] = "/tmp/minicriu-out-XXXXXX";
  int fd = ::mkstemp(tmpl);
  ::close(fd);
  pid_t pid = ::fork();
  if (pid == 0) {
    // Keep our process group: the command may restore a tree into it.
    redirect_stdio(tmpl, pass_fds);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  CommandResult r;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.status = decode(status);
  r.output = slurp(tmpl);
  ::unlink(tmpl);
  return r;
}

CommandResult run_minicriu(const std::vector<std::string>& args, int pass_fd) {
  std::vector<std::string> argv{minicriu_bin()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, pass_fd);
}

CommandResult run_minicriu(const std::vector<std::string>& args, const std::vector<int>& pass_fds) {
  std::vector<std::string> argv{minicriu_bin()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, pass_fds);
}

Program::Program(const std::string& name, const TempDir& dir, std::vector<std::string> extra_args,
                 int pass_fd) {
  std::string base = std::filesystem::path(name).filename();
  ready_file_ = dir / (base + ".ready");
  log_file_ = dir / (base + ".log");
  std::vector<std::string> argv{program(name), ready_file_, dir.path()};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  pid_ = ::fork();
  if (pid_ == 0) exec_child(argv, log_file_, pass_fd);
}

Program::~Program() {
  if (pid_ > 0 && pid_exists(pid_)) {
    ::kill(pid_, SIGKILL);
    wait_pid(pid_, 5000);
  }
}

bool Program::wait_ready(int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (::access(ready_file_.c_str(), F_OK) == 0) return true;
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

bool Program::alive() const {
  if (pid_ <= 0) return false;
  // A zombie is not alive.
  std::ifstream in("/proc/" + std::to_string(pid_) + "/stat");
  std::string s;
  std::getline(in, s);
  auto close = s.rfind(')');
  return close != std::string::npos && close + 2 < s.size() && s[close + 2] != 'Z';
}

void Program::signal(int sig) const {
  if (pid_ > 0) ::kill(pid_, sig);
}

std::optional<int> Program::wait_exit(int timeout_ms) {
  auto r = wait_pid(pid_, timeout_ms);
  if (r) pid_ = -1;
  return r;
}

std::string Program::log() const { return slurp(log_file_); }

TmpfsMount::TmpfsMount(const std::string& where, const std::string& options) : where_(where) {
  std::filesystem::create_directories(where);
  ok_ = ::mount("minicriu-test", where.c_str(), "tmpfs", 0, options.c_str()) == 0;
}

TmpfsMount::~TmpfsMount() {
  if (ok_) ::umount2(where_.c_str(), MNT_DETACH);
}

std::optional<int> wait_pid(pid_t pid, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    int status;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return decode(status);
    if (r < 0 && errno == ECHILD) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return std::nullopt;
}

bool pid_exists(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

bool wait_gone(pid_t pid, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    int status;
    ::waitpid(pid, &status, WNOHANG);  // reaps it if it is our child
    if (!pid_exists(pid)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

void reap_zombies() {
  int status;
  while (::waitpid(-1, &status, WNOHANG) > 0) {
  }
}

minicriu::img::CheckpointView show_json(const std::string& images) {
  auto json = run_minicriu({"show", "--json", "-D", images});
  minicriu::img::CheckpointView view;
  EXPECT_EQ(json.status, 0) << json.output;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(json.output, &view).ok()) << json.output;
  return view;
}

std::string images_dir(const TempDir& dir, const std::string& name) {
  std::string path = dir / name;
  std::filesystem::create_directory(path);
  return path;
}

void dump_leave_running(const Program& p, const std::string& images) {
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images, "--leave-running"});
  ASSERT_EQ(r.status, 0) << r.output;
}

void expect_intact(Program& p) {
  ASSERT_TRUE(p.alive()) << "the target is not running";
  p.signal(SIGUSR1);
  auto st = p.wait_exit();
  ASSERT_TRUE(st.has_value()) << "the target did not exit after SIGUSR1";
  EXPECT_EQ(*st, 0) << p.log();
}

std::string read_text(const std::string& path) { return slurp(path); }

void dump_and_reap(pid_t pid, const std::string& images, Program* p) {
  auto r = run_minicriu({"dump", "-t", std::to_string(pid), "-D", images});
  ASSERT_EQ(r.status, 0) << r.output;
  if (p) {
    EXPECT_EQ(p->wait_exit().value_or(-1), 128 + SIGKILL);
    p->forget();
  } else {
    EXPECT_EQ(wait_pid(pid).value_or(-1), 128 + SIGKILL);
  }
  // The rest of the tree (zombies included) was reparented to us, the
  // subreaper: reaped here, so that every pid is free for the restore.
  auto view = show_json(images);
  for (auto& proc : view.processes())
    ASSERT_TRUE(wait_gone(static_cast<pid_t>(proc.pstree().pid()))) << "pid " << proc.pstree().pid();
}

pid_t restore_detached(const std::string& images) {
  auto r = run_minicriu({"restore", "-d", "-D", images});
  EXPECT_EQ(r.status, 0) << r.output;
  return restored_pid(r);
}

pid_t restored_pid(const CommandResult& r) {
  // The pid is the last line (warnings may come first).
  std::string out = r.output;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  auto nl = out.rfind('\n');
  std::string last = nl == std::string::npos ? out : out.substr(nl + 1);
  return r.status == 0 && !last.empty() && std::isdigit(static_cast<unsigned char>(last[0]))
             ? static_cast<pid_t>(std::stol(last))
             : -1;
}

RestoredTree::~RestoredTree() {
  for (pid_t pid : pids_)
    if (pid_exists(pid)) ::kill(pid, SIGKILL);
  for (pid_t pid : pids_) wait_gone(pid, 2000);
}

void RestoredTree::add_from(const std::string& images) {
  auto view = show_json(images);
  for (auto& proc : view.processes()) pids_.push_back(static_cast<pid_t>(proc.pstree().pid()));
}

void cycle(const std::string& program, int cycles, std::vector<std::string> args, bool same_maps) {
  TempDir dir;
  Program p(program, dir, std::move(args));
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  std::string maps = read_text("/proc/" + std::to_string(pid) + "/maps");
  RestoredTree restored;  // a failed check below must not leave the tree running
  for (int i = 0; i < cycles; i++) {
    std::string images = images_dir(dir, "images" + std::to_string(i));
    ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, images, i == 0 ? &p : nullptr));
    restored.add_from(images);
    ASSERT_EQ(restore_detached(images), pid);
    // Every VMA where it was, nothing of minicriu left behind.
    if (same_maps) {
      EXPECT_EQ(read_text("/proc/" + std::to_string(pid) + "/maps"), maps);
    }
  }
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / (program + ".log"));
}

void expect_one_line_error(const CommandResult& r, const std::string& needle) {
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("minicriu: error: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(needle), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

namespace {

std::string status_field(const std::string& status, const std::string& name) {
  auto at = status.find("\n" + name + ":");
  if (at == std::string::npos) return "?";
  auto start = status.find_first_not_of(" \t", at + name.size() + 2);
  return status.substr(start, status.find('\n', start) - start);
}

}  // namespace

Holdings holdings_of(pid_t pid) {
  Holdings h;
  std::string proc = "/proc/" + std::to_string(pid);
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator(proc + "/fd", ec)) {
    std::error_code lec;
    h.fds[std::stoi(e.path().filename())] = std::filesystem::read_symlink(e.path(), lec).string();
  }
  h.maps = read_text(proc + "/maps");
  for (auto& t : std::filesystem::directory_iterator(proc + "/task", ec)) {
    std::string st = read_text(t.path().string() + "/status");
    std::string state = status_field(st, "State");
    // Running or sleeping, as it likes: only a stop would be ours.
    bool stopped = state.starts_with("T") || state.starts_with("t");
    h.threads[t.path().filename()] =
        "tracer " + status_field(st, "TracerPid") + (stopped ? " stopped " + state : " runs");
  }
  return h;
}

void expect_dump_refused(const std::string& program, const std::vector<std::string>& args,
                         const std::function<std::vector<std::string>(pid_t)>& needles) {
  TempDir dir;
  Program p(program, dir, args);
  ASSERT_TRUE(p.wait_ready());
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images_dir(dir)});
  auto want = needles(p.pid());
  expect_one_line_error(r, want.front());
  for (auto& n : want) EXPECT_NE(r.output.find(n), std::string::npos) << n << "\n" << r.output;
  expect_intact(p);
  reap_zombies();
}

uint64_t dumped_pages(const minicriu::img::ProcessView& proc) {
  uint64_t pages = 0;
  for (auto& e : proc.pagemap())
    if (!e.in_parent()) pages += e.nr_pages();
  return pages;
}

uint64_t ino_of(int fd) {
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0) << "fd " << fd;
  return st.st_ino;
}

}  // namespace e2e
