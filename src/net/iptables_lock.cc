// The iptables backend of the network lock (--network-lock iptables): the
// rules go into a chain of our own, MINICRIU-<hex>, in the filter table,
// jumped to first thing from INPUT and OUTPUT; iptables-restore --noflush
// applies each change as one transaction and leaves every other rule alone.
// IPv6 connections use ip6tables-restore and a chain of the same name there.
#include <fcntl.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <set>
#include <vector>

#include "base/unique_fd.hpp"
#include "net/network_lock_backend.hpp"

extern char** environ;

namespace minicriu {

namespace {

// The command's full path, from PATH and then the sbin directories (root's
// PATH may lack them when minicriu runs from a runtime), or "".
std::string find_command(const std::string& name) {
  std::string dirs = ::getenv("PATH") ? ::getenv("PATH") : "";
  dirs += ":/usr/local/sbin:/usr/sbin:/sbin";
  size_t pos = 0;
  while (pos <= dirs.size()) {
    size_t colon = dirs.find(':', pos);
    if (colon == std::string::npos) colon = dirs.size();
    std::string dir = dirs.substr(pos, colon - pos);
    pos = colon + 1;
    if (dir.empty()) continue;
    std::string path = dir + "/" + name;
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

Result<UniqueFd> memfd_with(const std::string& text) {
  UniqueFd fd(::memfd_create("minicriu-iptables", MFD_CLOEXEC));
  if (!fd) return failf_errno("memfd_create");
  if (::pwrite(fd.get(), text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()))
    return failf_errno("writing the iptables script");
  return fd;
}

// Runs a command with `input` as its stdin; fails with the first line it
// printed on stderr. Memfds, not pipes: no SIGPIPE if it exits early.
Status run_command(const std::string& path, const std::vector<std::string>& args, const std::string& input) {
  ASSIGN_OR_RETURN(UniqueFd in, memfd_with(input));
  ASSIGN_OR_RETURN(UniqueFd err, memfd_with(""));
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_adddup2(&actions, in.get(), STDIN_FILENO);
  ::posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  ::posix_spawn_file_actions_adddup2(&actions, err.get(), STDERR_FILENO);
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(path.c_str()));
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid;
  int r = ::posix_spawn(&pid, path.c_str(), &actions, nullptr, argv.data(), environ);
  ::posix_spawn_file_actions_destroy(&actions);
  if (r != 0) return std::unexpected(Error(fmt::format("running {}", path), r));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return failf_errno("waiting for {}", path);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
  char buf[512] = {};
  ssize_t n = ::pread(err.get(), buf, sizeof(buf) - 1, 0);
  std::string text(buf, n > 0 ? static_cast<size_t>(n) : 0);
  if (size_t nl = text.find('\n'); nl != std::string::npos) text.resize(nl);
  return failf("{} failed ({}): {}", path,
               WIFEXITED(status) ? fmt::format("exit {}", WEXITSTATUS(status))
                                 : fmt::format("signal {}", WTERMSIG(status)),
               text.empty() ? "no message" : text);
}

const char* restore_command(int family) { return family == AF_INET6 ? "ip6tables-restore" : "iptables-restore"; }
const char* list_command(int family) { return family == AF_INET6 ? "ip6tables" : "iptables"; }

Status restore_script(int family, const std::string& script) {
  std::string cmd = find_command(restore_command(family));
  if (cmd.empty())
    return failf("--network-lock iptables needs the {} command; install iptables or use "
                 "--network-lock nftables", restore_command(family));
  return run_command(cmd, {"-w", "--noflush"}, script);
}

std::string removal_script(const std::string& chain) {
  return fmt::format("*filter\n-D INPUT -j {0}\n-D OUTPUT -j {0}\n-F {0}\n-X {0}\nCOMMIT\n", chain);
}

class IptablesLock final : public LockBackend {
 public:
  IptablesLock(std::string chain, const Logger& log) : chain_(std::move(chain)), log_(log) {}
  // A kept chain stays for the restore, without the connections whose two
  // ends were in the tree (they go with this object: after the tree is killed).
  ~IptablesLock() override {
    if (kept_) {
      if (auto st = unlock_in_tree(); !st) log_.warn("network lock: {}", st.error().what());
      return;
    }
    if (auto st = remove(); !st) log_.warn("network lock: {}", st.error().what());
  }

  NetworkLockMode mode() const override { return NetworkLockMode::iptables; }
  const std::string& table() const override { return chain_; }

  Status add(const LockedConnection& conn) override {
    ConnectionMatch m = iptables_match(conn);
    if (seen_.contains(m.outgoing)) return {};
    bool& created = conn.family == AF_INET6 ? created6_ : created4_;
    std::string script = "*filter\n";
    if (!created) script += fmt::format(":{} - [0:0]\n", chain_);
    script += fmt::format("-A {0} {1} -j DROP\n-A {0} {2} -j DROP\n", chain_, m.outgoing, m.incoming);
    if (!created) script += fmt::format("-I INPUT 1 -j {0}\n-I OUTPUT 1 -j {0}\n", chain_);
    script += "COMMIT\n";
    TRY(with_context(restore_script(conn.family, script), fmt::format("locking {}", conn.what)));
    if (!created) log_.info("network lock: {} chain {} created", list_command(conn.family), chain_);
    created = true;
    seen_.insert(m.outgoing);
    if (!m.peer_outside) in_tree_.emplace_back(conn.family, m);
    log_.debug("network lock: {} dropped", conn.what);
    return {};
  }

  Status remove() override {
    for (int family : {AF_INET, AF_INET6}) {
      bool& created = family == AF_INET6 ? created6_ : created4_;
      if (!created) continue;
      TRY(with_context(restore_script(family, removal_script(chain_)),
                       fmt::format("removing {} chain {}", list_command(family), chain_)));
      created = false;
      log_.info("network lock: {} chain {} removed", list_command(family), chain_);
    }
    return {};
  }

  // Only the connections to peers outside the tree stay locked past this
  // object (see ConnectionMatch::peer_outside).
  Status keep() override {
    kept_ = true;
    return {};
  }

 private:
  Status unlock_in_tree() {
    for (auto& [family, m] : in_tree_)
      TRY(with_context(restore_script(family, fmt::format("*filter\n-D {0} {1} -j DROP\n-D {0} {2} -j DROP\nCOMMIT\n",
                                                          chain_, m.outgoing, m.incoming)),
                       fmt::format("unlocking a connection inside the tree in chain {}", chain_)));
    in_tree_.clear();
    return {};
  }

  std::string chain_;
  const Logger& log_;
  bool created4_ = false, created6_ = false, kept_ = false;
  std::set<std::string> seen_;
  std::vector<std::pair<int, ConnectionMatch>> in_tree_;
};

}  // namespace

bool iptables_available() { return !find_command("iptables-restore").empty(); }

Result<std::unique_ptr<LockBackend>> make_iptables_lock(const std::string& chain, const Logger& log) {
  if (!iptables_available())
    return fail("--network-lock iptables needs the iptables command (iptables-restore); install "
                "iptables or use --network-lock nftables");
  return std::unique_ptr<LockBackend>(std::make_unique<IptablesLock>(chain, log));
}

// The dump kept the chain in whichever families had connections: remove it
// where `iptables -S CHAIN` finds it.
Status iptables_unlock(const std::string& chain) {
  bool found = false;
  for (int family : {AF_INET, AF_INET6}) {
    std::string list = find_command(list_command(family));
    if (list.empty()) continue;
    if (!run_command(list, {"-w", "-S", chain}, "")) continue;
    found = true;
    TRY(with_context(restore_script(family, removal_script(chain)),
                     fmt::format("removing {} chain {}", list_command(family), chain)));
  }
  if (!found && !iptables_available())
    return failf("removing the network lock (iptables chain {}) needs the iptables command; install "
                 "iptables", chain);
  return {};
}

}  // namespace minicriu
