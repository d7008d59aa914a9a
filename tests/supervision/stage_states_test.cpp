// Cutting and gluing flat stage states by layer, checked value by value.
#include <gtest/gtest.h>

#include <cstring>

#include "supervision/stage_states.h"

namespace asteroid::supervision {
namespace {

// Layers of 2, 3 and 4 parameters; parameter i of the model has value i,
// and momentum buffer value 100 + i.
messages::StageState state(int begin, int end, const std::vector<int64_t>& params) {
  int64_t first = 0, count = 0;
  for (int l = 0; l < begin; ++l) first += params[l];
  for (int l = begin; l < end; ++l) count += params[l];
  std::vector<float> w, m;
  for (int64_t i = 0; i < count; ++i) {
    w.push_back(static_cast<float>(first + i));
    m.push_back(static_cast<float>(100 + first + i));
  }
  messages::StageState s;
  s.round = 7;
  s.layer_begin = static_cast<uint32_t>(begin);
  s.layer_end = static_cast<uint32_t>(end);
  s.optimizer_steps = 8;
  s.weights = messages::TensorBlob::copy_of(messages::DType::float32, {count}, w.data(), w.size() * 4);
  s.optimizer_state = messages::TensorBlob::copy_of(messages::DType::float32, {count}, m.data(), m.size() * 4);
  return s;
}

std::vector<float> floats(const messages::TensorBlob& blob) {
  std::vector<float> out(blob.bytes / 4);
  std::memcpy(out.data(), blob.data, blob.bytes);
  return out;
}

TEST(StateLayout, GluesNeighbouringStagesAndCutsThemAgain) {
  const std::vector<int64_t> params = {2, 3, 4};
  const StateLayout layout(params, 1);
  // Layers 0-1 and 1-3 glued into 0-3: the whole model in order.
  const auto whole = layout.assemble(0, 3, {state(1, 3, params), state(0, 1, params)});
  EXPECT_EQ(floats(whole.weights), (std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(floats(whole.optimizer_state), (std::vector<float>{100, 101, 102, 103, 104, 105, 106, 107, 108}));
  EXPECT_EQ(whole.round, 7u);
  EXPECT_EQ(whole.optimizer_steps, 8u);
  // Layer 1 alone, cut out of the whole.
  const auto middle = layout.assemble(1, 2, {whole});
  EXPECT_EQ(floats(middle.weights), (std::vector<float>{2, 3, 4}));
  EXPECT_EQ(floats(middle.optimizer_state), (std::vector<float>{102, 103, 104}));
}

TEST(StateLayout, AStageOfLayersWithoutParametersGluesWithTheOptimizerStateOfItsNeighbour) {
  // Layer 1 (a ReLU, a pooling) has no parameters, so its stage's optimizer
  // state is empty; layers 1-2 glued must still carry layer 2's momentum
  // (it was dropped when the first source decided, and the stage that
  // loaded the state failed: a TorchScript chain cut after a ReLU).
  const std::vector<int64_t> params = {2, 0, 4};
  const StateLayout layout(params, 1);
  const auto glued = layout.assemble(1, 3, {state(0, 1, params), state(1, 2, params), state(2, 3, params)});
  EXPECT_EQ(floats(glued.weights), (std::vector<float>{2, 3, 4, 5}));
  EXPECT_EQ(floats(glued.optimizer_state), (std::vector<float>{102, 103, 104, 105}));
  const auto only_empty = layout.assemble(1, 2, {state(1, 2, params)});
  EXPECT_EQ(only_empty.weights.bytes, 0u);
  EXPECT_EQ(only_empty.optimizer_state.bytes, 0u);
}

TEST(StateLayout, AdamKeepsItsTwoBuffersApart) {
  const std::vector<int64_t> params = {1, 2};
  const StateLayout layout(params, 2);
  messages::StageState s = state(0, 2, params);
  const std::vector<float> adam = {10, 11, 12, 20, 21, 22};  // exp_avg of 3 params, then exp_avg_sq
  s.optimizer_state = messages::TensorBlob::copy_of(messages::DType::float32, {6}, adam.data(), 24);
  const auto second = layout.assemble(1, 2, {s});
  EXPECT_EQ(floats(second.weights), (std::vector<float>{1, 2}));
  EXPECT_EQ(floats(second.optimizer_state), (std::vector<float>{11, 12, 21, 22}));
}

TEST(StateLayout, AGapOrAMismatchIsNamed) {
  const std::vector<int64_t> params = {2, 3, 4};
  const StateLayout layout(params, 1);
  try {
    layout.assemble(0, 3, {state(0, 1, params), state(2, 3, params)});
    FAIL() << "a gap was filled with nothing";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("layer 1"), std::string::npos) << e.what();
  }
  auto older = state(1, 3, params);
  older.round = 6;
  EXPECT_THROW(layout.assemble(0, 3, {state(0, 1, params), older}), std::invalid_argument);
}

}  // namespace
}  // namespace asteroid::supervision
