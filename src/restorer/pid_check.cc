#include "restorer/pid_check.hpp"

#include <sys/stat.h>

#include "proc/proc_parse.hpp"

namespace minicriu {

namespace {

// /proc/N exists for every task of the namespace, threads included (they are
// just not listed by readdir).
Status check_free(uint32_t id, bool thread) {
  std::string dir = fmt::format("/proc/{}", id);
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return failf_errno("cannot check whether {} {} is free", thread ? "tid" : "pid", id);
  }
  std::string comm = proc::comm_of(static_cast<pid_t>(id));
  std::string state;
  if (auto s = proc::read_file(dir + "/status"))
    state = proc::status_field(*s, "State").value_or("");
  if (!state.empty() && state[0] == 'Z')
    return failf("{} {} is still held by a zombie ({}) that its parent has not reaped yet; wait "
                 "for it to be reaped and retry", thread ? "tid" : "pid", id, comm);
  return failf("{} {} is in use by another process ({}); stop it, or restore in a fresh PID "
               "namespace", thread ? "tid" : "pid", id, comm);
}

}  // namespace

Status check_ids_free(const Checkpoint& c) {
  for (auto& p : c.processes)
    for (int i = 0; i < p.entry.tids_size(); i++) TRY(check_free(p.entry.tids(i), i != 0));
  return {};
}

}  // namespace minicriu
