// PipeStore and PipeRestorer on real pipes: queued bytes read without being
// consumed, written back into a new pipe of the same capacity.
#include <fcntl.h>
#include <sys/stat.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "base/external.hpp"
#include "fs/pipe.hpp"

using namespace minicriu;

TEST(Pipe, BytesRoundTripWithoutBeingConsumed) {
  char tmpl[] = "/tmp/minicriu-pipe-XXXXXX";
  std::string root = mkdtemp(tmpl);
  ImageDir dir(root);
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  ASSERT_EQ(fcntl(p[1], F_SETPIPE_SZ, 1 << 17), 1 << 17);
  std::string msg = "hello, in flight";
  ASSERT_EQ(write(p[1], msg.data(), msg.size()), (ssize_t)msg.size());
  struct stat st;
  fstat(p[1], &st);
  {
    PipeStore store(dir);
    ASSERT_TRUE(store.add("test: fd 4", p[1], st.st_ino));  // from the write end
    ASSERT_TRUE(store.add("test: fd 3", p[0], st.st_ino));  // once per pipe
    ASSERT_EQ(store.entries().size(), 1u);
    EXPECT_EQ(store.entries()[0].bytes(), msg.size());
    EXPECT_EQ(store.entries()[0].capacity(), 1u << 17);
    ImageSet images(dir);
    ASSERT_TRUE(store.commit(images));
    ASSERT_TRUE(images.publish());
  }
  // Still there for the application.
  char buf[64] = {};
  ASSERT_EQ(read(p[0], buf, sizeof(buf)), (ssize_t)msg.size());
  EXPECT_EQ(std::string(buf), msg);

  auto restorer = PipeRestorer::load(dir);
  ASSERT_TRUE(restorer) << restorer.error().what();
  img::PipeFile rd, wr;
  rd.set_pipe_ino(st.st_ino);
  rd.set_flags(O_RDONLY | O_NONBLOCK);
  wr.set_pipe_ino(st.st_ino);
  wr.set_flags(O_WRONLY);
  auto r = (*restorer)->open_end(rd);
  auto w = (*restorer)->open_end(wr);
  ASSERT_TRUE(r && w);
  EXPECT_EQ(fcntl(r->get(), F_GETPIPE_SZ), 1 << 17);
  EXPECT_TRUE(fcntl(r->get(), F_GETFL) & O_NONBLOCK);
  EXPECT_FALSE(fcntl(w->get(), F_GETFL) & O_NONBLOCK);
  memset(buf, 0, sizeof(buf));
  ASSERT_EQ(read(r->get(), buf, sizeof(buf)), (ssize_t)msg.size());
  EXPECT_EQ(std::string(buf), msg);
  // Once the restorer and our write end are gone, the reader sees EOF.
  w->reset();
  restorer->reset();
  fcntl(r->get(), F_SETFL, 0);
  EXPECT_EQ(read(r->get(), buf, sizeof(buf)), 0);
  std::filesystem::remove_all(root);
  close(p[0]);
  close(p[1]);
}

TEST(Pipe, FifoBytesComeBackBeforeAnyHolderOpensIt) {
  char tmpl[] = "/tmp/minicriu-fifo-XXXXXX";
  std::string root = mkdtemp(tmpl);
  std::string path = root + "/fifo";
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  int rw = open(path.c_str(), O_RDWR);
  ASSERT_EQ(write(rw, "queued", 6), 6);
  struct stat st;
  fstat(rw, &st);
  ImageDir dir(root);
  {
    PipeStore store(dir);
    ASSERT_TRUE(store.add("test: fd 3", rw, st.st_ino));
    ImageSet images(dir);
    ASSERT_TRUE(store.commit(images));
    ASSERT_TRUE(images.publish());
  }
  close(rw);  // the queued bytes go with the last holder
  auto restorer = PipeRestorer::load(dir);
  ASSERT_TRUE(restorer) << restorer.error().what();
  img::FifoFile end;
  end.set_path(path);
  end.set_pipe_ino(st.st_ino);
  end.set_flags(O_RDONLY);
  auto fd = (*restorer)->open_fifo(end);
  ASSERT_TRUE(fd) << fd.error().what();
  EXPECT_FALSE(fcntl(fd->get(), F_GETFL) & O_NONBLOCK);
  char buf[16] = {};
  ASSERT_EQ(read(fd->get(), buf, sizeof(buf)), 6);
  EXPECT_STREQ(buf, "queued");
  fd->reset();
  restorer->reset();
  std::filesystem::remove_all(root);
}

TEST(Pipe, ExternalOptionsParse) {
  EXPECT_EQ(parse_external_pipe("pipe[42]").value(), 42u);
  for (auto bad : {"pipe[]", "pipe[x]", "pipe[0]", "pipe[1", "fifo[1]"}) EXPECT_FALSE(parse_external_pipe(bad)) << bad;
  auto fd = parse_inherit_fd("fd[4]:pipe:[99]");
  ASSERT_TRUE(fd);
  EXPECT_EQ(fd->first, 4);
  EXPECT_EQ(fd->second, "pipe:[99]");
  DumpOptions o;
  o.external = {"pipe[7]"};
  auto policy = ExternalPolicy::from_options(o);
  ASSERT_TRUE(policy);
  ExternalObject obj;
  obj.kind = "pipe";
  obj.inode = 7;
  EXPECT_TRUE(policy->accepts(obj));
  obj.inode = 8;
  EXPECT_FALSE(policy->accepts(obj));
  o.ext_pipes = true;
  EXPECT_TRUE(ExternalPolicy::from_options(o)->accepts(obj));
}

// The tree (pid 1 here, a stand-in number) holds the read end; this test
// process, outside the tree, holds both. Refused, then accepted with the
// queued bytes carried into a stand-in that a caller gives at restore.
TEST(Pipe, AnExternalPipeIsRefusedThenCarriedIntoItsStandIn) {
  char tmpl[] = "/tmp/minicriu-pipe-XXXXXX";
  std::string root = mkdtemp(tmpl);
  ImageDir dir(root);
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  ASSERT_EQ(write(p[1], "queued", 6), 6);
  struct stat st;
  fstat(p[0], &st);
  std::string link = "pipe:[" + std::to_string(st.st_ino) + "]";
  {
    PipeStore store(dir);
    ASSERT_TRUE(store.add("pid 1: fd 0", p[0], st.st_ino));
    store.add_end(st.st_ino, 1, 0, O_RDONLY, "pid 1: fd 0", link);
    auto refused = store.check_outside({1}, ExternalPolicy());
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().what().find("pid 1: fd 0: " + link + " is also held by pid " +
                                          std::to_string(getpid())), std::string::npos) << refused.error().what();
    EXPECT_NE(refused.error().what().find("--ext-pipes"), std::string::npos);
    DumpOptions all;
    all.ext_pipes = true;
    ASSERT_TRUE(store.check_outside({1}, ExternalPolicy::from_options(all).value()));
    ASSERT_EQ(store.entries().size(), 1u);
    EXPECT_TRUE(store.entries()[0].external());
    EXPECT_TRUE(store.entries()[0].tree_reads());
    EXPECT_EQ(store.entries()[0].outside_pid(), static_cast<uint32_t>(getpid()));
    ImageSet images(dir);
    ASSERT_TRUE(store.commit(images));
    ASSERT_TRUE(images.publish());
  }
  {
    // The same pipe, written to by the tree, with bytes queued: refused.
    PipeStore store(dir);
    ASSERT_TRUE(store.add("pid 1: fd 1", p[1], st.st_ino));
    store.add_end(st.st_ino, 1, 1, O_WRONLY, "pid 1: fd 1", link);
    DumpOptions all;
    all.ext_pipes = true;
    auto queued = store.check_outside({1}, ExternalPolicy::from_options(all).value());
    ASSERT_FALSE(queued);
    EXPECT_NE(queued.error().what().find("6 byte(s) the tree wrote into " + link), std::string::npos)
        << queued.error().what();
  }
  int fresh[2];
  ASSERT_EQ(pipe(fresh), 0);
  auto restorer = PipeRestorer::load(dir);
  ASSERT_TRUE(restorer) << restorer.error().what();
  EXPECT_EQ((*restorer)->external_keys(), std::set<std::string>{link});
  auto none = (*restorer)->take_stand_ins(ExternalStandIns());
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().what().find("--inherit-fd fd[N]:" + link), std::string::npos) << none.error().what();
  RestoreOptions wrong;
  wrong.inherit_fds = {"fd[" + std::to_string(fresh[1]) + "]:" + link};
  auto write_end = (*restorer)->take_stand_ins(ExternalStandIns::from_options(wrong).value());
  ASSERT_FALSE(write_end);
  EXPECT_NE(write_end.error().what().find("is a write end; give the read end"), std::string::npos);
  RestoreOptions right;
  right.inherit_fds = {"fd[" + std::to_string(fresh[0]) + "]:" + link};
  ASSERT_TRUE((*restorer)->take_stand_ins(ExternalStandIns::from_options(right).value()));
  ASSERT_TRUE((*restorer)->create_all(100));
  img::PipeFile end;
  end.set_pipe_ino(st.st_ino);
  end.set_flags(O_RDONLY | O_NONBLOCK);
  auto rd = (*restorer)->open_end(end);
  ASSERT_TRUE(rd) << rd.error().what();
  EXPECT_TRUE(fcntl(rd->get(), F_GETFL) & O_NONBLOCK);
  EXPECT_FALSE(fcntl(fresh[0], F_GETFL) & O_NONBLOCK) << "the caller's description was changed";
  ASSERT_TRUE((*restorer)->fill_stand_ins());
  char buf[16] = {};
  ASSERT_EQ(read(rd->get(), buf, sizeof buf), 6);
  EXPECT_STREQ(buf, "queued");
  restorer->reset();
  rd->reset();
  for (int fd : {p[0], p[1], fresh[0], fresh[1]}) close(fd);
  std::filesystem::remove_all(root);
}
