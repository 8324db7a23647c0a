#include "data/dataloader.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace intellect {

nlohmann::json DataPosition::to_json() const { return {{"shard", shard}, {"offset", offset}}; }

DataPosition DataPosition::from_json(const nlohmann::json& j) {
  auto field = [&](const char* name) -> uint64_t {
    if (!j.is_object() || !j.contains(name))
      fail("data position ", j.dump(), " lacks the field '", name, "'");
    const auto& v = j.at(name);
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
      fail("data position field '", name, "' must be a non-negative integer, got ", v.dump());
    return v.get<uint64_t>();
  };
  DataPosition p;
  p.shard = field("shard");
  p.offset = field("offset");
  return p;
}

DataLoader::DataLoader(std::vector<std::string> shard_paths, int batch, int seq_len, int rank,
                       int world)
    : batch_(batch), seq_len_(seq_len), rank_(rank), world_(world) {
  if (shard_paths.empty()) fail("data loader: no token shards given");
  if (batch < 1) fail("data loader: batch must be at least 1, got ", batch);
  if (seq_len < 1) fail("data loader: seq_len must be at least 1, got ", seq_len);
  if (world < 1) fail("data loader: world size must be at least 1, got ", world);
  if (rank < 0 || rank >= world)
    fail("data loader: rank ", rank, " is outside the world of ", world, " nodes");

  const uint64_t T = static_cast<uint64_t>(seq_len);
  shards_.reserve(shard_paths.size());
  first_window_.reserve(shard_paths.size() + 1);
  for (const auto& path : shard_paths) {
    TokenShard shard = TokenShard::open(path);
    const uint64_t n = shard.size();
    if (n < T + 1)
      fail("token shard '", path, "' has ", n, " tokens, too few for one training window of seq_len+1 = ",
           T + 1, " tokens; use a smaller seq_len or drop the shard");
    first_window_.push_back(total_windows_);
    total_windows_ += (n - 1) / T;
    total_tokens_ += n;
    shards_.push_back(std::move(shard));
  }
  first_window_.push_back(total_windows_);
}

void DataLoader::locate(uint64_t window, size_t& shard, uint64_t& offset) const {
  // The last shard whose first window is <= window holds it.
  auto it = std::upper_bound(first_window_.begin(), first_window_.end() - 1, window);
  shard = static_cast<size_t>(it - first_window_.begin()) - 1;
  offset = (window - first_window_[shard]) * static_cast<uint64_t>(seq_len_);
}

void DataLoader::next(std::vector<int32_t>& inputs, std::vector<int32_t>& targets) {
  const size_t T = static_cast<size_t>(seq_len_);
  inputs.resize(static_cast<size_t>(batch_) * T);
  targets.resize(static_cast<size_t>(batch_) * T);
  const uint64_t W = total_windows_;
  const uint64_t world = static_cast<uint64_t>(world_);
  for (int b = 0; b < batch_; ++b) {
    // Row b of rank r is global window step + b*world + r; all arithmetic mod W
    // so it stays in range however small the data is next to batch*world.
    const uint64_t window =
        (step_window_ + (static_cast<uint64_t>(b) * world) % W + static_cast<uint64_t>(rank_)) % W;
    size_t shard;
    uint64_t offset;
    locate(window, shard, offset);
    const uint32_t* src = shards_[shard].tokens().data() + offset;
    int32_t* in = inputs.data() + static_cast<size_t>(b) * T;
    int32_t* tg = targets.data() + static_cast<size_t>(b) * T;
    for (size_t t = 0; t < T; ++t) {
      in[t] = static_cast<int32_t>(src[t]);
      tg[t] = static_cast<int32_t>(src[t + 1]);
    }
  }
  step_window_ = (step_window_ + (static_cast<uint64_t>(batch_) * world) % W) % W;
}

DataPosition DataLoader::position() const {
  size_t shard;
  uint64_t offset;
  locate(step_window_, shard, offset);
  return {shard, offset};
}

void DataLoader::seek(DataPosition p) {
  if (p.shard >= shards_.size())
    fail("cannot resume data at shard ", p.shard, ": only ", shards_.size(),
         " shards are given (the data changed since the position was saved?)");
  const uint64_t T = static_cast<uint64_t>(seq_len_);
  const uint64_t windows = first_window_[p.shard + 1] - first_window_[p.shard];
  if (p.offset % T != 0 || p.offset / T >= windows)
    fail("cannot resume data at token offset ", p.offset, " of shard '", shards_[p.shard].path(),
         "': windows of seq_len ", T, " start at multiples of ", T, " below ", windows * T,
         " (seq_len or the data changed since the position was saved?)");
  step_window_ = first_window_[p.shard] + p.offset / T;
}

double unigram_entropy_nats(const std::vector<std::string>& shard_paths, uint32_t vocab) {
  if (vocab == 0) fail("unigram entropy: vocab must be positive");
  std::vector<uint64_t> counts(vocab, 0);
  uint64_t total = 0;
  for (const auto& path : shard_paths) {
    TokenShard shard = TokenShard::open(path);
    const auto tokens = shard.tokens();
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] >= vocab)
        fail("token shard '", path, "' has token id ", tokens[i], " at position ", i,
             ", outside the vocabulary of ", vocab);
      ++counts[tokens[i]];
    }
    total += tokens.size();
  }
  if (total == 0) fail("unigram entropy: the shards hold no tokens");
  double h = 0.0;
  const double inv_total = 1.0 / static_cast<double>(total);
  for (uint64_t c : counts) {
    if (c == 0) continue;
    const double p = static_cast<double>(c) * inv_total;
    h -= p * std::log(p);
  }
  return h;
}

}  // namespace intellect
