#include "restorer/restore_channel.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace minicriu {

namespace {

void send_msg(int fd, uint32_t type, int err, const std::string& text) {
  rst::Msg m{};
  m.type = type;
  m.err = err;
  std::strncpy(m.text, text.c_str(), sizeof(m.text) - 1);
  ssize_t n;
  do n = ::write(fd, &m, sizeof(m)); while (n < 0 && errno == EINTR);
}

}  // namespace

Result<ChannelPair> make_channel() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return fail_errno("socketpair for the restore channel");
  return ChannelPair{UniqueFd(sv[0]), UniqueFd(sv[1])};
}

Result<rst::Msg> receive(int fd) {
  rst::Msg m{};
  ssize_t n;
  do n = ::read(fd, &m, sizeof(m)); while (n < 0 && errno == EINTR);
  if (n < 0) return fail_errno("reading the restore channel");
  if (n == 0) return fail("the restoring process died before it reported");
  if (static_cast<size_t>(n) < offsetof(rst::Msg, text))
    return failf("short message of {} bytes on the restore channel", n);
  m.text[sizeof(m.text) - 1] = '\0';
  return m;
}

Status send_go(int fd) {
  rst::Msg m{};
  m.type = rst::MSG_GO;
  ssize_t n;
  do n = ::write(fd, &m, sizeof(m)); while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof(m))) return fail_errno("sending go to the restored process");
  return {};
}

Result<bool> wait_closed(int fd) {
  char buf[sizeof(rst::Msg)];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("reading the restore channel");
    if (n == 0) return true;
    // After go only the blob's last steps can fail (seccomp): it tells why
    // and the process dies.
    rst::Msg m;
    if (static_cast<size_t>(n) == sizeof(m)) {
      std::memcpy(&m, buf, sizeof(m));
      m.text[sizeof(m.text) - 1] = 0;
      if (m.type == rst::MSG_ERROR) return std::unexpected(Error(m.text, m.err));
    }
  }
}

void send_warn(int fd, const std::string& text) { send_msg(fd, rst::MSG_WARN, 0, text); }
void send_error(int fd, const Error& e) { send_msg(fd, rst::MSG_ERROR, e.err(), e.message()); }

}  // namespace minicriu
