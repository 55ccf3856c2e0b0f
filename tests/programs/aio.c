/* An AIO context (io_setup), no request in flight:
 *
 *   aio READY DIR
 *
 * After SIGUSR1 the context still works: a read of a file submitted with
 * io_submit completes with io_getevents. Exit 0 only if it did. */
#include "prog_common.h"

#include <linux/aio_abi.h>

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  prog_install_usr1();
  aio_context_t ctx = 0;
  if (syscall(SYS_io_setup, 16, &ctx) != 0) return 2;
  char path[4096];
  snprintf(path, sizeof path, "%s/aio.data", argv[2]);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || write(fd, "aio!", 4) != 4) return 2;
  prog_ready(argv[1]);
  prog_wait_usr1();
  char buf[8] = {0};
  struct iocb cb;
  memset(&cb, 0, sizeof cb);
  cb.aio_fildes = (uint32_t)fd;
  cb.aio_lio_opcode = IOCB_CMD_PREAD;
  cb.aio_buf = (uint64_t)(uintptr_t)buf;
  cb.aio_nbytes = 4;
  cb.aio_data = 0x5151;
  struct iocb* cbs[1] = {&cb};
  CHECK(syscall(SYS_io_submit, ctx, 1, cbs) == 1, "io_submit: %s", strerror(errno));
  struct io_event ev;
  CHECK(syscall(SYS_io_getevents, ctx, 1, 1, &ev, NULL) == 1 && ev.data == 0x5151 && ev.res == 4,
        "io_getevents: %s", strerror(errno));
  CHECK(memcmp(buf, "aio!", 4) == 0, "the read: %.4s", buf);
  CHECK(syscall(SYS_io_destroy, ctx) == 0, "io_destroy: %s", strerror(errno));
  return prog_finish();
}
