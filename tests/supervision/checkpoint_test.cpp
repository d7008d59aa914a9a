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

}  // namespace
}  // namespace asteroid::supervision
