// PipeStore and PipeRestorer on real pipes: queued bytes read without being
// consumed, written back into a new pipe of the same capacity.
#include <fcntl.h>
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
    ASSERT_TRUE(store.commit());
    auto w = ImageWriter::create(dir.pipes(), ImageKind::pipes);
    ASSERT_TRUE(w->write(store.entries()[0]));
    ASSERT_TRUE(w->commit());
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
