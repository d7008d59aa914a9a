// What a stage member keeps between rounds, without actors: the committed
// state, the kept (replica) rounds and the two newest stepped ones.
#include <gtest/gtest.h>

#include <string>

#include "actors/state_store.h"

namespace asteroid::actors {
namespace {

using Store = StateStore<std::string>;

TEST(StateStore, KeepsOnlyTheTwoNewestSteppedStatesUnlessAskedToKeepMore) {
  Store store(-1, "seed");
  for (uint64_t r = 0; r < 10; ++r) store.stepped(r, "after " + std::to_string(r));
  EXPECT_EQ(store.stepped_count(), 2u);
  EXPECT_EQ(store.find(7), nullptr);
  ASSERT_NE(store.find(8), nullptr);
  EXPECT_EQ(*store.find(9), "after 9");
  // A replica round stays however many rounds step after it.
  ASSERT_NE(store.keep(9), nullptr);
  for (uint64_t r = 10; r < 40; ++r) store.stepped(r, "after " + std::to_string(r));
  EXPECT_EQ(store.stepped_count(), 3u);
  ASSERT_NE(store.find(9), nullptr);
  EXPECT_EQ(*store.find(9), "after 9");
  EXPECT_EQ(store.keep(20), nullptr) << "a round no longer held cannot be kept";
}

TEST(StateStore, CommittingARoundDropsEverythingOlder) {
  Store store(-1, "seed");
  store.stepped(0, "after 0");
  store.keep(0);
  store.stepped(1, "after 1");
  store.stepped(2, "after 2");
  EXPECT_TRUE(store.commit(0));
  EXPECT_EQ(store.committed_round(), 0);
  EXPECT_EQ(store.committed(), "after 0");
  EXPECT_TRUE(store.commit(0)) << "committing the committed round again is fine";
  EXPECT_FALSE(store.commit(5)) << "a round never stepped here";
  EXPECT_TRUE(store.commit(2));
  EXPECT_EQ(store.committed(), "after 2");
  EXPECT_EQ(store.stepped_count(), 0u);
  EXPECT_EQ(store.find(1), nullptr);
  EXPECT_EQ(*store.find(2), "after 2");
}

TEST(StateStore, AnAbortForgetsWhatDidNotCommit) {
  Store store(3, "after 3");
  store.stepped(4, "after 4");
  store.keep(4);
  store.stepped(5, "after 5");
  store.forget_uncommitted();
  EXPECT_EQ(store.stepped_count(), 0u);
  EXPECT_EQ(store.find(4), nullptr);
  EXPECT_EQ(store.committed(), "after 3");
  EXPECT_FALSE(store.commit(4));
  store.reset(9, "restored");
  EXPECT_EQ(store.committed_round(), 9);
  EXPECT_EQ(*store.find(9), "restored");
}

}  // namespace
}  // namespace asteroid::actors
