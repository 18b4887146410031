// RetainFreedMemory: malloc's thresholds, set once at start by consentd
// and consent-empty-server (--malloc_retain_mib).
#include <malloc.h>

#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "server/server.h"

namespace consent {
namespace {

TEST(RetainFreedMemoryTest, RefusesSizesOutsideZeroTo32) {
  EXPECT_EQ(RetainFreedMemory(-1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RetainFreedMemory(kMaxMallocRetainMib + 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(RetainFreedMemory(0).ok());
}

// With glibc's defaults a block of 8 MiB is mapped on its own (and
// unmapped when freed); with 32 MiB retained it comes from an arena.
TEST(RetainFreedMemoryTest, LargeBlocksComeFromTheArenas) {
  const absl::Status status = RetainFreedMemory(kMaxMallocRetainMib);
  if (absl::IsUnavailable(status)) {
    // Sanitizer builds replace glibc's malloc and ignore its thresholds.
    GTEST_SKIP() << status;
  }
  ASSERT_TRUE(status.ok()) << status;
  const size_t mapped_before = mallinfo2().hblks;
  // Through a volatile pointer, so the compiler keeps the allocation.
  char* volatile block = static_cast<char*>(std::malloc(8 << 20));
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, 8 << 20);
  EXPECT_EQ(mallinfo2().hblks, mapped_before);
  EXPECT_EQ(block[(8 << 20) - 1], 1);
  std::free(block);
}

}  // namespace
}  // namespace consent
