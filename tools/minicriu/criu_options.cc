#include "criu_options.hpp"

#include <cstring>
#include <string_view>

namespace minicriu::cli {

namespace {

// CRIU's options (criu --help, CRIU 4.x) that minicriu has no option for,
// and what to do instead. An option a command of minicriu defines is never
// refused here, so this table may name options a later minicriu adds.
struct CriuOption {
  const char* name;  // "--leave-stopped"
  const char* short_name;  // "-s", or nullptr
  const char* instead;
};

constexpr CriuOption kUnsupported[] = {
    {"--leave-stopped", "-s", "the tree is left running (-R) or killed; stop it yourself with SIGSTOP"},
    {"--restore-sibling", "-S", "the restored root is always minicriu's child"},
    {"--root", "-r", "the tree is restored in the root it was dumped in"},
    {"--ext-mount-map", "-M", "mount namespaces are not dumped"},
    {"--page-server", nullptr, "only dump and restore take a page server (`minicriu page-server` is one)"},
    {"--address", nullptr, "only dump, restore and page-server take a page server's address"},
    {"--port", nullptr, "only dump, restore and page-server take a page server's port"},
    {"--prev-images-dir", nullptr, "dumps are full, not incremental"},
    {"--track-mem", nullptr, "dumps are full, not incremental"},
    {"--lazy-pages", nullptr, "a dump needs nothing for it: `minicriu restore --lazy` restores any dump lazily"},
    {"--lazy-migrate", nullptr, "`minicriu restore --lazy` restores any dump lazily"},
    {"--auto-dedup", nullptr, "dumps are full, not incremental"},
    {"--pre-dump-mode", nullptr, "there is no pre-dump"},
    {"--manage-cgroups", nullptr, "cgroups are not dumped: restore into the cgroup you want the tree in"},
    {"--cgroup-root", nullptr, "cgroups are not dumped"},
    {"--cgroup-props", nullptr, "cgroups are not dumped"},
    {"--cgroup-props-file", nullptr, "cgroups are not dumped"},
    {"--cgroup-dump-controller", nullptr, "cgroups are not dumped"},
    {"--cgroup-yard", nullptr, "cgroups are not dumped"},
    {"--freeze-cgroup", nullptr, "the tree is frozen with ptrace"},
    {"--timeout", nullptr, "the tree is frozen with ptrace, with no timeout to set"},
    {"--feature", nullptr, "`minicriu check` lists what this kernel supports"},
    {"--cpu-cap", nullptr, "the CPU's xsave layout is checked at restore"},
    {"--force-irmap", nullptr, "inotify watches are dumped by path"},
    {"--irmap-scan-path", nullptr, "inotify watches are dumped by path"},
    {"--evasive-devices", nullptr, "device files are reopened by their path"},
    {"--veth-pair", nullptr, "network namespaces are not dumped"},
    {"--join-ns", nullptr, "the tree is restored in minicriu's namespaces"},
    {"--empty-ns", nullptr, "network namespaces are not dumped"},
    {"--action-script", nullptr, "the library's hooks (include/minicriu/minicriu.hpp) run code at each step"},
    {"--tcp-close", nullptr, "connections are restored (--tcp-established) or refused at the dump"},
    {"--skip-mnt", nullptr, "mount namespaces are not dumped"},
    {"--enable-fs", nullptr, "mount namespaces are not dumped"},
    {"--enable-external-sharing", nullptr, "mount namespaces are not dumped"},
    {"--enable-external-masters", nullptr, "mount namespaces are not dumped"},
    {"--mntns-compat-mode", nullptr, "mount namespaces are not dumped"},
    {"--status-fd", nullptr, "restore -d prints the root's pid on stdout once the tree runs"},
    {"--remote", nullptr, "images are written to -D DIR only"},
    {"--stream", nullptr, "images are written to -D DIR only"},
    {"--config", nullptr, "options are read from the command line only"},
    {"--no-default-config", nullptr, "options are read from the command line only"},
    {"--tls", nullptr, "there is no page server"},
    {"--tls-cacert", nullptr, "there is no page server"},
    {"--tls-cacrl", nullptr, "there is no page server"},
    {"--tls-cert", nullptr, "there is no page server"},
    {"--tls-key", nullptr, "there is no page server"},
    {"--tls-no-cn-verify", nullptr, "there is no page server"},
    {"--display-stats", nullptr, "-v prints the figures of each dump"},
    {"--weak-sysctls", nullptr, "no sysctls are restored"},
    {"--lsm-profile", nullptr, "LSM profiles are not dumped"},
    {"--lsm-mount-context", nullptr, "LSM profiles are not dumped"},
    {"--file-validation", nullptr, "a reopened file is checked by its size and inode"},
    {"--skip-file-rwx-check", nullptr, "files are reopened with their dumped flags"},
    {"--allow-uprobes", nullptr, "uprobes are not dumped"},
    {"--unprivileged", nullptr, "minicriu runs as root"},
    {"--ps-socket", nullptr, "there is no page server"},
    {"--log-pid", nullptr, "there is one log, of the minicriu process"},
    {"--orphan-pts-master", nullptr, "a pty whose master is outside the tree is accepted with --shell-job"},
    {"--exec-cmd", nullptr, "run the command after `minicriu restore -d`"},
    {"--restore-detached", nullptr, "minicriu's name for it is -d/--detach"},
    {"--daemon", nullptr, "minicriu's name for it is -d/--detach"},
    {"--check-only", nullptr, "a refused dump already leaves the tree running and intact"},
    {"--inherit-fd-all", nullptr, "name each fd with --inherit-fd"},
};

// The option name of an argument: "--ghost-limit=1G" -> "--ghost-limit".
std::string_view option_name(std::string_view arg) {
  if (!arg.starts_with("--")) return arg.size() >= 2 && arg[0] == '-' ? arg.substr(0, 2) : std::string_view{};
  auto eq = arg.find('=');
  return eq == std::string_view::npos ? arg : arg.substr(0, eq);
}

bool defines(const CLI::App& cmd, std::string_view name) {
  for (const CLI::Option* o : cmd.get_options()) {
    for (auto& l : o->get_lnames())
      if (name == "--" + l) return true;
    for (auto& s : o->get_snames())
      if (name == "-" + s) return true;
  }
  return false;
}

}  // namespace

std::vector<std::string> rewrite_criu_spellings(int argc, char** argv) {
  std::vector<std::string> out;
  for (int i = 0; i < argc; i++) {
    std::string_view a = argv[i];
    if (i > 0 && a.size() == 3 && a.starts_with("-v") && a[2] >= '0' && a[2] <= '4')
      out.push_back(std::string("--verbosity=") + a[2]);
    else
      out.emplace_back(a);
  }
  return out;
}

std::optional<std::string> unsupported_criu_option(const CLI::App& app, const std::vector<std::string>& args) {
  const CLI::App* cmd = nullptr;
  for (size_t i = 1; i < args.size() && !cmd; i++) {
    if (args[i] == "--") return std::nullopt;
    if (args[i].starts_with("-")) continue;
    for (const CLI::App* sub : app.get_subcommands({}))
      if (sub->get_name() == args[i]) cmd = sub;
    if (!cmd) return std::nullopt;  // an option's value before the command, or no command
  }
  if (!cmd) return std::nullopt;
  for (auto& arg : args) {
    if (arg == "--") break;
    std::string_view name = option_name(arg);
    if (name.empty() || defines(*cmd, name)) continue;
    for (auto& o : kUnsupported)
      if (name == o.name || (o.short_name && name == o.short_name && arg.size() == 2))
        return cmd->get_name() + ": " + std::string(name) +
               (name.starts_with("--") ? "" : std::string(" (") + o.name + ")") +
               " is an option of CRIU's that minicriu does not support: " + o.instead;
  }
  return std::nullopt;
}

int criu_level_to_verbosity(int level) {
  return level <= 1 ? -1 : level - 2;
}

}  // namespace minicriu::cli
