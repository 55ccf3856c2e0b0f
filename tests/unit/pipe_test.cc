// PipeStore and PipeRestorer on real pipes: queued bytes read without being
// consumed, written back into a new pipe of the same capacity.
#include <fcntl.h>
#include <sys/stat.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

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
