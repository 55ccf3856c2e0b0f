#include "images/image_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "base/fault.hpp"

namespace minicriu {

namespace {
struct ImageHead {
  uint32_t magic;
  uint32_t kind;
  uint32_t version;
  uint32_t reserved;
};
static_assert(sizeof(ImageHead) == 16);
}  // namespace

std::string image_part_path(const std::string& path) { return path + ".part"; }

Result<UniqueFd> create_image_part(const std::string& path) {
  TRY(fault_point("image-write"));
  std::string tmp = image_part_path(path);
  // A crashed dump's leftover goes; whatever is there (a symlink planted in
  // the directory included) is replaced, never followed or truncated.
  if (::unlink(tmp.c_str()) != 0 && errno != ENOENT) return failf_errno("cannot remove the stale image {}", tmp);
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return failf_errno("cannot create image {}", tmp);
  return fd;
}

Status rename_image_part(const std::string& path) {
  std::string tmp = image_part_path(path);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return failf_errno("cannot rename image {}", tmp);
  return {};
}

Result<ImageWriter> ImageWriter::create(const std::string& path, ImageKind kind) {
  ASSIGN_OR_RETURN(UniqueFd fd, create_image_part(path));
  ImageWriter w(path, std::move(fd));
  ImageHead head{kImageMagic, kind.id, kImageFormatVersion, 0};
  w.buffer_.append(reinterpret_cast<const char*>(&head), sizeof(head));
  return w;
}

ImageWriter::~ImageWriter() {
  if (fd_) ::unlink(image_part_path(path_).c_str());  // never synced
}

Status ImageWriter::write(const google::protobuf::MessageLite& msg) {
  size_t size = msg.ByteSizeLong();
  if (size == 0) return failf("{}: an empty message (every image message has an id)", path_);
  if (size > kMaxMessageSize) return failf("{}: message of {} bytes is too large", path_, size);
  uint32_t len = static_cast<uint32_t>(size);
  buffer_.append(reinterpret_cast<const char*>(&len), sizeof(len));
  if (!msg.AppendToString(&buffer_)) return failf("{}: cannot encode message", path_);
  if (buffer_.size() >= (1u << 20)) {
    TRY(write_all(buffer_.data(), buffer_.size()));
    buffer_.clear();
  }
  return {};
}

Status ImageWriter::reserve(uint64_t bytes) {
  if (bytes == 0) return {};
  // Zeroed blocks from the start of the file; the writes overwrite them and
  // need none of their own.
  if (::fallocate(fd_.get(), 0, 0, static_cast<off_t>(bytes)) != 0)
    return failf_errno("cannot reserve {} bytes for image {}", bytes, path_);
  reserved_ = true;
  return {};
}

Status ImageWriter::write_all(const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd_.get(), p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failf_errno("cannot write image {}", path_);
    p += n;
    size -= static_cast<size_t>(n);
    written_ += static_cast<uint64_t>(n);
  }
  return {};
}

Status ImageWriter::sync() {
  TRY(write_all(buffer_.data(), buffer_.size()));
  buffer_.clear();
  // The room not used goes back: shrinking a file needs no space.
  if (reserved_ && ::ftruncate(fd_.get(), static_cast<off_t>(written_)) != 0)
    return failf_errno("cannot trim image {}", path_);
  if (::fsync(fd_.get()) != 0) return failf_errno("cannot fsync image {}", path_);
  fd_.reset();
  return {};
}

Status ImageWriter::commit() {
  TRY(sync());
  return rename_image_part(path_);
}

Result<RawImageFile> RawImageFile::create(const std::string& path) {
  ASSIGN_OR_RETURN(UniqueFd fd, create_image_part(path));
  return RawImageFile(path, std::move(fd));
}

RawImageFile::~RawImageFile() {
  if (fd_) ::unlink(image_part_path(path_).c_str());
}

Status RawImageFile::sync() {
  if (::fsync(fd_.get()) != 0) return failf_errno("cannot fsync image {}", path_);
  fd_.reset();
  return {};
}

Status RawImageFile::commit() {
  TRY(sync());
  return rename_image_part(path_);
}

Result<ImageReader> ImageReader::open(const std::string& path, ImageKind kind) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return failf_errno("cannot open image {}", path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return failf_errno("cannot stat image {}", path);
  if (!S_ISREG(st.st_mode)) return failf("image {} is not a regular file", path);
  ImageReader r(path, std::move(fd), static_cast<uint64_t>(st.st_size));
  if (r.size_ < sizeof(ImageHead)) return failf("image {} is truncated (no head)", path);
  if (r.size_ > kMaxStreamImageSize)
    return failf("image {} is {} bytes, more than any image minicriu writes; it is not a checkpoint's", path,
                 r.size_);
  ImageHead head;
  TRY(r.read_at(0, &head, sizeof head));
  if (head.magic != kImageMagic) return failf("{} is not a minicriu image (bad magic)", path);
  if (head.kind != kind.id)
    return failf("image {} holds kind {} where {} was expected", path, head.kind, kind.name);
  if (head.version < kOldestImageFormatVersion || head.version > kImageFormatVersion)
    return failf("image {} has format version {}, this minicriu reads {} to {}", path, head.version,
                 kOldestImageFormatVersion, kImageFormatVersion);
  return r;
}

Status ImageReader::read_at(uint64_t offset, void* buf, size_t len) {
  char* p = static_cast<char*>(buf);
  while (len > 0) {
    ssize_t n = ::pread(fd_.get(), p, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failf_errno("cannot read image {}", path_);
    if (n == 0) return failf("image {} is truncated at offset {}", path_, offset);
    p += n;
    offset += static_cast<uint64_t>(n);
    len -= static_cast<size_t>(n);
  }
  return {};
}

Result<bool> ImageReader::next(google::protobuf::MessageLite& msg) {
  if (pos_ == size_) return false;
  if (size_ - pos_ < sizeof(uint32_t)) return failf("image {} is truncated at offset {}", path_, pos_);
  uint32_t len;
  TRY(read_at(pos_, &len, sizeof len));
  // Every message minicriu writes has a nonzero field (an id, a pid): an
  // empty one is a hole or garbage.
  if (len == 0 || len > kMaxMessageSize || len > size_ - pos_ - sizeof(len))
    return failf("image {} is truncated or corrupt at offset {} (message of {} bytes)", path_, pos_, len);
  buf_.resize(len);
  TRY(read_at(pos_ + sizeof(len), buf_.data(), len));
  if (!msg.ParseFromArray(buf_.data(), static_cast<int>(len)))
    return failf("image {} is corrupt at offset {} (message does not decode)", path_, pos_ + sizeof(len));
  pos_ += sizeof(len) + len;
  return true;
}

}  // namespace minicriu
