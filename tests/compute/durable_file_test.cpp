// Whole-file writes: the new bytes replace the old ones or nothing changes.
#include <gtest/gtest.h>

#include <filesystem>
#include <stdexcept>

#include "compute/durable_file.h"
#include "test_util.h"

namespace asteroid::compute {
namespace {

using testing::read_text;
using testing::TempDir;

TEST(DurableFile, ReplacesTheWholeFileAndLeavesNoTemporary) {
  TempDir dir;
  const std::string path = dir.file("f.json");
  write_file_atomically(path, "a much longer first version\n", "test file");
  write_file_atomically(path, "second\n", "test file");
  EXPECT_EQ(read_text(path), "second\n");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(DurableFile, AFailedWriteNamesThePathAndChangesNothing) {
  TempDir dir;
  const std::string path = dir.file("kept.json");
  write_file_atomically(path, "kept\n", "test file");
  // The temporary cannot be created where the target's name is a directory.
  std::filesystem::create_directory(path + ".tmp");
  try {
    write_file_atomically(path, "lost\n", "test file");
    FAIL() << "the write succeeded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("test file '" + path + ".tmp'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_text(path), "kept\n");
  EXPECT_THROW(write_file_atomically(dir.file("no-such-dir/x"), "x", "test file"), std::runtime_error);
}

TEST(DurableFile, KeepsThePreviousGenerationWhenAsked) {
  TempDir dir;
  const std::string path = dir.file("c.bin"), previous = dir.file("c.bin.prev");
  write_file_atomically(path, "one", "test file", previous);
  EXPECT_FALSE(std::filesystem::exists(previous));  // nothing to keep yet
  write_file_atomically(path, "two", "test file", previous);
  write_file_atomically(path, "three", "test file", previous);
  EXPECT_EQ(read_text(path), "three");
  EXPECT_EQ(read_text(previous), "two");
}

}  // namespace
}  // namespace asteroid::compute
