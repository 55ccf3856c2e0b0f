/* Two AIO contexts (io_setup of 16 and of 700 events), no request in flight:
 *
 *   aio READY DIR [unreaped]
 *
 * After SIGUSR1 each context still works under the same id (the address of
 * its ring): a read of a file submitted with io_submit completes with
 * io_getevents, and the ring's header (what libaio's user-space reaping
 * reads) is an empty ring of the same size.
 * "unreaped": a read completed before READY whose event is not yet reaped
 * (a dump must refuse it and leave it there to reap). Exit 0 only if all held. */
#include "prog_common.h"

#include <linux/aio_abi.h>

/* fs/aio.c's struct aio_ring header. */
struct ring {
  unsigned id, nr, head, tail, magic, compat_features, incompat_features, header_length;
};

static int fd;
static char buf[8];

static int submit(aio_context_t ctx, uint64_t data) {
  static struct iocb cb;
  memset(&cb, 0, sizeof cb);
  memset(buf, 0, sizeof buf);
  cb.aio_fildes = (uint32_t)fd;
  cb.aio_lio_opcode = IOCB_CMD_PREAD;
  cb.aio_buf = (uint64_t)(uintptr_t)buf;
  cb.aio_nbytes = 4;
  cb.aio_data = data;
  struct iocb* cbs[1] = {&cb};
  return (int)syscall(SYS_io_submit, ctx, 1, cbs);
}

static void reap(aio_context_t ctx, uint64_t data, const char* name) {
  struct io_event ev;
  memset(&ev, 0, sizeof ev);
  CHECK(syscall(SYS_io_getevents, ctx, 1, 1, &ev, NULL) == 1 && ev.data == data && ev.res == 4,
        "%s: io_getevents: %s, data %#llx res %lld", name, strerror(errno), (unsigned long long)ev.data,
        (long long)ev.res);
  CHECK(memcmp(buf, "aio!", 4) == 0, "%s: the read: %.4s", name, buf);
}

static void check_context(aio_context_t ctx, unsigned nr, const char* name) {
  const struct ring* r = (const struct ring*)ctx;
  CHECK(r->magic == 0xa10a10a1 && r->nr == nr && r->head == r->tail, "%s: ring magic %#x nr %u (was %u) head %u tail %u",
        name, r->magic, r->nr, nr, r->head, r->tail);
  CHECK(submit(ctx, 0x5151) == 1, "%s: io_submit: %s", name, strerror(errno));
  reap(ctx, 0x5151, name);
  CHECK(r->head == r->tail, "%s: ring head %u tail %u after the reap", name, r->head, r->tail);
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  int unreaped = argc > 3 && strcmp(argv[3], "unreaped") == 0;
  prog_install_usr1();
  aio_context_t small = 0, big = 0;
  if (syscall(SYS_io_setup, 16, &small) != 0 || syscall(SYS_io_setup, 700, &big) != 0) return 2;
  unsigned small_nr = ((const struct ring*)small)->nr, big_nr = ((const struct ring*)big)->nr;
  char path[4096];
  snprintf(path, sizeof path, "%s/aio.data", argv[2]);
  fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || write(fd, "aio!", 4) != 4) return 2;
  /* Used once before the dump: the ring's head and tail are not at 0. */
  if (submit(big, 1) != 1) return 2;
  reap(big, 1, "before");
  if (unreaped && submit(small, 0x7777) != 1) return 2;
  prog_ready(argv[1]);
  prog_wait_usr1();
  if (unreaped) reap(small, 0x7777, "the event left unreaped at the dump");
  check_context(small, small_nr, "io_setup(16)");
  check_context(big, big_nr, "io_setup(700)");
  CHECK(syscall(SYS_io_destroy, small) == 0, "io_destroy: %s", strerror(errno));
  CHECK(syscall(SYS_io_destroy, big) == 0, "io_destroy: %s", strerror(errno));
  return prog_finish();
}
