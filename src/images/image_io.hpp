// Image files: a 16-byte head (magic, kind, format version, reserved), then a
// stream of protobuf messages, each behind a little-endian u32 length. Readers
// check the head, every length against what is left of the file, and decode
// with protobuf, so a truncated or foreign file is an error, never a crash.
#pragma once

#include <google/protobuf/message_lite.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace minicriu {

inline constexpr uint32_t kImageMagic = 0x4952434d;  // "MCRI"
inline constexpr uint32_t kImageFormatVersion = 2;
// 1: before page lanes (PagemapEntry.lane), read as lane 0 throughout. An
// older minicriu refuses version 2 images rather than misread their pages.
inline constexpr uint32_t kOldestImageFormatVersion = 1;
inline constexpr uint32_t kMaxMessageSize = 64u << 20;
// No stream image minicriu writes comes near this; a larger one is refused
// before it is read (a hostile image must not make the reader run for ever).
inline constexpr uint64_t kMaxStreamImageSize = 4ull << 30;

// What an image file holds, as its head says. The orchestration's images are
// listed here; a kind with images of its own defines its ImageKind in its file
// with the next free id (taken: 1-7 here, 8 ghosts, 9 pipes, 10 shmem,
// 11 file-locks, 12 fd-owners).
struct ImageKind {
  uint32_t id;
  const char* name;

  static const ImageKind inventory, pstree, core, mm, pagemap, files, fdinfo;
};
inline constexpr ImageKind ImageKind::inventory{1, "inventory"};
inline constexpr ImageKind ImageKind::pstree{2, "pstree"};
inline constexpr ImageKind ImageKind::core{3, "core"};
inline constexpr ImageKind ImageKind::mm{4, "mm"};
inline constexpr ImageKind ImageKind::pagemap{5, "pagemap"};
inline constexpr ImageKind ImageKind::files{6, "files"};
inline constexpr ImageKind ImageKind::fdinfo{7, "fdinfo"};

// Writes one image file, under PATH.part until commit(), which fsyncs and
// renames it: a failed dump leaves no half-written image behind. A dump's
// images are synced by sync() one by one and renamed all together, at the
// end, by ImageSet::publish().
class ImageWriter {
 public:
  ImageWriter(ImageWriter&&) = default;
  ImageWriter& operator=(ImageWriter&&) = default;
  ~ImageWriter();
  [[nodiscard]] static Result<ImageWriter> create(const std::string& path, ImageKind kind);
  // Allocates room for `bytes` in the file now (fallocate), so that writing
  // up to that much later cannot fail for lack of space; commit() gives back
  // what was not used.
  [[nodiscard]] Status reserve(uint64_t bytes);
  [[nodiscard]] Status write(const google::protobuf::MessageLite& msg);
  // Everything written and fsynced; the file stays PATH.part.
  [[nodiscard]] Status sync();
  // sync(), then the file is PATH.
  [[nodiscard]] Status commit();
  const std::string& path() const { return path_; }

 private:
  ImageWriter(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  [[nodiscard]] Status write_all(const void* data, size_t size);

  std::string path_;
  UniqueFd fd_;
  std::string buffer_;
  uint64_t written_ = 0;
  bool reserved_ = false;
};

// A raw file of the image set (pages), written through its fd, made visible
// under its final name by commit() like an ImageWriter.
class RawImageFile {
 public:
  [[nodiscard]] static Result<RawImageFile> create(const std::string& path);
  RawImageFile(RawImageFile&&) = default;
  RawImageFile& operator=(RawImageFile&&) = default;
  ~RawImageFile();
  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  [[nodiscard]] Status sync();
  [[nodiscard]] Status commit();

 private:
  RawImageFile(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  UniqueFd fd_;
};

// PATH.part, where an image is written before it is made visible; created
// new (a stale one is removed first, a symlink there is never followed).
std::string image_part_path(const std::string& path);
[[nodiscard]] Result<UniqueFd> create_image_part(const std::string& path);
// PATH.part becomes PATH.
[[nodiscard]] Status rename_image_part(const std::string& path);

// Reads one image file message by message: the head is checked first, and
// each message's length against kMaxMessageSize and what is left of the file
// before anything is allocated for it, so a huge or truncated image is an
// error, never an allocation of its size.
class ImageReader {
 public:
  [[nodiscard]] static Result<ImageReader> open(const std::string& path, ImageKind kind);
  // Reads the next message into msg; false at a clean end of file.
  [[nodiscard]] Result<bool> next(google::protobuf::MessageLite& msg);
  const std::string& path() const { return path_; }

 private:
  ImageReader(std::string path, UniqueFd fd, uint64_t size)
      : path_(std::move(path)), fd_(std::move(fd)), size_(size) {}
  [[nodiscard]] Status read_at(uint64_t offset, void* buf, size_t len);

  std::string path_;
  UniqueFd fd_;
  uint64_t size_ = 0;
  uint64_t pos_ = 16;
  std::string buf_;
};

// Reads an image that must hold exactly one message.
template <typename M>
Result<M> read_single_image(const std::string& path, ImageKind kind) {
  ASSIGN_OR_RETURN(auto reader, ImageReader::open(path, kind));
  M msg;
  ASSIGN_OR_RETURN(bool got, reader.next(msg));
  if (!got) return failf("{}: image is empty", path);
  M extra;
  ASSIGN_OR_RETURN(bool more, reader.next(extra));
  if (more) return failf("{}: more than one message in a single-message image", path);
  return msg;
}

// Reads every message of a stream image.
template <typename M>
Result<std::vector<M>> read_all_images(const std::string& path, ImageKind kind) {
  ASSIGN_OR_RETURN(auto reader, ImageReader::open(path, kind));
  std::vector<M> out;
  for (;;) {
    M msg;
    ASSIGN_OR_RETURN(bool got, reader.next(msg));
    if (!got) break;
    out.push_back(std::move(msg));
  }
  return out;
}

}  // namespace minicriu
