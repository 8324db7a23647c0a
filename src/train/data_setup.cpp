#include "train/data_setup.h"

#include <filesystem>
#include <set>

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
  // A directory pattern takes every *.bin in it: make_corpus's train_ and
  // val_ shards side by side would otherwise put the held-out set in training.
  std::set<std::string> train;
  for (const DataSource& s : cfg.data.train)
    for (const std::string& p : expand_shard_pattern(s.path)) train.insert(std::filesystem::weakly_canonical(p).string());
  for (const DatasetSource& d : o.datasets)
    for (const std::string& p : d.shards)
      if (train.count(std::filesystem::weakly_canonical(p).string()))
        fail("data.val shard '", p, "' is also a training shard (data.train): validation must be held out; "
             "use patterns such as DIR/train_*.bin and DIR/val_*.bin");
  return o;
}

}  // namespace intellect
