// The settings every node of a run must share: what differs is named, key
// by key; the same settings in another text are the same; a joiner's
// settings that are not a JSON object are said to be so; the trainer's
// resolved settings carry every diloco.* key and the model's shapes.
#include "dist/run_settings.h"

#include <nlohmann/json.hpp>

#include "test_util.h"
#include "train/config.h"

namespace intellect {
namespace {

TEST(RunSettings, DifferencesAreNamedKeyByKey) {
  const std::string run = R"({"diloco":{"outer_lr":1.25,"compression":"blocks2","rings":1},"model":{"dim":48}})";
  EXPECT_EQ(run_settings_difference(run, run), "");
  // Another order and spacing: the same settings.
  EXPECT_EQ(run_settings_difference(run, R"({ "model": {"dim": 48}, "diloco": {"rings": 1, "compression": "blocks2",
                                                 "outer_lr": 1.25} })"),
            "");
  const std::string d = run_settings_difference(run, R"({"diloco":{"outer_lr":1.0,"compression":"blocks2","rings":1},
                                                          "model":{"dim":64}})");
  EXPECT_NE(d.find("diloco.outer_lr is 1.0 here and 1.25 in the run"), std::string::npos) << d;
  EXPECT_NE(d.find("model.dim is 64 here and 48 in the run"), std::string::npos) << d;
  EXPECT_EQ(d.find("compression"), std::string::npos) << d;
  // A key on one side only.
  const std::string missing = run_settings_difference(run, R"({"diloco":{"outer_lr":1.25,"compression":"blocks2"},
                                                                "model":{"dim":48,"ffn_dim":128}})");
  EXPECT_NE(missing.find("diloco.rings is not set here and 1 in the run"), std::string::npos) << missing;
  EXPECT_NE(missing.find("model.ffn_dim is 128 here and not set in the run"), std::string::npos) << missing;
  // Many differences: a few named, the rest counted.
  nlohmann::json a, b;
  for (int i = 0; i < 10; ++i) {
    const std::string key = std::string("k").append(std::to_string(i));  // not "k" + ...: GCC 12's -Wrestrict false positive
    a["diloco"][key] = i;
    b["diloco"][key] = i + 1;
  }
  const std::string many = run_settings_difference(a.dump(), b.dump());
  EXPECT_NE(many.find("and 4 more"), std::string::npos) << many;
  for (const char* bad : {"", "not json", "[1,2]", "{\"diloco\":"})
    EXPECT_NE(run_settings_difference(run, bad).find("not a JSON object"), std::string::npos) << bad;
  // Nested deeper than settings ever are: refused before anything recurses over it.
  std::string deep;
  for (int i = 0; i < 5000; ++i) deep += "{\"a\":";
  deep += "1";
  for (int i = 0; i < 5000; ++i) deep += "}";
  EXPECT_NE(run_settings_difference(run, deep).find("not a JSON object"), std::string::npos);
  std::string arrays = "{\"a\":";
  for (int i = 0; i < 5000; ++i) arrays += "[";
  for (int i = 0; i < 5000; ++i) arrays += "]";
  arrays += "}";
  EXPECT_NE(run_settings_difference(run, arrays).find("not a JSON object"), std::string::npos);
  EXPECT_TRUE(run_settings_valid(run));
  EXPECT_FALSE(run_settings_valid(deep));
  EXPECT_FALSE(run_settings_valid("[]"));
}

TEST(RunSettings, TheTrainersSettingsCarryEveryDilocoKeyAndTheModel) {
  const Config c = load_config("", {"diloco.compression=blocks2", "diloco.all_reduce=direct"});
  const nlohmann::json s = run_settings(c);
  EXPECT_EQ(s["diloco"]["compression"], "blocks2");
  EXPECT_EQ(s["diloco"]["all_reduce"], "direct");
  EXPECT_EQ(s["diloco"]["outer_lr"], 1.25) << "the resolved default, not what the file said";
  EXPECT_EQ(s["model"]["dim"], c.model.dim);
  EXPECT_LE(s.dump().size(), kMaxRunSettingsBytes);
  // Two nodes of one run, one with another outer lr: the difference is that key alone.
  const Config other = load_config("", {"diloco.compression=blocks2", "diloco.all_reduce=direct", "diloco.outer_lr=1"});
  EXPECT_EQ(run_settings_difference(s.dump(), run_settings(other).dump()),
            "diloco.outer_lr is 1.0 here and 1.25 in the run");
  // Settings that are per node (the batch, the data, the device) are not compared.
  const Config per_node = load_config("", {"diloco.compression=blocks2", "diloco.all_reduce=direct",
                                           "train.batch_size=32", "train.micro_batch_size=8", "train.threads=3"});
  EXPECT_EQ(run_settings_difference(s.dump(), run_settings(per_node).dump()), "");
}

}  // namespace
}  // namespace intellect
