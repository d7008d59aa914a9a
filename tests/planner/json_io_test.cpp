// Reading and writing cluster/profile/plan files: round trips, and every
// kind of malformed file answered with an InputError naming file and field.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "planner/json_io.h"
#include "tests/support/temp_dir.h"

namespace asteroid::planner {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class JsonIo : public ::testing::Test {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    std::string path = dir_.file(name);
    std::ofstream(path) << text;
    return path;
  }

  // Expects `load` to throw an InputError whose message names the file and
  // contains every one of `parts` (the field, what was expected).
  template <typename F>
  void expect_error(const std::string& path, F load, std::vector<std::string> parts) {
    try {
      load(path);
      ADD_FAILURE() << path << ": no error";
    } catch (const InputError& e) {
      std::string what = e.what();
      EXPECT_EQ(what.rfind(path + ": ", 0), 0u) << what;
      for (const std::string& part : parts) EXPECT_NE(what.find(part), std::string::npos) << "'" << part << "' not in: " << what;
    }
  }

  test_support::TempDir dir_{"planner-json"};
};

const char* kCluster = R"({
  "devices": [
    {"id": "nx0", "host": "127.0.0.1", "port": 7101, "memory_mb": 8192},
    {"id": "nano0", "host": "127.0.0.1", "port": 7102, "memory_mb": 4096,
     "emulate": {"cpu_share": 0.08, "device_class": "nano", "future_field": 1}}
  ],
  "default_bandwidth_mbps": 100,
  "links": [ {"a": "nx0", "b": "nano0", "bandwidth_mbps": 50} ],
  "comment": "unknown fields are ignored"
})";

const char* kProfile = R"({
  "model": "cnn-fmnist",
  "layers": [
    {"name": "conv1", "weight_bytes": 1280, "out_bytes": 100352, "stash_bytes": 100352},
    {"name": "fc", "weight_bytes": 5000, "out_bytes": 40, "stash_bytes": 40}
  ],
  "devices": {
    "nx0": {"batch": [1, 8, 32], "fwd_ms": [[0.1, 0.5, 1.9], [0.1, 0.2, 0.3]], "bwd_ms": [[0.2, 1.0, 3.8], [0.1, 0.2, 0.3]]},
    "nano0": {"batch": [1, 8], "fwd_ms": [[0.5, 2.5], [0.3, 0.6]], "bwd_ms": [[1.0, 5.0], [0.4, 0.9]]}
  }
})";

const char* kPlan = R"({
  "strategy": "hpp", "batch": 64, "microbatches": 4, "microbatch_size": 16,
  "predicted_round_ms": 123.4,
  "stages": [
    {"layers": [0, 1], "devices": [{"id": "nx0", "samples": 16}]},
    {"layers": [1, 2], "devices": [{"id": "nano0", "samples": 16}]}
  ]
})";

TEST_F(JsonIo, ReadsTheDocumentedExamples) {
  Cluster c = load_cluster(write("cluster.json", kCluster));
  ASSERT_EQ(c.devices.size(), 2u);
  EXPECT_EQ(c.devices[1].id, "nano0");
  EXPECT_EQ(c.devices[1].port, 7102);
  ASSERT_TRUE(c.devices[1].emulate.has_value());
  EXPECT_DOUBLE_EQ(*c.devices[1].emulate->cpu_share, 0.08);
  EXPECT_EQ(*c.devices[1].emulate->device_class, "nano");
  EXPECT_DOUBLE_EQ(c.bandwidth_mbps("nano0", "nx0"), 50);
  Profile p = load_profile(write("profile.json", kProfile));
  EXPECT_EQ(p.layers.size(), 2u);
  EXPECT_EQ(p.devices.at("nx0").batch, (std::vector<int>{1, 8, 32}));
  Plan plan = load_plan(write("plan.json", kPlan), c, p);
  EXPECT_EQ(plan.stages.size(), 2u);
  EXPECT_EQ(plan.stages[1].devices[0].id, "nano0");
}

TEST_F(JsonIo, RoundTrips) {
  Cluster c = load_cluster(write("cluster.json", kCluster));
  Profile p = load_profile(write("profile.json", kProfile));
  Plan plan = load_plan(write("plan.json", kPlan));
  plan.idle_devices = {"nano1"};
  std::string cp = dir_.file("c2.json"), pp = dir_.file("p2.json"), lp = dir_.file("l2.json");
  save_cluster(c, cp);
  save_profile(p, pp);
  save_plan(plan, lp, {{"dominant_step", 2}, {"batch", 999}});
  EXPECT_EQ(cluster_to_json(load_cluster(cp)), cluster_to_json(c));
  EXPECT_EQ(profile_to_json(load_profile(pp)), profile_to_json(p));
  EXPECT_EQ(plan_to_json(load_plan(lp)), plan_to_json(plan));
  nlohmann::json saved = read_json_file(lp);
  EXPECT_EQ(saved["dominant_step"], 2);  // extra fields are written...
  EXPECT_EQ(saved["batch"], 64);         // ...but never override the plan's own
}

TEST_F(JsonIo, SavingToAnUnwritablePathNamesIt) {
  Plan plan = load_plan(write("plan.json", kPlan));
  std::string bad = dir_.file("no_such_dir/plan.json");
  try {
    save_plan(plan, bad);
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
}

TEST_F(JsonIo, MalformedClusters) {
  auto load = [](const std::string& p) { return load_cluster(p); };
  expect_error(write("a.json", R"({"default_bandwidth_mbps": 100})"), load, {"devices", "missing field"});
  expect_error(write("b.json", R"({"devices": [{"id": "x", "memory_mb": "lots"}], "default_bandwidth_mbps": 1})"), load,
               {"devices[0].memory_mb", "expected a number", "string"});
  expect_error(write("c.json", R"({"devices": [{"id": "x", "memory_mb": 1}, {"id": "y", "memory_mb": 1}],
                "default_bandwidth_mbps": 10, "links": [{"a": "x", "b": "zz", "bandwidth_mbps": 5}]})"),
               load, {"links[0].b", "unknown device id \"zz\""});
  expect_error(write("d.json", R"({"devices": [{"id": "x", "memory_mb": 1}, {"id": "y", "memory_mb": 1}],
                "default_bandwidth_mbps": 10, "links": [{"a": "x", "b": "y", "bandwidth_mbps": 0}]})"),
               load, {"links[0].bandwidth_mbps", "expected a number > 0"});
  expect_error(write("e.json", R"({"devices": [{"id": "x", "memory_mb": 1}, {"id": "y", "memory_mb": 1}],
                "default_bandwidth_mbps": 0})"),
               load, {"default_bandwidth_mbps", "> 0"});
  expect_error(write("f.json", R"({"devices": [{"id": "x", "memory_mb": 1}, {"id": "x", "memory_mb": 2}],
                "default_bandwidth_mbps": 10})"),
               load, {"devices[1].id", "duplicated device id \"x\""});
  expect_error(write("g.json", R"({"devices": [{"id": "x", "memory_mb": -4}], "default_bandwidth_mbps": 10})"), load,
               {"devices[0].memory_mb", "> 0"});
  expect_error(write("h.json", R"({"devices": [{"id": "x y", "memory_mb": 4}], "default_bandwidth_mbps": 10})"), load,
               {"devices[0].id", "[A-Za-z0-9_.-]+"});
  expect_error(write("i.json", R"({"devices": [{"id": "x", "memory_mb": 1}, {"id": "y", "memory_mb": 1}]})"), load,
               {"default_bandwidth_mbps", "missing field"});
  expect_error(write("j.json", R"({"devices": [{"id": "x", "memory_mb": 1, "port": 70000}], "default_bandwidth_mbps": 10})"),
               load, {"devices[0].port", "0..65535"});
  expect_error(write("k.json", R"({"devices": [})"), load, {"expected JSON"});
  expect_error(dir_.file("missing.json"), load, {"cannot open"});
}

TEST_F(JsonIo, MalformedProfiles) {
  auto load = [](const std::string& p) { return load_profile(p); };
  const std::string layer = R"({"name": "l", "weight_bytes": 1, "out_bytes": 1, "stash_bytes": 1})";
  expect_error(write("a.json", R"({"layers": [{"name": "l", "weight_bytes": 1, "out_bytes": 1}],
                "devices": {"x": {"batch": [1], "fwd_ms": [[1]], "bwd_ms": [[1]]}}})"),
               load, {"layers[0].stash_bytes", "missing field"});
  expect_error(write("b.json", R"({"layers": [)" + layer + R"(],
                "devices": {"x": {"batch": [1, 2], "fwd_ms": [[1, -0.5]], "bwd_ms": [[1, 1]]}}})"),
               load, {"devices.x.fwd_ms[0][1]", "expected a number >= 0", "-0.5"});
  expect_error(write("c.json", R"({"layers": [)" + layer + R"(],
                "devices": {"x": {"batch": [4, 2], "fwd_ms": [[1, 1]], "bwd_ms": [[1, 1]]}}})"),
               load, {"devices.x.batch[1]", "strictly increasing"});
  expect_error(write("d.json", R"({"layers": [)" + layer + "," + layer + R"(],
                "devices": {"x": {"batch": [1], "fwd_ms": [[1]], "bwd_ms": [[1], [1]]}}})"),
               load, {"devices.x.fwd_ms", "2 rows (one per layer), got 1"});
  expect_error(write("e.json", R"({"layers": [)" + layer + R"(],
                "devices": {"x": {"batch": [1, 2], "fwd_ms": [[1]], "bwd_ms": [[1, 1]]}}})"),
               load, {"devices.x.fwd_ms[0]", "expected 2 times"});
  expect_error(write("f.json", R"({"layers": [)" + layer + R"(],
                "devices": {"x": {"batch": "1", "fwd_ms": [[1]], "bwd_ms": [[1]]}}})"),
               load, {"devices.x.batch", "array"});
  expect_error(write("g.json", R"({"layers": [)" + layer + R"(],
                "devices": {"x": {"batch": [0], "fwd_ms": [[1]], "bwd_ms": [[1]]}}})"),
               load, {"devices.x.batch[0]", ">= 1"});
  expect_error(write("h.json", R"({"layers": [], "devices": {}})"), load, {"layers", "non-empty"});
  expect_error(write("i.json", R"({"layers": [{"name": "l", "weight_bytes": -1, "out_bytes": 1, "stash_bytes": 1}],
                "devices": {"x": {"batch": [1], "fwd_ms": [[1]], "bwd_ms": [[1]]}}})"),
               load, {"layers[0].weight_bytes", ">= 0"});
}

TEST_F(JsonIo, ProfileMustCoverTheCluster) {
  Cluster c = load_cluster(write("cluster.json", kCluster));
  Profile p = load_profile(write("profile.json", kProfile));
  p.devices.erase("nano0");
  try {
    check_profile_covers(p, c, "profile.json");
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("profile.json: devices.nano0"), std::string::npos) << e.what();
  }
}

TEST_F(JsonIo, MalformedPlans) {
  Cluster c = load_cluster(write("cluster.json", kCluster));
  Profile p = load_profile(write("profile.json", kProfile));
  auto load = [&](const std::string& path) { return load_plan(path, c, p); };
  auto plan_with = [](const std::string& stages, const std::string& head = R"("batch": 64, "microbatches": 4, "microbatch_size": 16)") {
    return "{" + head + R"(, "stages": )" + stages + "}";
  };
  expect_error(write("a.json", plan_with(R"([{"layers": [0, 1], "devices": [{"id": "nx0", "samples": 16}]},
      {"layers": [1, 2], "devices": [{"id": "ghost", "samples": 16}]}])")),
               load, {"stages[1].devices[0].id", "unknown device id \"ghost\""});
  expect_error(write("b.json", plan_with(R"([{"layers": [0, 2], "devices": [{"id": "nx0", "samples": 10}, {"id": "nano0", "samples": 5}]}])")),
               load, {"stages[0].devices", "adding up to microbatch_size 16, got 15"});
  expect_error(write("c.json", plan_with(R"([{"layers": [0, 2], "devices": [{"id": "nx0", "samples": 16}]}])",
                                         R"("batch": 64, "microbatches": 4, "microbatch_size": 15)")),
               load, {"microbatch_size", "batch / microbatches"});
  expect_error(write("d.json", plan_with(R"([{"devices": [{"id": "nx0", "samples": 16}]}])")), load,
               {"stages[0].layers", "missing field"});
  expect_error(write("e.json", plan_with(R"([{"layers": [0, 1], "devices": [{"id": "nx0", "samples": 16}]},
      {"layers": [2, 2], "devices": [{"id": "nano0", "samples": 16}]}])")),
               load, {"stages[1].layers", "begin at layer 1"});
  expect_error(write("f.json", plan_with(R"([{"layers": [0, 1], "devices": [{"id": "nx0", "samples": 16}]}])")), load,
               {"stages[0].layers", "end at layer 2"});
  expect_error(write("g.json", plan_with(R"([{"layers": [0, 1], "devices": [{"id": "nx0", "samples": 16}]},
      {"layers": [1, 2], "devices": [{"id": "nx0", "samples": 16}]}])")),
               load, {"stages[1].devices[0].id", "appears twice"});
  expect_error(write("h.json", plan_with(R"([{"layers": [0, 2], "devices": [{"id": "nx0", "samples": "16"}]}])")), load,
               {"stages[0].devices[0].samples", "expected an integer"});
  expect_error(write("i.json", plan_with(R"([{"layers": [0, 2], "devices": [{"id": "nx0", "samples": 16}]}])",
                                         R"("batch": 64, "microbatches": 4, "microbatch_size": 16, "predicted_round_ms": -1)")),
               load, {"predicted_round_ms", ">= 0"});
}

// ---- compressed wire: profile codec speeds, plan codecs ----------------------

const char* kProfileWithCodecs = R"({
  "layers": [
    {"name": "conv1", "weight_bytes": 1280, "out_bytes": 100352, "stash_bytes": 100352},
    {"name": "fc", "weight_bytes": 5000, "out_bytes": 40, "stash_bytes": 40}
  ],
  "devices": {
    "nx0": {"batch": [1], "fwd_ms": [[0.1], [0.1]], "bwd_ms": [[0.2], [0.1]],
            "codecs": {"int8": {"encode_mb_s": 812.5, "decode_mb_s": 1400.0},
                       "fp16": {"encode_mb_s": 900, "decode_mb_s": 950, "note": "ignored"}}},
    "nano0": {"batch": [1], "fwd_ms": [[0.5], [0.3]], "bwd_ms": [[1.0], [0.4]]}
  }
})";

TEST_F(JsonIo, ReadsAndRoundTripsCodecSpeedsAndPlanCodecs) {
  Profile p = load_profile(write("profile.json", kProfileWithCodecs));
  const DeviceProfile& nx = p.devices.at("nx0");
  ASSERT_EQ(nx.codecs.size(), 2u);
  EXPECT_DOUBLE_EQ(nx.codecs.at(Codec::int8).encode_mb_s, 812.5);
  EXPECT_DOUBLE_EQ(nx.codecs.at(Codec::int8).decode_mb_s, 1400);
  EXPECT_DOUBLE_EQ(nx.codecs.at(Codec::fp16).decode_mb_s, 950);
  EXPECT_TRUE(p.devices.at("nano0").codecs.empty());
  std::string pp = dir_.file("p2.json");
  save_profile(p, pp);
  EXPECT_EQ(profile_to_json(load_profile(pp)), profile_to_json(p));
  EXPECT_FALSE(read_json_file(pp)["devices"]["nano0"].contains("codecs"));  // absent stays absent

  // A plan without codec fields reads as the exact wire, block 64...
  Plan plan = load_plan(write("plan.json", kPlan));
  EXPECT_EQ(plan.codec_block, 64u);
  for (const Stage& s : plan.stages) {
    EXPECT_EQ(s.to_next, Codec::fp32);
    EXPECT_EQ(s.allreduce, Codec::fp32);
  }
  // ...and is written with them (the runtime reads them), the last stage
  // without a to_next_codec.
  std::string lp = dir_.file("l2.json");
  save_plan(plan, lp);
  nlohmann::json saved = read_json_file(lp);
  EXPECT_EQ(saved["codec_block"], 64);
  EXPECT_EQ(saved["stages"][0]["to_next_codec"], "fp32");
  EXPECT_EQ(saved["stages"][0]["allreduce_codec"], "fp32");
  EXPECT_FALSE(saved["stages"][1].contains("to_next_codec"));
  EXPECT_EQ(saved["stages"][1]["allreduce_codec"], "fp32");

  plan.codec_block = 32;
  plan.stages[0].to_next = Codec::int4;
  plan.stages[0].allreduce = Codec::bf16;
  plan.stages[1].allreduce = Codec::int8;
  save_plan(plan, lp);
  Plan back = load_plan(lp);
  EXPECT_EQ(plan_to_json(back), plan_to_json(plan));
  EXPECT_EQ(back.codec_block, 32u);
  EXPECT_EQ(back.stages[0].to_next, Codec::int4);
  EXPECT_EQ(back.stages[0].allreduce, Codec::bf16);
  EXPECT_EQ(back.stages[1].allreduce, Codec::int8);
  EXPECT_EQ(read_json_file(lp)["stages"][0]["to_next_codec"], "int4");
}

TEST_F(JsonIo, ReadsAndRoundTripsUpdateTimes) {
  const std::string pp = write("p.json", R"({"layers": [{"name": "a", "weight_bytes": 4, "out_bytes": 1, "stash_bytes": 1},
                                                       {"name": "b", "weight_bytes": 8, "out_bytes": 1, "stash_bytes": 1}],
      "devices": {"x": {"batch": [1], "fwd_ms": [[1], [1]], "bwd_ms": [[1], [1]],
                        "update_ms": {"momentum": [0.25, 0.5], "adam": [1, 2]}},
                  "y": {"batch": [1], "fwd_ms": [[1], [1]], "bwd_ms": [[1], [1]]}}})");
  const Profile p = load_profile(pp);
  const DeviceProfile& x = p.devices.at("x");
  ASSERT_EQ(x.update_ms.size(), 2u);
  EXPECT_EQ(x.update_ms.at(OptimizerKind::momentum), (std::vector<double>{0.25, 0.5}));
  EXPECT_EQ(x.update_ms.at(OptimizerKind::adam), (std::vector<double>{1, 2}));
  EXPECT_TRUE(p.devices.at("y").update_ms.empty());
  const std::string again = dir_.file("again.json");
  save_profile(p, again);
  EXPECT_EQ(load_profile(again).devices.at("x").update_ms, x.update_ms);
  EXPECT_FALSE(read_json_file(again)["devices"]["y"].contains("update_ms"));  // absent stays absent

  auto load_p = [](const std::string& path) { return load_profile(path); };
  auto profile_with = [](const std::string& updates) {
    return R"({"layers": [{"name": "l", "weight_bytes": 1, "out_bytes": 1, "stash_bytes": 1}],
      "devices": {"x": {"batch": [1], "fwd_ms": [[1]], "bwd_ms": [[1]], "update_ms": )" + updates + "}}}";
  };
  expect_error(write("a.json", profile_with(R"({"lamb": [1]})")), load_p,
               {"devices.x.update_ms.lamb", "optimizer name", "sgd, momentum or adam"});
  expect_error(write("b.json", profile_with(R"({"sgd": [1, 2]})")), load_p,
               {"devices.x.update_ms.sgd", "expected 1 times (one per layer), got 2"});
  expect_error(write("c.json", profile_with(R"({"sgd": [-1]})")), load_p, {"devices.x.update_ms.sgd[0]", ">= 0"});
  expect_error(write("d.json", profile_with(R"([1])")), load_p, {"devices.x.update_ms", "object"});
}

TEST_F(JsonIo, MalformedCodecFields) {
  auto load_p = [](const std::string& p) { return load_profile(p); };
  auto profile_with = [](const std::string& codecs) {
    return R"({"layers": [{"name": "l", "weight_bytes": 1, "out_bytes": 1, "stash_bytes": 1}],
      "devices": {"x": {"batch": [1], "fwd_ms": [[1]], "bwd_ms": [[1]], "codecs": )" + codecs + "}}}";
  };
  expect_error(write("a.json", profile_with(R"({"int2": {"encode_mb_s": 1, "decode_mb_s": 1}})")), load_p,
               {"devices.x.codecs.int2", "codec name", "\"int2\""});
  expect_error(write("b.json", profile_with(R"({"int8": {"encode_mb_s": 0, "decode_mb_s": 1}})")), load_p,
               {"devices.x.codecs.int8.encode_mb_s", "> 0"});
  expect_error(write("c.json", profile_with(R"({"int8": {"encode_mb_s": 10, "decode_mb_s": -3}})")), load_p,
               {"devices.x.codecs.int8.decode_mb_s", "> 0"});
  expect_error(write("d.json", profile_with(R"({"int8": {"encode_mb_s": 10}})")), load_p,
               {"devices.x.codecs.int8.decode_mb_s", "missing field"});
  expect_error(write("e.json", profile_with(R"(["int8"])")), load_p, {"devices.x.codecs", "object"});
  expect_error(write("f.json", profile_with(R"({"fp16": 800})")), load_p, {"devices.x.codecs.fp16", "object"});

  auto load = [](const std::string& p) { return load_plan(p); };
  auto plan_with = [](const std::string& first, const std::string& second, const std::string& head = "") {
    return R"({"batch": 4, "microbatches": 1, "microbatch_size": 4)" + head +
           R"(, "stages": [{"layers": [0, 1], "devices": [{"id": "a", "samples": 4}])" + first +
           R"(}, {"layers": [1, 2], "devices": [{"id": "b", "samples": 4}])" + second + "}]}";
  };
  expect_error(write("g.json", plan_with(R"(, "to_next_codec": "int3")", "")), load,
               {"stages[0].to_next_codec", "codec name", "\"int3\""});
  expect_error(write("h.json", plan_with("", R"(, "to_next_codec": "int8")")), load,
               {"stages[1].to_next_codec", "last stage", "\"int8\""});
  expect_error(write("i.json", plan_with(R"(, "allreduce_codec": 8)", "")), load,
               {"stages[0].allreduce_codec", "expected a string"});
  expect_error(write("j.json", plan_with("", "", R"(, "codec_block": 0)")), load, {"codec_block", "[1, "});
  expect_error(write("k.json", plan_with("", "", R"(, "codec_block": "64")")), load,
               {"codec_block", "expected an integer"});
  expect_error(write("l.json", plan_with("", "", R"(, "codec_block": 2.5)")), load,
               {"codec_block", "expected an integer"});
  // fp32 on the last stage is fine (it is what the field means there).
  Plan ok = load_plan(write("m.json", plan_with(R"(, "to_next_codec": "fp16", "allreduce_codec": "int4")",
                                                R"(, "to_next_codec": "fp32")", R"(, "codec_block": 128)")));
  EXPECT_EQ(ok.stages[0].to_next, Codec::fp16);
  EXPECT_EQ(ok.stages[0].allreduce, Codec::int4);
  EXPECT_EQ(ok.codec_block, 128u);
}

}  // namespace
}  // namespace asteroid::planner
