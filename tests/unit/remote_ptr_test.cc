#include "base/remote_ptr.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <type_traits>

using minicriu::RemotePtr;
using minicriu::RemoteRange;

namespace {

struct Frame {
  uint64_t words[5];  // 40 bytes: steps that are not a power of two
};

template <typename P>
concept HasElementArithmetic = requires(P p) { p + 1; };
template <typename P>
concept HasByteOffset = requires(P p) { p.byte_offset(1); };

}  // namespace

TEST(RemotePtr, ArithmeticStepsByTheSizeOfItsType) {
  RemotePtr<uint32_t> p(0x1000);
  EXPECT_EQ((p + 1).addr(), 0x1004u);
  EXPECT_EQ((p + 10).addr(), 0x1028u);
  EXPECT_EQ((p - 2).addr(), 0xff8u);
  RemotePtr<Frame> f(0x2000);
  EXPECT_EQ((f + 3).addr(), 0x2000u + 3 * sizeof(Frame));
  EXPECT_EQ((f + 3) - f, 3);
  EXPECT_EQ(f - (f + 3), -3);
  auto g = f;
  g += 2;
  ++g;
  EXPECT_EQ(g, f + 3);
  RemotePtr<uint8_t> b(0x3000);
  EXPECT_EQ((b + 5).addr(), 0x3005u);
}

TEST(RemotePtr, UntypedMemoryMovesOnlyByNamedByteOffsets) {
  static_assert(!HasElementArithmetic<RemotePtr<>>, "void has no element size");
  static_assert(HasByteOffset<RemotePtr<>>);
  static_assert(HasByteOffset<RemotePtr<uint8_t>>);
  static_assert(!HasByteOffset<RemotePtr<Frame>>, "a typed pointer moves by elements");
  RemotePtr<> v(0x4000);
  EXPECT_EQ(v.byte_offset(24).addr(), 0x4018u);
  EXPECT_EQ(v.byte_offset(-16).addr(), 0x3ff0u);
  EXPECT_EQ(v.byte_offset(24).bytes_from(v), 24);
}

TEST(RemotePtr, CastsKeepTheAddressAndAnyPointerIsAVoidOne) {
  RemotePtr<Frame> f(0x5008);
  RemotePtr<> v = f;  // as T* to void*
  EXPECT_EQ(v.addr(), 0x5008u);
  EXPECT_EQ(v.cast<uint64_t>() + 1, RemotePtr<uint64_t>(0x5010));
  static_assert(!std::is_convertible_v<RemotePtr<>, RemotePtr<Frame>>, "void* does not become T* silently");
  static_assert(!std::is_convertible_v<uint64_t, RemotePtr<>>, "an integer is not an address silently");
  EXPECT_TRUE(RemotePtr<>().null());
  EXPECT_LT(RemotePtr<>(1), RemotePtr<>(2));
}

TEST(RemotePtr, FormatsAsAHexAddress) {
  EXPECT_EQ(fmt::format("{}", RemotePtr<Frame>(0x7f00dead0000)), "0x7f00dead0000");
  RemoteRange r{RemotePtr<>(0x1000), 0x3000};
  EXPECT_EQ(r.end(), RemotePtr<>(0x4000));
}
