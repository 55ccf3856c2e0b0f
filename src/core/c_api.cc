// The C ABI over the C++ API: opaque option handles, int results, and the last
// error kept per thread (like errno), the only state at this boundary. No
// exception crosses it: every entry point runs under guarded(), which turns
// one (std::bad_alloc included) into an error.
#include "minicriu/minicriu.h"

#include <string>

#include "minicriu/minicriu.hpp"

struct minicriu_dump_opts {
  minicriu::DumpOptions options;
};
struct minicriu_restore_opts {
  minicriu::RestoreOptions options;
};
struct minicriu_cancel {
  minicriu::Cancel cancel;
};

namespace {

thread_local std::string last_error;
thread_local int last_errno = 0;

int failed(const minicriu::Error& e) {
  last_error = e.what();
  last_errno = e.err();
  return -1;
}

int bad_argument(const char* what) {
  last_error = std::string("invalid argument: ") + what;
  last_errno = EINVAL;
  return -1;
}

// Runs the body of an entry point; an exception becomes its error. The
// messages fit std::string's inline buffer, so setting them cannot throw.
template <typename F>
auto guarded(F&& body, decltype(body()) on_exception) noexcept -> decltype(body()) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    last_error = "out of memory";
    last_errno = ENOMEM;
  } catch (...) {
    last_error = "internal error";
    last_errno = 0;
    try {
      throw;
    } catch (const std::exception& e) {
      try {
        last_error = std::string("internal error: ") + e.what();
      } catch (...) {
      }
    } catch (...) {
    }
  }
  return on_exception;
}

// The level and sink of log, the rest (progress) left as it was set.
void set_log(minicriu::LogOptions& log, int level, minicriu_log_fn fn, void* arg) {
  log.level = static_cast<minicriu::LogLevel>(level < 0 ? 0 : level > 3 ? 3 : level);
  log.sink = nullptr;
  if (fn)
    log.sink = [fn, arg](minicriu::LogLevel l, std::string_view line) {
      std::string s(line);
      fn(static_cast<int>(l), s.c_str(), arg);
    };
}

void set_progress(minicriu::LogOptions& log, minicriu_progress_fn fn, void* arg, unsigned after_ms) {
  log.progress_sink = nullptr;
  log.progress_after_ms = after_ms;
  if (fn)
    log.progress_sink = [fn, arg](const minicriu::Progress& p) {
      std::string phase(p.phase);
      minicriu_progress c{phase.c_str(), p.pid,     p.bytes_done, p.bytes_total, p.elapsed_s,
                          p.bytes_per_s, p.eta_s, p.finished ? 1 : 0};
      fn(&c, arg);
    };
}

// The C view of an object: its strings live as long as obj.
minicriu_external c_external(const minicriu::ExternalObject& obj) {
  return minicriu_external{obj.kind.c_str(), obj.key.c_str(), obj.inode, obj.type.c_str(),
                           obj.peer_inode, obj.peer_name.c_str(), obj.pid, obj.fd, obj.peer_pid,
                           obj.description.c_str()};
}

// A setter of the C ABI whose only check is opts itself: set(*opts), its
// exceptions caught as every entry point's are.
template <typename Opts, typename F>
int set_on(Opts* opts, F&& set) {
  return guarded([&]() -> int {
    if (!opts) return bad_argument("opts");
    set(*opts);
    return 0;
  }, -1);
}

}  // namespace

extern "C" {

minicriu_dump_opts* minicriu_dump_opts_new(void) { return new (std::nothrow) minicriu_dump_opts(); }
void minicriu_dump_opts_free(minicriu_dump_opts* opts) { delete opts; }

int minicriu_dump_opts_set_pid(minicriu_dump_opts* opts, pid_t pid) {
  return guarded([&]() -> int {
    if (!opts || pid <= 0) return bad_argument("pid");
    opts->options.pid = pid;
    return 0;
  }, -1);
}
int minicriu_dump_opts_set_images_dir(minicriu_dump_opts* opts, const char* dir) {
  return guarded([&]() -> int {
    if (!opts || !dir) return bad_argument("images dir");
    opts->options.images_dir = dir;
    return 0;
  }, -1);
}
int minicriu_dump_opts_set_leave_running(minicriu_dump_opts* opts, int leave_running) {
  return set_on(opts, [&](auto& o) { o.options.leave_running = leave_running != 0; });
}
int minicriu_dump_opts_set_background(minicriu_dump_opts* opts, int background) {
  return set_on(opts, [&](auto& o) { o.options.background = background != 0; });
}
int minicriu_dump_opts_set_log(minicriu_dump_opts* opts, int level, minicriu_log_fn fn, void* arg) {
  return set_on(opts, [&](auto& o) { set_log(o.options.log, level, fn, arg); });
}
int minicriu_dump_opts_set_progress(minicriu_dump_opts* opts, minicriu_progress_fn fn, void* arg,
                                    unsigned after_ms) {
  return set_on(opts, [&](auto& o) { set_progress(o.options.log, fn, arg, after_ms); });
}
int minicriu_dump_opts_set_ghost_limit(minicriu_dump_opts* opts, const char* size) {
  return set_on(opts, [&](auto& o) { o.options.ghost_limit = size ? size : ""; });
}
int minicriu_dump_opts_set_page_server(minicriu_dump_opts* opts, const char* host_port) {
  return set_on(opts, [&](auto& o) { o.options.page_server = host_port ? host_port : ""; });
}
int minicriu_dump_opts_add_ghost_policy(minicriu_dump_opts* opts, const char* rule) {
  return guarded([&]() -> int {
    if (!opts || !rule) return bad_argument("ghost policy rule");
    opts->options.ghost_policy.emplace_back(rule);
    return 0;
  }, -1);
}
int minicriu_dump_opts_set_ext_unix_sk(minicriu_dump_opts* opts, int on) {
  return set_on(opts, [&](auto& o) { o.options.ext_unix_sk = on != 0; });
}
int minicriu_dump_opts_set_shell_job(minicriu_dump_opts* opts, int on) {
  return set_on(opts, [&](auto& o) { o.options.shell_job = on != 0; });
}
int minicriu_dump_opts_set_ext_pipes(minicriu_dump_opts* opts, int on) {
  return set_on(opts, [&](auto& o) { o.options.ext_pipes = on != 0; });
}
int minicriu_dump_opts_add_external(minicriu_dump_opts* opts, const char* spec) {
  return guarded([&]() -> int {
    if (!opts || !spec) return bad_argument("external spec");
    opts->options.external.emplace_back(spec);
    return 0;
  }, -1);
}
int minicriu_dump_opts_set_external_hook(minicriu_dump_opts* opts, minicriu_external_dump_fn fn, void* arg) {
  return guarded([&]() -> int {
    if (!opts) return bad_argument("opts");
    opts->options.external_hook = nullptr;
    if (fn)
      opts->options.external_hook = [fn, arg](const minicriu::ExternalObject& obj) {
        minicriu_external c = c_external(obj);
        return fn(&c, arg) != 0;
      };
    return 0;
  }, -1);
}
int minicriu_dump_opts_set_network_lock(minicriu_dump_opts* opts, const char* mode) {
  return guarded([&]() -> int {
    if (!opts || !mode) return bad_argument("network lock mode");
    opts->options.network_lock = mode;
    return 0;
  }, -1);
}
int minicriu_dump_opts_set_tcp_established(minicriu_dump_opts* opts, int on) {
  return set_on(opts, [&](auto& o) { o.options.tcp_established = on != 0; });
}
int minicriu_dump_opts_set_tcp_drop_pending(minicriu_dump_opts* opts, int on) {
  return set_on(opts, [&](auto& o) { o.options.tcp_drop_pending = on != 0; });
}
int minicriu_dump_opts_set_pre_dump(minicriu_dump_opts* opts, int on) {
  return set_on(opts, [&](auto& o) { o.options.pre_dump = on != 0; });
}
int minicriu_dump_opts_set_tracking_timeout(minicriu_dump_opts* opts, unsigned timeout_s) {
  return set_on(opts, [&](auto& o) {
    o.options.tracking_timeout_s = timeout_s ? timeout_s : minicriu::DumpOptions{}.tracking_timeout_s;
  });
}
int minicriu_dump_opts_set_prev_images_dir(minicriu_dump_opts* opts, const char* dir) {
  return set_on(opts, [&](auto& o) { o.options.prev_images_dir = dir ? dir : ""; });
}
int minicriu_dump(const minicriu_dump_opts* opts) {
  return guarded([&]() -> int {
    if (!opts) return bad_argument("opts");
    auto r = minicriu::dump(opts->options);
    return r ? 0 : failed(r.error());
  }, -1);
}

int minicriu_dump_iters(const minicriu_dump_opts* opts, minicriu_dump_iters_fn more, void* arg,
                        unsigned* rounds_out) {
  return guarded([&]() -> int {
    if (!opts) return bad_argument("opts");
    if (!more) return bad_argument("callback");
    auto c_round = [](const minicriu::DumpRound& r) {
      return minicriu_dump_round{r.round, r.final ? 1 : 0, r.pages_written, r.pages_changed, r.pages_in_parent,
                                 r.frozen_ns};
    };
    auto r = minicriu::dump_iters(opts->options, [&](const minicriu::DumpRound& round) {
      minicriu_dump_round c = c_round(round);
      return more(&c, arg);
    });
    if (!r) return failed(r.error());
    if (rounds_out) *rounds_out = static_cast<unsigned>(r->rounds.size());
    return 0;
  }, -1);
}

minicriu_restore_opts* minicriu_restore_opts_new(void) { return new (std::nothrow) minicriu_restore_opts(); }
void minicriu_restore_opts_free(minicriu_restore_opts* opts) { delete opts; }
int minicriu_restore_opts_set_images_dir(minicriu_restore_opts* opts, const char* dir) {
  return guarded([&]() -> int {
    if (!opts || !dir) return bad_argument("images dir");
    opts->options.images_dir = dir;
    return 0;
  }, -1);
}
minicriu_cancel* minicriu_cancel_new(void) { return new (std::nothrow) minicriu_cancel(); }

void minicriu_cancel_free(minicriu_cancel* cancel) { delete cancel; }

void minicriu_cancel_request(minicriu_cancel* cancel, int signo) {
  if (cancel) cancel->cancel.request(signo);
}

int minicriu_dump_opts_set_cancel(minicriu_dump_opts* opts, minicriu_cancel* cancel) {
  if (!opts) return bad_argument("opts");
  opts->options.cancel = cancel ? &cancel->cancel : nullptr;
  return 0;
}

int minicriu_restore_opts_set_cancel(minicriu_restore_opts* opts, minicriu_cancel* cancel) {
  if (!opts) return bad_argument("opts");
  opts->options.cancel = cancel ? &cancel->cancel : nullptr;
  return 0;
}

int minicriu_restore_opts_set_detach(minicriu_restore_opts* opts, int detach) {
  return set_on(opts, [&](auto& o) { o.options.detach = detach != 0; });
}
int minicriu_restore_opts_set_lazy(minicriu_restore_opts* opts, int lazy) {
  return set_on(opts, [&](auto& o) { o.options.lazy = lazy != 0; });
}
int minicriu_restore_opts_set_log(minicriu_restore_opts* opts, int level, minicriu_log_fn fn, void* arg) {
  return set_on(opts, [&](auto& o) { set_log(o.options.log, level, fn, arg); });
}
int minicriu_restore_opts_set_progress(minicriu_restore_opts* opts, minicriu_progress_fn fn, void* arg,
                                       unsigned after_ms) {
  return set_on(opts, [&](auto& o) { set_progress(o.options.log, fn, arg, after_ms); });
}
int minicriu_restore_opts_set_ghost_dir(minicriu_restore_opts* opts, const char* dir) {
  return guarded([&]() -> int {
    if (!opts || !dir) return bad_argument("ghost dir");
    opts->options.ghost_dir = dir;
    return 0;
  }, -1);
}
int minicriu_restore_opts_set_page_server(minicriu_restore_opts* opts, const char* host_port) {
  return set_on(opts, [&](auto& o) { o.options.page_server = host_port ? host_port : ""; });
}
int minicriu_restore_opts_add_inherit_fd(minicriu_restore_opts* opts, const char* spec) {
  return guarded([&]() -> int {
    if (!opts || !spec) return bad_argument("inherit-fd spec");
    opts->options.inherit_fds.emplace_back(spec);
    return 0;
  }, -1);
}
int minicriu_restore_opts_set_external_hook(minicriu_restore_opts* opts, minicriu_external_restore_fn fn,
                                            void* arg) {
  return guarded([&]() -> int {
    if (!opts) return bad_argument("opts");
    opts->options.external_hook = nullptr;
    if (fn)
      opts->options.external_hook =
          [fn, arg](const minicriu::ExternalObject& obj) -> std::expected<int, minicriu::Error> {
        minicriu_external c = c_external(obj);
        return fn(&c, arg);
      };
    return 0;
  }, -1);
}
int minicriu_restore(const minicriu_restore_opts* opts, pid_t* root_pid, int* wait_status) {
  return guarded([&]() -> int {
    if (!opts) return bad_argument("opts");
    auto r = minicriu::restore(opts->options);
    if (!r) return failed(r.error());
    if (root_pid) *root_pid = r->root_pid;
    if (wait_status) *wait_status = r->exit_status;
    return 0;
  }, -1);
}

int minicriu_coredump(const char* images_dir, const char* output_dir) {
  return guarded([&]() -> int {
    if (!images_dir) return bad_argument("images dir");
    minicriu::CoredumpOptions options;
    options.images_dir = images_dir;
    if (output_dir) options.output_dir = output_dir;
    auto r = minicriu::coredump(options);
    return r ? 0 : failed(r.error());
  }, -1);
}

const char* minicriu_last_error(void) { return last_error.c_str(); }
int minicriu_last_errno(void) { return last_errno; }

}  // extern "C"
