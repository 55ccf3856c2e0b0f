/* Anonymous-inode fds: an eventfd holding 5, a periodic timerfd (100 ms), a
 * signalfd for SIGUSR2 with one SIGUSR2 queued, an epoll over the eventfd and
 * the timerfd, a pidfd to a child of its own (so inside the dumped tree), and
 * an inotify watching WORK_DIR for IN_CREATE as its watch 2.
 * After SIGUSR1 it checks that each object is as it left it: a dump that read
 * the eventfd or the signalfd to learn their state would have emptied them.
 *
 * "pidfd-outside": the pidfd is to our parent instead (outside the tree), which
 * the dump must refuse, leaving all of this intact. */
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/wait.h>

#include "prog_common.h"

#define INTERVAL_NS 100000000ll
#define EFD_DATA 0xE1E1E1E1E1ull
#define TFD_DATA 0x7171ull
#define PIPE_DATA 0x9191ull

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000ll + t.tv_nsec;
}

int main(int argc, char** argv) {
  if (argc < 2) { fprintf(stderr, "usage: anonfds READY_FILE [WORK_DIR [pidfd-outside|no-child]]\n"); return 2; }
  (void)prog_hash; /* shared helper this program has no use for */
  int outside = argc > 3 && strcmp(argv[3], "pidfd-outside") == 0;
  /* "no-child": a single process (no child, no pidfd), for restore. */
  int single = argc > 3 && strcmp(argv[3], "no-child") == 0;
  prog_install_usr1();

  pid_t child = -1;
  int pidfd = -1;
  if (!single) {
    child = fork();
    if (child == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      for (;;) pause();
    }
    pidfd = (int)syscall(SYS_pidfd_open, outside ? getppid() : child, 0);
    if (pidfd < 0) { perror("pidfd_open"); return 2; }
  }

  int efd = eventfd(5, EFD_NONBLOCK);
  int tfd = timerfd_create(CLOCK_MONOTONIC, 0);
  struct itimerspec its = {{0, INTERVAL_NS}, {0, INTERVAL_NS / 2}};
  if (efd < 0 || tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) != 0) { perror("eventfd/timerfd"); return 2; }

  sigset_t usr2;
  sigemptyset(&usr2);
  sigaddset(&usr2, SIGUSR2);
  sigprocmask(SIG_BLOCK, &usr2, NULL);
  int sfd = signalfd(-1, &usr2, SFD_NONBLOCK);
  union sigval v = {.sival_int = 77};
  if (sfd < 0 || sigqueue(getpid(), SIGUSR2, v) != 0) { perror("signalfd"); return 2; }

  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EFD_DATA};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) != 0) { perror("epoll eventfd"); return 2; }
  ev.data.u64 = TFD_DATA;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) != 0) { perror("epoll timerfd"); return 2; }
  /* And a pipe with a byte in it, edge-triggered on its read end. */
  int pfd[2];
  ev.events = EPOLLIN | EPOLLET;
  ev.data.u64 = PIPE_DATA;
  if (pipe(pfd) != 0 || write(pfd[1], "p", 1) != 1 || epoll_ctl(ep, EPOLL_CTL_ADD, pfd[0], &ev) != 0) {
    perror("epoll pipe");
    return 2;
  }

  /* Watch 1 comes and goes: the watch kept is number 2. */
  const char* work = argc > 2 ? argv[2] : "/tmp";
  int in = inotify_init1(IN_NONBLOCK);
  if (in < 0 || inotify_rm_watch(in, inotify_add_watch(in, work, IN_CREATE)) != 0 ||
      inotify_add_watch(in, work, IN_CREATE) != 2) { perror("inotify"); return 2; }
  char evbuf[4096] __attribute__((aligned(8)));
  while (read(in, evbuf, sizeof(evbuf)) > 0) {} /* the IN_IGNORED of watch 1 */

  prog_ready(argv[1]);
  prog_wait_usr1();

  /* The epoll first, before anything is read: both targets become ready (the
   * eventfd is, the timer is once it fired), each with its own data. */
  struct epoll_event got[4];
  int seen_efd = 0, seen_tfd = 0, seen_pipe = 0;
  /* By time, not rounds: the ready eventfd makes every epoll_wait return at once. */
  int64_t deadline = now_ns() + 1000000000ll;
  while (!(seen_efd && seen_tfd && seen_pipe) && now_ns() < deadline) {
    int n = epoll_wait(ep, got, 4, 100);
    CHECK(n >= 0, "epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
      if (got[i].data.u64 == EFD_DATA && got[i].events == EPOLLIN) seen_efd = 1;
      else if (got[i].data.u64 == TFD_DATA && got[i].events == EPOLLIN) seen_tfd = 1;
      else if (got[i].data.u64 == PIPE_DATA && got[i].events == EPOLLIN) seen_pipe = 1;
      else CHECK(0, "epoll reported data %#llx events %#x", (unsigned long long)got[i].data.u64, got[i].events);
    }
  }
  CHECK(seen_efd && seen_tfd && seen_pipe, "epoll_wait never reported: %s%s%s", seen_efd ? "" : "the eventfd ",
        seen_tfd ? "" : "the timerfd ", seen_pipe ? "" : "the pipe");
  char pbyte = 0;
  CHECK(read(pfd[0], &pbyte, 1) == 1 && pbyte == 'p', "the pipe's byte");

  uint64_t count = 0;
  CHECK(read(efd, &count, 8) == 8 && count == 5, "eventfd count %llu, was 5", (unsigned long long)count);
  CHECK(read(efd, &count, 8) < 0 && errno == EAGAIN, "eventfd not empty or blocking after one read");

  struct itimerspec cur;
  CHECK(timerfd_gettime(tfd, &cur) == 0 && cur.it_interval.tv_sec == 0 && cur.it_interval.tv_nsec == INTERVAL_NS,
        "timerfd interval %ld.%09ld", (long)cur.it_interval.tv_sec, cur.it_interval.tv_nsec);
  uint64_t ticks = 0;
  CHECK(read(tfd, &ticks, 8) == 8 && ticks >= 1, "timerfd ticks %llu", (unsigned long long)ticks);
  /* The period, measured over several ticks from a tick boundary: ticks missed
   * while this process was not scheduled are counted by the kernel, so a busy
   * machine does not change the ratio. */
  int64_t t0 = now_ns();
  uint64_t total = 0;
  while (total < 5) {
    CHECK(read(tfd, &ticks, 8) == 8 && ticks >= 1, "timerfd read %llu", (unsigned long long)ticks);
    total += ticks;
  }
  int64_t elapsed = now_ns() - t0;
  int64_t expected = (int64_t)total * INTERVAL_NS;
  CHECK(elapsed >= expected - 2 * INTERVAL_NS && elapsed <= expected + 60000000,
        "timerfd no longer ticks every 100 ms: %llu ticks in %lld ns", (unsigned long long)total,
        (long long)elapsed);

  struct signalfd_siginfo si;
  CHECK(read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si) && si.ssi_signo == SIGUSR2 && si.ssi_int == 77,
        "signalfd: signal %u value %d, wanted SIGUSR2 with 77", si.ssi_signo, si.ssi_int);
  CHECK(read(sfd, &si, sizeof(si)) < 0 && errno == EAGAIN, "signalfd not empty or blocking");

  /* The inotify reports a new file in WORK_DIR under watch 2. What came before
   * (the ready file, the driver's image directory) is drained first. */
  while (read(in, evbuf, sizeof(evbuf)) > 0) {}
  char created[4096];
  snprintf(created, sizeof(created), "%s/anonfds.created", work);
  int cfd = open(created, O_CREAT | O_WRONLY, 0644);
  CHECK(cfd >= 0, "create %s: %s", created, strerror(errno));
  close(cfd);
  unlink(created);
  ssize_t got_in = read(in, evbuf, sizeof(evbuf));
  struct inotify_event* iev = (struct inotify_event*)evbuf;
  CHECK(got_in > 0 && iev->wd == 2 && (iev->mask & IN_CREATE) && strcmp(iev->name, "anonfds.created") == 0,
        "inotify: %zd bytes, wd %d mask %#x name %s", got_in, got_in > 0 ? iev->wd : -1,
        got_in > 0 ? iev->mask : 0, got_in > 0 && iev->len ? iev->name : "");

  if (single) return prog_finish();
  if (!outside) {
    /* The pidfd still names the child: killing through it ends the child. */
    CHECK(syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) == 0, "pidfd_send_signal: %s", strerror(errno));
    struct pollfd p = {pidfd, POLLIN, 0};
    CHECK(poll(&p, 1, 5000) == 1, "the pidfd did not report the child's exit");
  } else {
    kill(child, SIGKILL);
  }
  int st = 0;
  CHECK(waitpid(child, &st, 0) == child && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child status %#x", st);
  return prog_finish();
}
