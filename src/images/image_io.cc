#include "images/image_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

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

Result<ImageWriter> ImageWriter::create(const std::string& path, ImageKind kind) {
  std::string tmp = path + ".part";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return failf_errno("cannot create image {}", tmp);
  ImageWriter w(path, std::move(fd));
  ImageHead head{kImageMagic, kind.id, kImageFormatVersion, 0};
  w.buffer_.append(reinterpret_cast<const char*>(&head), sizeof(head));
  return w;
}

ImageWriter::~ImageWriter() {
  if (fd_) ::unlink((path_ + ".part").c_str());  // never committed
}

Status ImageWriter::write(const google::protobuf::MessageLite& msg) {
  size_t size = msg.ByteSizeLong();
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

Status ImageWriter::commit() {
  TRY(write_all(buffer_.data(), buffer_.size()));
  buffer_.clear();
  // The room not used goes back: shrinking a file needs no space.
  if (reserved_ && ::ftruncate(fd_.get(), static_cast<off_t>(written_)) != 0)
    return failf_errno("cannot trim image {}", path_);
  if (::fsync(fd_.get()) != 0) return failf_errno("cannot fsync image {}", path_);
  fd_.reset();
  std::string tmp = path_ + ".part";
  if (::rename(tmp.c_str(), path_.c_str()) != 0) return failf_errno("cannot rename image {}", tmp);
  return {};
}

Result<RawImageFile> RawImageFile::create(const std::string& path) {
  std::string tmp = path + ".part";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return failf_errno("cannot create image {}", tmp);
  return RawImageFile(path, std::move(fd));
}

RawImageFile::~RawImageFile() {
  if (fd_) ::unlink((path_ + ".part").c_str());
}

Status RawImageFile::commit() {
  if (::fsync(fd_.get()) != 0) return failf_errno("cannot fsync image {}", path_);
  fd_.reset();
  std::string tmp = path_ + ".part";
  if (::rename(tmp.c_str(), path_.c_str()) != 0) return failf_errno("cannot rename image {}", tmp);
  return {};
}

Result<ImageReader> ImageReader::open(const std::string& path, ImageKind kind) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return failf_errno("cannot open image {}", path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return failf_errno("cannot stat image {}", path);
  if (!S_ISREG(st.st_mode)) return failf("image {} is not a regular file", path);
  std::string data(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < data.size()) {
    ssize_t n = ::read(fd.get(), data.data() + got, data.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failf_errno("cannot read image {}", path);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  data.resize(got);
  if (data.size() < sizeof(ImageHead)) return failf("image {} is truncated (no head)", path);
  ImageHead head;
  std::memcpy(&head, data.data(), sizeof(head));
  if (head.magic != kImageMagic) return failf("{} is not a minicriu image (bad magic)", path);
  if (head.kind != kind.id)
    return failf("image {} holds kind {} where {} was expected", path, head.kind, kind.name);
  if (head.version != kImageFormatVersion)
    return failf("image {} has format version {}, this minicriu reads {}", path, head.version,
                 kImageFormatVersion);
  return ImageReader(path, std::move(data));
}

Result<bool> ImageReader::next(google::protobuf::MessageLite& msg) {
  if (pos_ == data_.size()) return false;
  if (data_.size() - pos_ < sizeof(uint32_t))
    return failf("image {} is truncated at offset {}", path_, pos_);
  uint32_t len;
  std::memcpy(&len, data_.data() + pos_, sizeof(len));
  pos_ += sizeof(len);
  if (len > kMaxMessageSize || len > data_.size() - pos_)
    return failf("image {} is truncated or corrupt at offset {} (message of {} bytes)", path_,
                 pos_ - sizeof(len), len);
  if (!msg.ParseFromArray(data_.data() + pos_, static_cast<int>(len)))
    return failf("image {} is corrupt at offset {} (message does not decode)", path_, pos_);
  pos_ += len;
  return true;
}

}  // namespace minicriu
