// Deterministic llm.c-style data loader over token shards.
//
// The shards, taken in the given order, form one stream of windows per epoch:
// in a shard of n tokens, window i covers tokens [i*T, i*T + T + 1) for every
// i with i*T + T + 1 <= n (T = seq_len), so consecutive windows advance by T
// and share one token (the last target of one is the first input of the next).
// Windows never straddle shards. After the last window of the last shard the
// stream continues with the first window of the first shard (a new epoch).
//
// With `world` nodes, rank r reads global windows r, r+world, r+2*world, ...,
// so nodes never read the same window, and together they read every window.
// Each next() gives `batch` windows to each rank, so all ranks advance the
// global stream by batch*world windows per step, in lockstep.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/token_shard.h"

namespace intellect {

// Where the next step starts in the global window stream: the shard index and
// the token offset of the step's first window (the one rank 0 reads next).
// It is the same on every rank, so one saved position resumes all of them.
struct DataPosition {
  uint64_t shard = 0;
  uint64_t offset = 0;

  nlohmann::json to_json() const;
  static DataPosition from_json(const nlohmann::json& j);
  bool operator==(const DataPosition&) const = default;
};

class DataLoader {
 public:
  DataLoader(std::vector<std::string> shard_paths, int batch, int seq_len, int rank = 0,
             int world = 1);

  // Fills inputs and targets (resized to batch*seq_len, row-major [batch, seq_len])
  // with this rank's next batch windows; targets are the inputs shifted by one.
  // Token ids are copied as they are: range checks belong to the caller's vocab.
  void next(std::vector<int32_t>& inputs, std::vector<int32_t>& targets);

  // After seek(p), next() returns exactly the batches that followed when
  // position() returned p (with the same shards, batch, seq_len and world).
  DataPosition position() const;
  void seek(DataPosition p);

  uint64_t total_tokens() const { return total_tokens_; }
  uint64_t windows_per_epoch() const { return total_windows_; }
  size_t num_shards() const { return shards_.size(); }

 private:
  // Global window index (within an epoch) -> shard index and token offset.
  void locate(uint64_t window, size_t& shard, uint64_t& offset) const;

  std::vector<TokenShard> shards_;
  std::vector<uint64_t> first_window_;  // first global window of each shard; back() = total
  int batch_, seq_len_, rank_, world_;
  uint64_t total_windows_ = 0;
  uint64_t total_tokens_ = 0;
  uint64_t step_window_ = 0;  // global window where the next step starts, in [0, total)
};

// Entropy (nats) of the unigram token distribution over all the shards: the
// loss of a model that ignores context, which a trained model must beat.
// Fails on a token id >= vocab, naming the shard.
double unigram_entropy_nats(const std::vector<std::string>& shard_paths, uint32_t vocab);

}  // namespace intellect
