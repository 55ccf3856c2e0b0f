// Names that are not UTF-8 (tests/programs/nonutf8.c: a Latin-1 file name
// held open, a unix socket bound at a path with 0xff 0xfe, a Latin-1 working
// directory, a comm cut inside a UTF-8 character, a thread's comm of bytes
// 0xff 0xfe) are carried by a dump and a restore, and `show` and
// `show --json` read the checkpoint (paths and names are proto `bytes`,
// base64 in the JSON, so they come back exactly).
#include <gtest/gtest.h>
#include <signal.h>

#include "e2e_util.hpp"

using namespace e2e;

TEST(NonUtf8, ProgramVerifiesItselfWithoutCheckpoint) {
  TempDir dir;
  Program p("nonutf8", dir);
  ASSERT_TRUE(p.wait_ready());
  p.signal(SIGUSR1);
  EXPECT_EQ(p.wait_exit().value_or(-1), 0) << p.log();
}

TEST(NonUtf8, NamesSurviveDumpAndRestore) { cycle("nonutf8", 2); }

TEST(NonUtf8, ShowAndShowJsonReadTheNamesExactly) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("nonutf8", dir);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));

  auto text = run_minicriu({"show", "-D", images});
  EXPECT_EQ(text.status, 0) << text.output;

  minicriu::img::CheckpointView view = show_json(images);
  std::string file = dir / "caf\xe9.latin1";
  std::string sock = dir / "sock\xff\xfe";
  std::string cwd = dir / "r\xe9pertoire";
  bool file_seen = false, cwd_seen = false, sock_seen = false;
  for (auto& f : view.files()) {
    if (f.has_reg() && f.reg().path() == file) file_seen = true;
    if (f.has_reg() && f.reg().path() == cwd) cwd_seen = true;
    if (f.has_unix_sk() && f.unix_sk().name() == sock) sock_seen = true;
  }
  EXPECT_TRUE(file_seen) << "no file entry for the Latin-1 name";
  EXPECT_TRUE(cwd_seen) << "no file entry for the Latin-1 working directory";
  EXPECT_TRUE(sock_seen) << "no unix socket bound at the non-UTF-8 path";
  ASSERT_EQ(view.processes_size(), 1);
  auto& core = view.processes(0).core();
  EXPECT_EQ(core.comm(), std::string("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3", 15));
  bool thread_seen = false;
  for (auto& t : core.threads()) thread_seen |= t.comm() == "t\xff\xfe";
  EXPECT_TRUE(thread_seen) << "no thread with the comm t\\xff\\xfe";
  expect_intact(p);
}
