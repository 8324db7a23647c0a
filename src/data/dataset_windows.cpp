#include "data/dataset_windows.h"

#include <cstdio>

#include <algorithm>

#include "util/error.h"

namespace intellect {

DatasetWindows::DatasetWindows(std::string name, const std::vector<std::string>& shard_paths,
                               int seq_len, uint64_t partition, uint64_t partitions)
    : name_(std::move(name)),
      seq_len_(static_cast<uint64_t>(seq_len)),
      partition_(partition),
      partitions_(partitions) {
  if (shard_paths.empty()) fail("dataset '", name_, "': no token shards given");
  if (seq_len < 1) fail("dataset '", name_, "': seq_len must be at least 1, got ", seq_len);
  if (partitions < 1) fail("dataset '", name_, "': partitions must be at least 1, got ", partitions);
  if (partition >= partitions)
    fail("dataset '", name_, "': partition ", partition, " is outside the ", partitions,
         " partitions (ids are 0 .. ", partitions - 1, ")");

  const uint64_t T = seq_len_;
  shards_.reserve(shard_paths.size());
  first_window_.reserve(shard_paths.size() + 1);
  for (const auto& path : shard_paths) {
    TokenShard shard = TokenShard::open(path);
    const uint64_t n = shard.size();
    if (n < T + 1) {
      // A short tail shard (prepare_data's last one, say) holds no window:
      // skip it, and say so; a dataset with no usable shard fails below.
      std::fprintf(stderr, "intellect: skipping token shard '%s' of dataset '%s': %llu tokens, fewer than one "
                   "window of seq_len+1 = %llu\n", path.c_str(), name_.c_str(), static_cast<unsigned long long>(n),
                   static_cast<unsigned long long>(T + 1));
      continue;
    }
    first_window_.push_back(total_windows_);
    total_windows_ += (n - 1) / T;
    total_tokens_ += n;
    shards_.push_back(std::move(shard));
  }
  first_window_.push_back(total_windows_);
  if (total_windows_ < partitions_)
    fail("dataset '", name_, "' has ", total_windows_, " windows of seq_len+1 = ", T + 1,
         " tokens, fewer than the ", partitions_,
         " data partitions: every partition needs at least one; use fewer partitions "
         "(data.partitions) or more data");
  own_windows_ = (total_windows_ - partition_ + partitions_ - 1) / partitions_;
}

uint64_t DatasetWindows::global_window(uint64_t k) const {
  return partition_ + (k % own_windows_) * partitions_;
}

const uint32_t* DatasetWindows::window(uint64_t k, size_t* shard_out) const {
  const uint64_t g = global_window(k);
  // The last shard whose first window is <= g holds it.
  auto it = std::upper_bound(first_window_.begin(), first_window_.end() - 1, g);
  const size_t shard = static_cast<size_t>(it - first_window_.begin()) - 1;
  if (shard_out) *shard_out = shard;
  return shards_[shard].tokens().data() + (g - first_window_[shard]) * seq_len_;
}

}  // namespace intellect
