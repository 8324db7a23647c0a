#include "train/data_setup.h"

#include "data/token_shard.h"
#include "util/error.h"

namespace intellect {

namespace {

// The validation mixture's seed: a constant, not data.seed, so that changing
// the training seed does not change what val_loss measures.
constexpr uint64_t kValSeed = 0x76616c;

LoaderOptions common_options(const Config& cfg, const std::vector<DataSource>& sources) {
  LoaderOptions o;
  for (const DataSource& s : sources) o.datasets.push_back({s.name, expand_shard_pattern(s.path), s.weight});
  o.rows = static_cast<int>(cfg.train.micro_batch_size);
  o.seq_len = static_cast<int>(cfg.train.seq_len);
  o.bos_id = cfg.model.bos_id;
  o.vocab_size = cfg.model.vocab_size;
  return o;
}

}  // namespace

LoaderOptions train_loader_options(const Config& cfg) {
  LoaderOptions o = common_options(cfg, cfg.data.train);
  o.seed = cfg.data.seed;
  o.partition = static_cast<uint64_t>(cfg.data.partition);
  o.partitions = static_cast<uint64_t>(cfg.data.partitions);
  return o;
}

LoaderOptions val_loader_options(const Config& cfg) {
  if (cfg.data.val.empty()) fail("no validation data: set data.val");
  LoaderOptions o = common_options(cfg, cfg.data.val);
  o.seed = kValSeed;
  return o;
}

}  // namespace intellect
