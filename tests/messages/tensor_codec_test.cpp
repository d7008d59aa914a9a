#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "messages/codec.h"
#include "messages/tensor_codec.h"

namespace asteroid::messages {
namespace {

at::Tensor through_the_wire(const at::Tensor& t) {
  Gradient g;
  g.tensor = to_blob(t);
  auto bytes = encode(g);
  auto decoded = decode_copy(bytes.data(), bytes.size());
  EXPECT_TRUE(decoded.ok()) << decoded.error;
  return to_tensor(std::get<Gradient>(*decoded.message).tensor);
}

TEST(TensorCodec, FloatLongAndHalfTensorsSurviveTheWire) {
  at::manual_seed(3);
  for (const at::Tensor& t : {at::randn({3, 4, 5}), at::randint(0, 1000, {17}, at::kLong),
                              at::randn({2, 8}).to(at::kHalf), at::randn({1})}) {
    at::Tensor back = through_the_wire(t);
    EXPECT_EQ(back.scalar_type(), t.scalar_type());
    EXPECT_EQ(back.sizes(), t.sizes());
    EXPECT_TRUE(at::equal(back, t));
  }
}

TEST(TensorCodec, NonContiguousTensorsAreSentInLogicalOrder) {
  at::Tensor t = at::arange(12, at::kFloat).reshape({3, 4}).t();
  ASSERT_FALSE(t.is_contiguous());
  EXPECT_TRUE(at::equal(through_the_wire(t), t));
}

TEST(TensorCodec, UndefinedTensorIsAnEmptyBlob) {
  EXPECT_TRUE(to_blob(at::Tensor()).empty());
  EXPECT_FALSE(to_tensor(TensorBlob{}).defined());
  EXPECT_FALSE(through_the_wire(at::Tensor()).defined());
}

TEST(TensorCodec, ReceivedTensorOutlivesTheDecodedMessage) {
  at::Tensor kept;
  {
    Gradient g;
    g.tensor = to_blob(at::full({1000}, 2.5f));
    auto bytes = encode(g);
    auto decoded = decode_copy(bytes.data(), bytes.size());
    ASSERT_TRUE(decoded.ok());
    kept = to_tensor(std::get<Gradient>(*decoded.message).tensor);
  }
  EXPECT_FLOAT_EQ(kept.sum().item<float>(), 2500.0f);
}

TEST(TensorCodec, UnsupportedDtypeIsAClearError) {
  try {
    to_blob(at::zeros({2}, at::kDouble));
    FAIL() << "double tensor accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("Double"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace asteroid::messages
