// Checkpoints round-trip, are replaced atomically, and bad files are named.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "supervision/checkpoint.h"
#include "tests/support/temp_dir.h"

namespace asteroid::supervision {
namespace {

// A file in this process's scratch directory, removed when the process ends.
std::string temp_path(const std::string& name) {
  static const test_support::TempDir dir("asteroid-ckpt");
  return dir.file(name);
}

Checkpoint sample() {
  Checkpoint c;
  c.job = {{"round", 11}, {"model", "fmnist-cnn"}};
  for (uint32_t s = 0; s < 3; ++s) {
    messages::StageState state;
    state.round = 11;
    state.layer_begin = 2 * s;
    state.layer_end = 2 * s + 2;
    std::vector<float> w(100 + s, 0.5f * s);
    state.weights = messages::TensorBlob::copy_of(messages::DType::float32, {int64_t(w.size())}, w.data(), w.size() * 4);
    state.optimizer_steps = 12;
    c.states.push_back(state);
  }
  return c;
}

TEST(Checkpoint, RoundTrips) {
  const std::string path = temp_path("round-trip.ckpt");
  write_checkpoint(path, sample());
  const Checkpoint back = read_checkpoint(path);
  EXPECT_EQ(back.job["round"], 11);
  ASSERT_EQ(back.states.size(), 3u);
  EXPECT_EQ(back.states[2].layer_begin, 4u);
  EXPECT_EQ(back.states[2].weights.bytes, 102u * 4);
  float value;
  std::memcpy(&value, back.states[2].weights.data, 4);
  EXPECT_FLOAT_EQ(value, 1.0f);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(Checkpoint, TruncatedOrForeignFilesAreNamed) {
  const std::string path = temp_path("bad.ckpt");
  write_checkpoint(path, sample());
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size - 10);
  try {
    read_checkpoint(path);
    FAIL() << "a truncated checkpoint was read";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  std::ofstream(path) << "{\"not\": \"a checkpoint\"}";
  try {
    read_checkpoint(path);
    FAIL() << "a foreign file was read";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("not an Asteroid checkpoint"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_checkpoint(temp_path("missing.ckpt")), std::runtime_error);
}

TEST(Checkpoint, AFailedWriteLeavesTheOldCheckpointIntact) {
  const std::string path = temp_path("kept.ckpt");
  write_checkpoint(path, sample());
  EXPECT_THROW(write_checkpoint(temp_path("no-such-dir/x.ckpt"), sample()), std::runtime_error);
  EXPECT_EQ(read_checkpoint(path).states.size(), 3u);
}

// Flips one byte in the middle of a file (a bit rot the structure cannot see).
void flip_a_byte(const std::string& path) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(std::filesystem::file_size(path) / 2));
  char c = 0;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(path) / 2));
  f.put(static_cast<char>(c ^ 0x10));
}

TEST(Checkpoint, ABitFlipIsCaughtByTheChecksum) {
  const std::string path = temp_path("flipped.ckpt");
  write_checkpoint(path, sample());
  flip_a_byte(path);
  try {
    read_checkpoint(path);
    FAIL() << "a corrupted checkpoint was read";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path + " is corrupted (checksum mismatch)"), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, TheGenerationBeforeTheNewestIsKeptAndUsedWhenTheNewestIsBad) {
  const std::string path = temp_path("generations.ckpt");
  Checkpoint older = sample();
  older.job["round"] = 5;
  write_checkpoint(path, older);
  EXPECT_FALSE(std::filesystem::exists(previous_checkpoint(path))) << "nothing to keep yet";
  write_checkpoint(path, sample());  // round 11
  ASSERT_TRUE(std::filesystem::exists(previous_checkpoint(path)));
  EXPECT_EQ(read_checkpoint(path).job["round"], 11);
  EXPECT_EQ(read_checkpoint(previous_checkpoint(path)).job["round"], 5);
  flip_a_byte(path);
  EXPECT_EQ(read_checkpoint(path).job["round"], 5) << "the newest is corrupt: the previous one is read";
  std::filesystem::remove(path);
  EXPECT_EQ(read_checkpoint(path).job["round"], 5) << "the newest is missing (a crash between the renames)";
  flip_a_byte(previous_checkpoint(path));
  try {
    read_checkpoint(path);
    FAIL() << "no good generation, yet something was read";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("cannot read checkpoint " + path), std::string::npos) << what;
    EXPECT_NE(what.find(previous_checkpoint(path) + " is corrupted"), std::string::npos) << what;
  }
}

TEST(Checkpoint, AVersionOneFileWithoutChecksumIsStillRead) {
  const std::string path = temp_path("v1.ckpt");
  write_checkpoint(path, sample());
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  bytes[7] = '1';                     // ASTCKPT1
  bytes.resize(bytes.size() - 4);     // no checksum
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  const Checkpoint back = read_checkpoint(path);
  EXPECT_EQ(back.job["round"], 11);
  EXPECT_EQ(back.states.size(), 3u);
}

}  // namespace
}  // namespace asteroid::supervision
