#include <gtest/gtest.h>
#include <sys/resource.h>

#include "proc/proc_parse.hpp"

using namespace minicriu;

TEST(ProcParse, StatWithSpacesAndParensInComm) {
  std::string text =
      "1234 (a b) c)) S 1 1234 1234 0 -1 4194304 100 0 0 0 1 2 0 0 20 0 1 0 555 1000 50 "
      "18446744073709551615 94000000000000 94000000100000 140730000000000 0 0 0 0 0 0 0 0 0 17 "
      "1 0 0 0 0 0 94000000200000 94000000300000 94000001000000 140730000001000 140730000002000 "
      "140730000002000 140730000003000 0\n";
  auto s = proc::parse_stat(text);
  ASSERT_TRUE(s) << s.error().what();
  EXPECT_EQ(s->pid, 1234);
  EXPECT_EQ(s->comm, "a b) c)");
  EXPECT_EQ(s->state, 'S');
  EXPECT_EQ(s->ppid, 1);
  EXPECT_EQ(s->pgrp, 1234);
  EXPECT_EQ(s->start_code, 94000000000000ull);
  EXPECT_EQ(s->end_code, 94000000100000ull);
  EXPECT_EQ(s->exit_signal, 17u);
  EXPECT_EQ(s->start_data, 94000000200000ull);
  EXPECT_EQ(s->start_brk, 94000001000000ull);
  EXPECT_EQ(s->env_end, 140730000003000ull);
}

TEST(ProcParse, StatTruncatedIsAnError) {
  EXPECT_FALSE(proc::parse_stat("12 (x) S 1 2"));
  EXPECT_FALSE(proc::parse_stat("garbage"));
}

TEST(ProcParse, SmapsFlagsAndRss) {
  std::string text =
      "55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0                          [heap]\n"
      "Size:                132 kB\n"
      "Rss:                   8 kB\n"
      "Swap:                  4 kB\n"
      "VmFlags: rd wr mr mw me ac sd\n"
      "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]\n"
      "Rss:                  12 kB\n"
      "ProtectionKey:         3\n"
      "VmFlags: rd wr mr mw me gd ac\n"
      "7f0000000000-7f0000001000 r-xs 00001000 fe:01 4242                       /path/with space (deleted)\n"
      "VmFlags: rd ex sh\n";
  auto m = proc::parse_smaps(text);
  ASSERT_TRUE(m) << m.error().what();
  ASSERT_EQ(m->size(), 3u);
  EXPECT_EQ((*m)[0].path, "[heap]");
  EXPECT_EQ((*m)[0].rss_kb, 8u);
  EXPECT_EQ((*m)[0].swap_kb, 4u);
  EXPECT_FALSE((*m)[0].has_flag("gd"));
  EXPECT_TRUE((*m)[1].has_flag("gd"));
  EXPECT_EQ((*m)[0].pkey, 0u);
  EXPECT_EQ((*m)[1].pkey, 3u);
  EXPECT_TRUE((*m)[2].shared);
  EXPECT_TRUE((*m)[2].exec);
  EXPECT_FALSE((*m)[2].write);
  EXPECT_EQ((*m)[2].offset, 0x1000u);
  EXPECT_EQ((*m)[2].dev_major, 0xfeu);
  EXPECT_EQ((*m)[2].dev_minor, 1u);
  EXPECT_EQ((*m)[2].inode, 4242u);
  EXPECT_EQ((*m)[2].path, "/path/with space (deleted)");
}

TEST(ProcParse, MapsRejectsGarbage) { EXPECT_FALSE(proc::parse_maps("not a maps line\n")); }

TEST(ProcParse, Limits) {
  std::string text =
      "Limit                     Soft Limit           Hard Limit           Units     \n"
      "Max cpu time              unlimited            unlimited            seconds   \n"
      "Max file size             unlimited            unlimited            bytes     \n"
      "Max data size             unlimited            unlimited            bytes     \n"
      "Max stack size            8388608              unlimited            bytes     \n"
      "Max core file size        0                    unlimited            bytes     \n"
      "Max resident set          unlimited            unlimited            bytes     \n"
      "Max processes             95733                95733                processes \n"
      "Max open files            1024                 1048576              files     \n"
      "Max locked memory         8388608              8388608              bytes     \n"
      "Max address space         unlimited            unlimited            bytes     \n"
      "Max file locks            unlimited            unlimited            locks     \n"
      "Max pending signals       95733                95733                signals   \n"
      "Max msgqueue size         819200               819200               bytes     \n"
      "Max nice priority         0                    0                    \n"
      "Max realtime priority     0                    0                    \n"
      "Max realtime timeout      unlimited            unlimited            us        \n";
  auto l = proc::parse_limits(text);
  ASSERT_TRUE(l) << l.error().what();
  ASSERT_EQ(l->size(), 16u);
  for (auto& lim : *l) {
    if (lim.resource == RLIMIT_NOFILE) {
      EXPECT_EQ(lim.cur, 1024u);
      EXPECT_EQ(lim.max, 1048576u);
    }
    if (lim.resource == RLIMIT_STACK) {
      EXPECT_EQ(lim.cur, 8388608u);
      EXPECT_EQ(lim.max, ~0ull);
    }
  }
  EXPECT_FALSE(proc::parse_limits("Max cpu time unlimited unlimited\n"));
}

TEST(ProcParse, FdInfo) {
  auto f = proc::parse_fdinfo("pos:\t4096\nflags:\t02100002\nmnt_id:\t25\nino:\t77\n");
  ASSERT_TRUE(f) << f.error().what();
  EXPECT_EQ(f->pos, 4096u);
  EXPECT_EQ(f->flags, 02100002u);
  EXPECT_EQ(f->mnt_id, 25u);
  EXPECT_EQ(f->ino, 77u);
  EXPECT_FALSE(proc::parse_fdinfo("mnt_id: 3\n"));
}

TEST(ProcParse, FdInfoKeepsTheLinesOfAnonymousInodeKinds) {
  // An eventfd's fdinfo on Linux 6.18: the count is hexadecimal, padded.
  std::string text = "pos:\t0\nflags:\t04002\nmnt_id:\t17\nino:\t1038\n"
                     "eventfd-count:                a\neventfd-id: 1\neventfd-semaphore: 0\n";
  auto f = proc::parse_fdinfo(text);
  ASSERT_TRUE(f) << f.error().what();
  EXPECT_EQ(f->text, text);
  EXPECT_EQ(proc::fdinfo_field(f->text, "eventfd-count").value(), "a");
  EXPECT_EQ(proc::fdinfo_field(f->text, "eventfd-semaphore").value(), "0");
  EXPECT_FALSE(proc::fdinfo_field(f->text, "eventfd"));
}

TEST(ProcParse, StatusField) {
  std::string s = "Name:\tcat\nTgid:\t12\nTracerPid:\t0\n";
  EXPECT_EQ(proc::status_field(s, "Tgid").value(), "12");
  EXPECT_EQ(proc::status_field(s, "TracerPid").value(), "0");
  EXPECT_FALSE(proc::status_field(s, "Tg"));
}

TEST(ProcParse, PidList) {
  auto v = proc::parse_pid_list("12 13 400 ");
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[2], 400);
}

TEST(ProcParse, Timers) {
  std::string text =
      "ID: 0\nsignal: 14/00000000deadbeef\nnotify: signal/pid.1234\nClockID: 1\n"
      "ID: 3\nsignal: 34/0000000000000000\nnotify: thread/tid.1240\nClockID: 0\n"
      "ID: 4\nsignal: 0/0000000000000000\nnotify: none/pid.1234\nClockID: 7\n";
  auto t = proc::parse_timers(text);
  ASSERT_TRUE(t) << t.error().what();
  ASSERT_EQ(t->size(), 3u);
  EXPECT_EQ((*t)[0].id, 0);
  EXPECT_EQ((*t)[0].signo, 14);
  EXPECT_EQ((*t)[0].sigev_value, 0xdeadbeefu);
  EXPECT_EQ((*t)[0].notify, "signal");
  EXPECT_FALSE((*t)[0].to_thread);
  EXPECT_EQ((*t)[0].notify_pid, 1234);
  EXPECT_EQ((*t)[0].clock_id, 1);
  EXPECT_TRUE((*t)[1].to_thread);
  EXPECT_EQ((*t)[1].notify_pid, 1240);
  EXPECT_EQ((*t)[2].notify, "none");
  EXPECT_FALSE(proc::parse_timers("signal: 1/0\n"));
}
