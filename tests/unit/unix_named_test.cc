// Named unix sockets: the name helpers and the choice between socketpair and
// named restore (pure), and in-process round trips on real sockets: listeners
// with accepted and waiting connections, paths that name their socket, were
// unlinked or replaced, relative paths, and the refusals.
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <gtest/gtest.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "kinds/kind.hpp"
#include "net/unix_named.hpp"
#include "net/unix_socket.hpp"

using namespace minicriu;

namespace {

uint64_t named_ino_of(int fd) {
  struct stat st;
  EXPECT_EQ(fstat(fd, &st), 0);
  return st.st_ino;
}

std::string unix_name_of(int fd, bool peer = false) {
  sockaddr_un a{};
  socklen_t len = sizeof a;
  int r = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len)
               : getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  EXPECT_EQ(r, 0);
  return unix_raw_name(a, len);
}

int sock(int type) { return socket(AF_UNIX, type | SOCK_CLOEXEC, 0); }

void bind_to(int fd, const std::string& raw) {
  sockaddr_un a;
  socklen_t len = unix_addr_of(raw, a);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), len), 0) << strerror(errno);
}

void connect_to(int fd, const std::string& raw) {
  sockaddr_un a;
  socklen_t len = unix_addr_of(raw, a);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), len), 0) << strerror(errno);
}

std::string recv_now(int fd) {
  char buf[4096];
  ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
  return n > 0 ? std::string(buf, n) : std::string();
}

// accept(2) of a connection already waiting (none: an invalid fd).
UniqueFd accept_now(int l) {
  pollfd p{l, POLLIN, 0};
  if (poll(&p, 1, 0) != 1) return UniqueFd();
  return UniqueFd(accept4(l, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
}

// A temporary directory, removed with what is in it.
struct Dir {
  std::string path;
  Dir() {
    char tmpl[] = "/tmp/minicriu-unix-named-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~Dir() { std::filesystem::remove_all(path); }
  std::string operator/(const std::string& n) const { return path + "/" + n; }
};

// Dumps fds into files.img entries and a store, as the dumper does.
struct Dumped {
  std::vector<img::FileEntry> files;
  UnixSocketStore store;
  Status add(int fd) {
    img::FileEntry e;
    e.set_id(static_cast<uint32_t>(files.size() + 1));
    std::string what = fmt::format("test: fd {}", fd);
    TRY(dump_unix_socket(what, fd, named_ino_of(fd), fcntl(fd, F_GETFL), *e.mutable_unix_sk()));
    FdDumpInfo info;
    info.pid = getpid();
    info.fd = fd;
    info.what = what;
    store.add(e.unix_sk(), info);
    if (e.unix_sk().pending_size() > 0) store.keep_listener(e.unix_sk().ino(), fd);
    inos[fd] = e.unix_sk().ino();
    files.push_back(std::move(e));
    return {};
  }
  // The unix kind's check, then (a dump that kills the tree) its destructive
  // step, as the dump runs them with nothing between.
  Status finish(bool leave_running) {
    TRY(store.check_named({}, leave_running));
    return leave_running ? Status{} : store.accept_pending(files);
  }
  // By the fd it was dumped from (which may be closed since).
  std::map<int, uint64_t> inos;
  const img::UnixSocketFile& sk(int fd) const {
    for (auto& f : files)
      if (inos.count(fd) && f.unix_sk().ino() == inos.at(fd)) return f.unix_sk();
    ADD_FAILURE() << "fd " << fd << " not dumped";
    return files.front().unix_sk();
  }
};

UniqueFd restored(const UnixSocketRestorer& r, const img::UnixSocketFile& sk) {
  auto fd = r.open(sk);
  EXPECT_TRUE(fd) << (fd ? "" : fd.error().what());
  return fd ? std::move(*fd) : UniqueFd();
}

TEST(UnixName, RawNamesAndAddressesRoundTrip) {
  for (std::string raw : {std::string("/tmp/x.sock"), std::string("rel.sock"), std::string("\0abs\0with-nul", 14)}) {
    sockaddr_un a;
    socklen_t len = unix_addr_of(raw, a);
    EXPECT_EQ(unix_raw_name(a, len), raw);
  }
  sockaddr_un a;
  EXPECT_EQ(unix_addr_of("/p", a), offsetof(sockaddr_un, sun_path) + 3);  // with its NUL
  EXPECT_EQ(unix_addr_of(std::string("\0ab", 3), a), offsetof(sockaddr_un, sun_path) + 3);
  EXPECT_EQ(unix_raw_name(a, offsetof(sockaddr_un, sun_path)), "");
  EXPECT_EQ(unix_name_display(std::string("\0a\0b", 4)), "@a@b");
  EXPECT_EQ(unix_name_display("/p"), "/p");
  EXPECT_EQ(unix_name_display(""), "unbound");
  img::UnixSocketFile sk;
  sk.set_name("rel.sock");
  sk.set_bind_dir("/srv");
  EXPECT_EQ(unix_abs_path(sk), "/srv/rel.sock");
  sk.set_name("/abs.sock");
  EXPECT_EQ(unix_abs_path(sk), "/abs.sock");
}

TEST(UnixName, WhatIsRestoredAsNamedAndWhatWasAccepted) {
  img::UnixSocketFile a, b, l, d;
  a.set_ino(1), a.set_peer_ino(2), a.set_type(SOCK_STREAM), a.set_state(kUnixConnected);
  b.set_ino(2), b.set_peer_ino(1), b.set_type(SOCK_STREAM), b.set_state(kUnixConnected);
  std::map<uint64_t, const img::UnixSocketFile*> by_ino{{1, &a}, {2, &b}};
  EXPECT_FALSE(restored_as_named(a, by_ino));  // a plain socketpair
  EXPECT_FALSE(restored_as_named(b, by_ino));
  b.set_name("/srv/l.sock"), b.set_vfs_ino(77);
  EXPECT_TRUE(restored_as_named(a, by_ino));  // either end named: both
  EXPECT_TRUE(restored_as_named(b, by_ino));
  EXPECT_EQ(accepted_from(b, by_ino), 0u);  // no listener of that name in the tree
  l.set_ino(3), l.set_type(SOCK_STREAM), l.set_state(kUnixListening), l.set_name("/srv/l.sock"), l.set_vfs_ino(77);
  by_ino[3] = &l;
  EXPECT_TRUE(restored_as_named(l, by_ino));
  EXPECT_EQ(accepted_from(b, by_ino), 3u);
  EXPECT_EQ(accepted_from(a, by_ino), 0u);
  l.set_vfs_ino(78);  // another socket file at that path
  EXPECT_EQ(accepted_from(b, by_ino), 0u);
  l.set_vfs_ino(77), l.set_type(SOCK_SEQPACKET);
  EXPECT_EQ(accepted_from(b, by_ino), 0u);
  // A datagram socket connected one way, and an external peer.
  d.set_ino(4), d.set_peer_ino(3), d.set_type(SOCK_DGRAM);
  by_ino[4] = &d;
  EXPECT_TRUE(restored_as_named(d, by_ino));
  d.set_peer_ino(99);
  EXPECT_FALSE(restored_as_named(d, by_ino));
}

TEST(UnixNamedRoundTrip, ListenersWithAcceptedAndWaitingConnections) {
  Dir dir;
  std::string path = dir / "l.sock";
  std::string abstract = fmt::format("{}minicriu-unit-{}", '\0', getpid());
  int l1 = sock(SOCK_STREAM), l2 = sock(SOCK_SEQPACKET);
  bind_to(l1, path);
  bind_to(l2, abstract);
  ASSERT_EQ(chmod(path.c_str(), 0600), 0);
  bool root = geteuid() == 0;  // only root gives a file away
  if (root) {
    ASSERT_EQ(lchown(path.c_str(), 4321, 4322), 0);
  }
  ASSERT_EQ(listen(l1, 4), 0);
  ASSERT_EQ(listen(l2, 2), 0);
  int c1 = sock(SOCK_STREAM), w1 = sock(SOCK_STREAM), w2 = sock(SOCK_SEQPACKET);
  connect_to(c1, path);
  int a1 = accept4(l1, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(a1, 0);
  ASSERT_EQ(send(c1, "to-a1", 5, 0), 5);
  ASSERT_EQ(send(a1, "to-c1", 5, 0), 5);
  connect_to(w1, path);
  connect_to(w2, abstract);
  ASSERT_EQ(send(w1, "waiting", 7, 0), 7);
  ASSERT_EQ(send(w2, "msg-1", 5, 0), 5);
  ASSERT_EQ(send(w2, "msg-22", 6, 0), 6);

  Dumped d;
  for (int fd : {l1, l2, c1, a1, w1, w2}) ASSERT_TRUE(d.add(fd));
  EXPECT_EQ(d.sk(l1).state(), (uint32_t)kUnixListening);
  EXPECT_EQ(d.sk(l1).backlog(), 4u);
  EXPECT_EQ(d.sk(l1).path_state(), (uint32_t)img::UNIX_PATH_OWNED);
  EXPECT_EQ(d.sk(l1).file_mode(), 0600u);
  ASSERT_EQ(d.sk(l1).pending_size(), 1);
  EXPECT_EQ(d.sk(l1).pending(0).client_ino(), named_ino_of(w1));
  EXPECT_EQ(d.sk(l2).name(), abstract);
  EXPECT_EQ(d.sk(a1).name(), path);  // an accepted socket has its listener's name
  EXPECT_EQ(d.sk(w1).peer_ino(), 0u);
  EXPECT_EQ(d.sk(w1).state(), (uint32_t)kUnixConnected);

  // --leave-running cannot read the waiting connections: refused, untouched.
  auto st = d.finish(true);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().what().find("1 connection(s) not yet accepted"), std::string::npos) << st.error().what();
  EXPECT_EQ(st.error().what().find('\n'), std::string::npos);
  // A dump that kills the tree accepts them and records their data.
  st = d.finish(false);
  ASSERT_TRUE(st) << st.error().what();
  ASSERT_EQ(d.sk(l1).pending(0).queue_size(), 1);
  EXPECT_EQ(d.sk(l1).pending(0).queue(0), "waiting");
  ASSERT_EQ(d.sk(l2).pending(0).queue_size(), 2);
  EXPECT_EQ(d.sk(l2).pending(0).queue(1), "msg-22");
  for (int fd : {l1, l2, c1, a1, w1, w2}) close(fd);

  auto r = UnixSocketRestorer::create_all(d.files, 100);
  ASSERT_TRUE(r) << r.error().what();
  UniqueFd rl1 = restored(**r, d.sk(l1)), rl2 = restored(**r, d.sk(l2)), rc1 = restored(**r, d.sk(c1)),
           ra1 = restored(**r, d.sk(a1)), rw1 = restored(**r, d.sk(w1)), rw2 = restored(**r, d.sk(w2));
  r->reset();
  EXPECT_EQ(unix_name_of(rl1.get()), path);
  EXPECT_EQ(unix_name_of(rl2.get()), abstract);
  EXPECT_EQ(unix_name_of(ra1.get()), path);
  EXPECT_EQ(unix_name_of(rc1.get(), true), path);
  EXPECT_EQ(unix_name_of(rw2.get(), true), abstract);
  struct stat stt;
  ASSERT_EQ(stat(path.c_str(), &stt), 0);
  EXPECT_TRUE(S_ISSOCK(stt.st_mode));
  EXPECT_EQ(stt.st_mode & 07777, 0600u);
  if (root) {
    EXPECT_EQ(stt.st_uid, 4321u);
    EXPECT_EQ(stt.st_gid, 4322u);
  }
  EXPECT_EQ(recv_now(ra1.get()), "to-a1");
  EXPECT_EQ(recv_now(rc1.get()), "to-c1");
  UniqueFd p1 = accept_now(rl1.get()), p2 = accept_now(rl2.get());
  ASSERT_TRUE(p1);
  ASSERT_TRUE(p2);
  EXPECT_EQ(recv_now(p1.get()), "waiting");
  EXPECT_EQ(recv_now(p2.get()), "msg-1");
  EXPECT_EQ(recv_now(p2.get()), "msg-22");
  EXPECT_EQ(recv_now(p2.get()), "");
  // Nothing else waits, and the listener is not left non-blocking.
  EXPECT_FALSE(accept_now(rl1.get()));
  EXPECT_EQ(fcntl(rl1.get(), F_GETFL) & O_NONBLOCK, 0);
}

TEST(UnixNamedRoundTrip, PathsUnlinkedOrReplacedComeBackAsTheyWere) {
  Dir dir;
  std::string gone = dir / "gone.sock", replaced = dir / "replaced.sock";
  int g = sock(SOCK_DGRAM), rp = sock(SOCK_DGRAM);
  bind_to(g, gone);
  bind_to(rp, replaced);
  ASSERT_EQ(unlink(gone.c_str()), 0);
  ASSERT_EQ(unlink(replaced.c_str()), 0);
  { FILE* f = fopen(replaced.c_str(), "w"); ASSERT_TRUE(f); fputs("file", f); fclose(f); }
  Dumped d;
  ASSERT_TRUE(d.add(g));
  ASSERT_TRUE(d.add(rp));
  EXPECT_EQ(d.sk(g).path_state(), (uint32_t)img::UNIX_PATH_UNLINKED);
  EXPECT_EQ(d.sk(rp).path_state(), (uint32_t)img::UNIX_PATH_REPLACED);
  ASSERT_TRUE(d.finish(false));
  close(g);
  close(rp);
  // Something at the unlinked path by restore time stays there too.
  { FILE* f = fopen(gone.c_str(), "w"); ASSERT_TRUE(f); fclose(f); }
  auto r = UnixSocketRestorer::create_all(d.files, 100);
  ASSERT_TRUE(r) << r.error().what();
  UniqueFd rg = restored(**r, d.sk(g)), rr = restored(**r, d.sk(rp));
  EXPECT_EQ(unix_name_of(rg.get()), gone);
  EXPECT_EQ(unix_name_of(rr.get()), replaced);
  struct stat st;
  ASSERT_EQ(lstat(replaced.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_size, 4);
  ASSERT_EQ(lstat(gone.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path), {}), 2);  // nothing left aside
}

TEST(UnixNamedRoundTrip, ARelativePathIsBoundAgainInItsDirectory) {
  Dir dir;
  char old[4096];
  ASSERT_TRUE(getcwd(old, sizeof old));
  ASSERT_EQ(chdir(dir.path.c_str()), 0);
  int s = sock(SOCK_STREAM);
  bind_to(s, "rel.sock");
  ASSERT_EQ(listen(s, 1), 0);
  Dumped d;
  auto st = d.add(s);
  ASSERT_EQ(chdir(old), 0);
  ASSERT_TRUE(st) << st.error().what();
  EXPECT_EQ(d.sk(s).bind_dir(), std::filesystem::canonical(dir.path).string());
  // Accepted from it and dumped from another cwd: it holds the listener's
  // name and needs no directory of its own.
  int c = sock(SOCK_STREAM);
  connect_to(c, dir / "rel.sock");
  int a = accept4(s, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(a, 0);
  ASSERT_TRUE(d.add(c));
  ASSERT_TRUE(d.add(a));
  EXPECT_EQ(d.sk(a).name(), "rel.sock");
  EXPECT_EQ(d.sk(a).bind_dir(), "");
  st = d.finish(false);
  ASSERT_TRUE(st) << st.error().what();
  // From elsewhere, the name no longer leads to it: its socket file
  // (SIOCUNIXFILE) tells the directory.
  img::UnixSocketFile again;
  st = dump_unix_socket("test: fd 9", s, named_ino_of(s), 0, again);
  ASSERT_TRUE(st) << st.error().what();
  EXPECT_EQ(again.bind_dir(), std::filesystem::canonical(dir.path).string());
  EXPECT_EQ(again.path_state(), img::UNIX_PATH_OWNED);
  close(s);
  close(c);
  close(a);
  auto r = UnixSocketRestorer::create_all(d.files, 100);
  ASSERT_TRUE(r) << r.error().what();
  UniqueFd rs = restored(**r, d.sk(s)), ra = restored(**r, d.sk(a)), rc = restored(**r, d.sk(c));
  EXPECT_EQ(unix_name_of(rs.get()), "rel.sock");
  EXPECT_EQ(unix_name_of(ra.get()), "rel.sock");
  EXPECT_EQ(unix_name_of(rc.get(), true), "rel.sock");
  struct stat sst;
  EXPECT_EQ(stat((dir / "rel.sock").c_str(), &sst), 0);
  char now[4096];
  ASSERT_TRUE(getcwd(now, sizeof now));
  EXPECT_STREQ(now, old);  // our cwd never moved
}

TEST(UnixNamedDump, ADatagramFromANamedSenderOutsideTheTreeIsRefused) {
  Dir dir;
  int server = sock(SOCK_DGRAM), sender = sock(SOCK_DGRAM);
  bind_to(server, dir / "s.sock");
  bind_to(sender, dir / "sender.sock");
  sockaddr_un a;
  socklen_t len = unix_addr_of(dir / "s.sock", a);
  ASSERT_EQ(sendto(sender, "x", 1, 0, reinterpret_cast<sockaddr*>(&a), len), 1);
  Dumped d;
  ASSERT_TRUE(d.add(server));
  ASSERT_EQ(d.sk(server).queue_from_size(), 1);
  EXPECT_EQ(d.sk(server).queue_from(0), dir / "sender.sock");
  auto st = d.finish(false);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().what().find(fmt::format("has a datagram queued from {}, a socket outside the dumped tree",
                                               dir / "sender.sock")), std::string::npos) << st.error().what();
  // With the sender in the tree, it is sent again from it.
  ASSERT_TRUE(d.add(sender));
  ASSERT_TRUE(d.finish(false));
  close(server);
  close(sender);
  auto r = UnixSocketRestorer::create_all(d.files, 100);
  ASSERT_TRUE(r) << r.error().what();
  UniqueFd rs = restored(**r, d.sk(server));
  sockaddr_un from{};
  socklen_t flen = sizeof from;
  char c = 0;
  ASSERT_EQ(recvfrom(rs.get(), &c, 1, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &flen), 1);
  EXPECT_EQ(c, 'x');
  EXPECT_EQ(unix_raw_name(from, flen), dir / "sender.sock");
}

}  // namespace

namespace {

TEST(UnixNamedRoundTrip, DatagramsLeftByAClosedPeerComeBack) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
  ASSERT_EQ(send(sv[1], "one", 3, 0), 3);
  ASSERT_EQ(send(sv[1], "two!", 4, 0), 4);
  close(sv[1]);
  Dumped d;
  ASSERT_TRUE(d.add(sv[0]));
  EXPECT_EQ(d.sk(sv[0]).peer_ino(), 0u);
  ASSERT_TRUE(d.finish(false));
  close(sv[0]);
  auto r = UnixSocketRestorer::create_all(d.files, 100);
  ASSERT_TRUE(r) << r.error().what();
  UniqueFd a = restored(**r, d.sk(sv[0]));
  r->reset();
  EXPECT_EQ(recv_now(a.get()), "one");
  EXPECT_EQ(recv_now(a.get()), "two!");
  EXPECT_EQ(recv_now(a.get()), "");
}

}  // namespace

namespace {

TEST(UnixNamedRestore, APathHeldByALiveSocketOrAnotherFileIsRefusedAndLeftAlone) {
  Dir dir;
  std::string path = dir / "busy.sock";
  int s = sock(SOCK_STREAM);
  bind_to(s, path);
  ASSERT_EQ(listen(s, 1), 0);
  Dumped d;
  ASSERT_TRUE(d.add(s));
  // The dumped listener still holds its path.
  auto r = UnixSocketRestorer::create_all(d.files, 100);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().what().find(fmt::format("a live socket is bound at {} now", path)), std::string::npos)
      << r.error().what();
  close(s);
  // A regular file where the socket file must come back.
  ASSERT_EQ(unlink(path.c_str()), 0);
  { FILE* f = fopen(path.c_str(), "w"); ASSERT_TRUE(f); fclose(f); }
  r = UnixSocketRestorer::create_all(d.files, 100);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().what().find("is now a file of another kind"), std::string::npos) << r.error().what();
  struct stat st;
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  // The socket file left by the dumped socket is taken over.
  ASSERT_EQ(unlink(path.c_str()), 0);
  int stale = sock(SOCK_DGRAM);
  bind_to(stale, path);
  close(stale);
  d.files[0].mutable_unix_sk()->set_path_state(img::UNIX_PATH_OWNED);
  r = UnixSocketRestorer::create_all(d.files, 100);
  ASSERT_TRUE(r) << r.error().what();
}

}  // namespace

namespace {

TEST(UnixNamedRoundTrip, AClientAutoboundBySoPasscredKeepsItsName) {
  std::string abstract = fmt::format("{}minicriu-unit-pc-{}", '\0', getpid());
  int l = sock(SOCK_STREAM), c = sock(SOCK_STREAM);
  bind_to(l, abstract);
  ASSERT_EQ(listen(l, 1), 0);
  int one = 1;
  ASSERT_EQ(setsockopt(c, SOL_SOCKET, SO_PASSCRED, &one, sizeof one), 0);
  connect_to(c, abstract);  // binds c to an abstract name the kernel picks
  int a = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(a, 0);
  std::string autobound = unix_name_of(c);
  ASSERT_FALSE(autobound.empty());
  Dumped d;
  for (int fd : {l, c, a}) ASSERT_TRUE(d.add(fd));
  ASSERT_TRUE(d.finish(false));
  for (int fd : {l, c, a}) close(fd);
  auto r = UnixSocketRestorer::create_all(d.files, 100);
  ASSERT_TRUE(r) << r.error().what();
  UniqueFd rc = restored(**r, d.sk(c)), ra = restored(**r, d.sk(a));
  EXPECT_EQ(unix_name_of(rc.get()), autobound);
  EXPECT_EQ(unix_name_of(ra.get(), true), autobound);
  EXPECT_EQ(unix_name_of(ra.get()), abstract);
  int pc = 0;
  socklen_t len = sizeof pc;
  ASSERT_EQ(getsockopt(rc.get(), SOL_SOCKET, SO_PASSCRED, &pc, &len), 0);
  EXPECT_EQ(pc, 1);
}

}  // namespace

namespace {

TEST(UnixNamedRoundTrip, AWaitingConnectionWhoseClientWasClosedKeepsItsDataAndEnd) {
  Dir dir;
  std::string path = dir / "l.sock";
  int l = sock(SOCK_STREAM), c = sock(SOCK_STREAM);
  bind_to(l, path);
  ASSERT_EQ(listen(l, 2), 0);
  connect_to(c, path);
  ASSERT_EQ(send(c, "bye", 3, 0), 3);
  close(c);
  Dumped d;
  ASSERT_TRUE(d.add(l));
  ASSERT_EQ(d.sk(l).pending_size(), 1);
  EXPECT_EQ(d.sk(l).pending(0).client_ino(), 0u);
  auto st = d.finish(false);
  ASSERT_TRUE(st) << st.error().what();
  EXPECT_EQ(d.sk(l).pending(0).queue(0), "bye");
  close(l);
  auto r = UnixSocketRestorer::create_all(d.files, 100);
  ASSERT_TRUE(r) << r.error().what();
  UniqueFd rl = restored(**r, d.sk(l));
  r->reset();
  UniqueFd a = accept_now(rl.get());
  ASSERT_TRUE(a);
  EXPECT_EQ(recv_now(a.get()), "bye");
  char ch;
  EXPECT_EQ(recv(a.get(), &ch, 1, MSG_DONTWAIT), 0);  // the end of the stream
  EXPECT_FALSE(accept_now(rl.get()));
}

}  // namespace
