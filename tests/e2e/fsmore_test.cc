// What real applications hold in their file tables (issue 17): files,
// directories, device nodes and fifos with no name left or whose directory
// is gone (tests/programs/deleted.c), a chroot and namespace files
// (rootns.c), pidfds to a grandchild and to a reaped process (pidfds.c),
// epoll entries whose fd was closed or reused (epollgone.c). Each restored
// twice and checked by the program itself; each refusal that remains is one
// line and leaves the tree running. The plain and --leave-running modes are
// in modes_test.cc.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "e2e_util.hpp"

using namespace e2e;

TEST(DeletedFiles, DirectoriesDevicesFifosAndFilesOfRemovedDirectoriesComeBackTwice) { cycle("deleted", 2); }

TEST(DeletedFiles, ShowSaysWhatEachGhostIs) {
  TempDir dir;
  Program p("deleted", dir);
  ASSERT_TRUE(p.wait_ready());
  std::string images = images_dir(dir);
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  int dirs = 0, devices = 0, files = 0;
  for (auto& g : view.ghosts()) {
    if (S_ISDIR(g.mode())) dirs++;
    if (S_ISCHR(g.mode()) && g.rdev() == makedev(1, 3)) devices++;
    if (S_ISREG(g.mode())) files++;
  }
  EXPECT_EQ(dirs, 2) << "the cwd and the held directory";
  EXPECT_EQ(devices, 1);
  EXPECT_EQ(files, 1) << "the file of the removed directory (the other one has a name left)";
  int fifos = 0;
  for (auto& f : view.files()) fifos += f.has_fifo() && f.fifo().deleted();
  EXPECT_EQ(fifos, 2) << "the reader and the writer";
  expect_intact(p);
}

TEST(Chroot, AChrootedProcessWithNamespaceFilesComesBackTwice) { cycle("rootns", 2); }

TEST(NamespaceFiles, ANamespaceNoProcessIsInIsRefused) {
  expect_dump_refused("rootns", {"other-ns"}, [](pid_t pid) -> std::vector<std::string> {
    return {fmt::format("pid {}: fd ", pid),
            "is a namespace file of a uts namespace that no process of the tree (nor minicriu) is in"};
  });
}

TEST(Pidfds, ToAGrandchildToTheParentAndToAReapedProcessComeBackTwice) { cycle("pidfds", 2); }

TEST(EpollEntries, EntriesWhoseFdWasClosedOrReusedComeBackTwice) { cycle("epollgone", 2); }

TEST(EpollEntries, AnEntryWhoseFileOnlyAProcessOutsideHoldsIsRefused) {
  expect_dump_refused("epollgone", {"outside"}, [](pid_t pid) -> std::vector<std::string> {
    return {fmt::format("pid {}: fd ", pid),
            "is an epoll that watches a file added as fd ",
            "and no fd of the dumped tree holds that file any more"};
  });
}

// inotify watches on a file and a directory with no name left, held open
// by fds of the tree: watched again through their ghosts.
TEST(InotifyWatches, WatchesOnFilesWithNoNameLeftComeBackTwice) { cycle("inotifygone", 2, {}, false); }

TEST(InotifyWatches, AWatchOnADeletedFileOnlyAMappingHoldsIsRefused) {
  expect_dump_refused("inotifygone", {"mapped"}, [](pid_t pid) -> std::vector<std::string> {
    return {fmt::format("pid {}: fd ", pid),
            "is an inotify watching a deleted file (", "/gone.txt, watch 2) that no fd of the dumped tree holds open",
            "remove that watch before the dump, or hold the file open in the tree"};
  });
}

// fanotify: the group's flags and its inode, mount and file system marks,
// an ignore mask that survives modification.
TEST(Fanotify, AGroupAndItsMarksComeBackTwice) { cycle("fanotify", 2); }

TEST(Fanotify, TheImagesHoldTheGroupAndItsMarks) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("fanotify", dir);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  int groups = 0;
  for (auto& f : view.files()) {
    if (!f.has_fanotify()) continue;
    groups++;
    const auto& g = f.fanotify();
    EXPECT_EQ(g.init_flags(), static_cast<uint32_t>(FAN_CLASS_NOTIF | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE));
    EXPECT_EQ(g.event_f_flags() & O_ACCMODE, static_cast<uint32_t>(O_RDONLY));
    ASSERT_EQ(g.marks_size(), 4);
    int inode = 0, mount = 0, fs = 0;
    for (auto& m : g.marks()) {
      if (m.type() == FAN_MARK_MOUNT) {
        mount++;
        EXPECT_EQ(m.mask(), static_cast<uint32_t>(FAN_OPEN_EXEC));
      } else if (m.type() == FAN_MARK_FILESYSTEM) {
        fs++;
        EXPECT_EQ(m.mask(), static_cast<uint32_t>(FAN_MODIFY));
      } else if (m.path().ends_with("/b.txt")) {
        inode++;
        EXPECT_EQ(m.mask(), 0u);
        EXPECT_EQ(m.ignored_mask(), static_cast<uint32_t>(FAN_MODIFY));
        EXPECT_EQ(m.flags() & FAN_MARK_IGNORED_SURV_MODIFY, static_cast<uint32_t>(FAN_MARK_IGNORED_SURV_MODIFY));
      } else {
        inode++;
        EXPECT_TRUE(m.path().ends_with("/a.txt")) << m.path();
        EXPECT_EQ(m.mask(), static_cast<uint32_t>(FAN_MODIFY | FAN_CLOSE_WRITE));
      }
    }
    EXPECT_EQ(inode, 2);
    EXPECT_EQ(mount, 1);
    EXPECT_EQ(fs, 1);
  }
  EXPECT_EQ(groups, 1);
  auto text = run_minicriu({"show", "-D", images});
  EXPECT_NE(text.output.find("fanotify (flags "), std::string::npos) << text.output;
  expect_intact(p);
}

TEST(Fanotify, AMarkOnADeletedFileIsRefused) {
  expect_dump_refused("fanotify", {"deleted"}, [](pid_t pid) -> std::vector<std::string> {
    return {fmt::format("pid {}: fd ", pid), "is a fanotify group with a mark on a deleted file (",
            "/c.txt), which has no name to mark again; remove that mark (FAN_MARK_REMOVE) before the dump"};
  });
}

// AIO contexts: made again with io_setup and moved to their rings' addresses
// (the contexts' ids); a ring with an event not yet reaped is refused.
// Not the same maps: a new ring is a new inode of the aio file system.
TEST(Aio, AioContextsComeBackUnderTheirIdsTwice) { cycle("aio", 2, {}, false); }

TEST(Aio, AioRingsAreInTheImagesWithTheirSize) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("aio", dir);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  ASSERT_EQ(view.processes_size(), 1);
  std::vector<uint32_t> nrs;
  for (auto& v : view.processes(0).mm().vmas())
    if (v.kind() == minicriu::img::VMA_AIO_RING) {
      nrs.push_back(v.aio_ring_nr());
      EXPECT_FALSE(v.has_pages());
    }
  ASSERT_EQ(nrs.size(), 2u);
  std::sort(nrs.begin(), nrs.end());
  EXPECT_GE(nrs[0], 34u);    // io_setup(16): at least 16 * 2 + 2
  EXPECT_GE(nrs[1], 1402u);  // io_setup(700)
  expect_intact(p);
}

TEST(Aio, ARingWithAnEventNotYetReapedIsRefusedAndLeftWorking) {
  expect_dump_refused("aio", {"unreaped"}, [](pid_t pid) -> std::vector<std::string> {
    return {fmt::format("pid {}: mapping ", pid),
            "the ring of an AIO context (io_setup) holds 1 completion event(s) not yet reaped, which minicriu "
            "cannot queue again; reap them (io_getevents) before the dump"};
  });
}
