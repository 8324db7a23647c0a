#include "data/dataloader.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"
#include "util/rng.h"

namespace intellect {

namespace {

// Keeps the mixture stream apart from other streams drawn from the same seed
// (parameter init uses the seed directly).
constexpr uint64_t kMixSalt = 0x6d69787475726531ull;

uint64_t unsigned_field(const nlohmann::json& j, const char* name, const std::string& where) {
  if (!j.is_object() || !j.contains(name))
    fail("data position ", where, "lacks the field '", name, "' (got ", j.dump(), ")");
  const auto& v = j.at(name);
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
    fail("data position ", where, "field '", name, "' must be a non-negative integer, got ", v.dump());
  return v.get<uint64_t>();
}

}  // namespace

nlohmann::json LoaderPosition::to_json() const {
  nlohmann::json ds = nlohmann::json::array();
  for (const DatasetPosition& d : datasets) ds.push_back({{"name", d.name}, {"windows_read", d.windows_read}});
  return {{"partition", partition}, {"partitions", partitions}, {"seq_len", seq_len},
          {"rows", rows},           {"datasets", ds}};
}

LoaderPosition LoaderPosition::from_json(const nlohmann::json& j) {
  LoaderPosition p;
  p.partition = unsigned_field(j, "partition", "");
  p.partitions = unsigned_field(j, "partitions", "");
  p.seq_len = unsigned_field(j, "seq_len", "");
  p.rows = unsigned_field(j, "rows", "");
  if (!j.contains("datasets") || !j.at("datasets").is_array() || j.at("datasets").empty())
    fail("data position field 'datasets' must be a non-empty list, got ",
         j.contains("datasets") ? j.at("datasets").dump() : std::string("nothing"));
  size_t i = 0;
  for (const auto& d : j.at("datasets")) {
    const std::string where = str("datasets[", i++, "] ");
    if (!d.is_object() || !d.contains("name") || !d.at("name").is_string())
      fail("data position ", where, "needs a string 'name', got ", d.dump());
    p.datasets.push_back({d.at("name").get<std::string>(), unsigned_field(d, "windows_read", where)});
  }
  return p;
}

DataLoader::DataLoader(const LoaderOptions& options) : options_(options) {
  if (options.datasets.empty()) fail("data loader: no datasets given");
  if (options.rows < 1) fail("data loader: rows per batch must be at least 1, got ", options.rows);
  double total = 0.0;
  for (const DatasetSource& d : options.datasets) {
    if (!(d.weight > 0.0) || !std::isfinite(d.weight))
      fail("dataset '", d.name, "' has weight ", d.weight, "; weights must be positive and finite");
    for (const DatasetWindows& seen : datasets_)
      if (seen.name() == d.name) fail("two datasets are named '", d.name, "'; names must be unique");
    datasets_.emplace_back(d.name, d.shards, options.seq_len, options.partition, options.partitions);
    total += d.weight;
  }
  double running = 0.0;
  for (const DatasetSource& d : options.datasets) {
    shares_.push_back(d.weight / total);
    running += d.weight / total;
    cumulative_.push_back(running);
  }
  cumulative_.back() = 1.0;  // u < 1 always, so rounding can never leave u past the last dataset
  mix_seed_ = hash_u64(options.seed ^ kMixSalt, options.partition);
  read_.assign(datasets_.size(), 0);
}

size_t DataLoader::draw(uint64_t row) const {
  if (datasets_.size() == 1) return 0;
  const double u = uniform01(mix_seed_, row);
  for (size_t i = 0; i < cumulative_.size(); ++i)
    if (u < cumulative_[i]) return i;
  return cumulative_.size() - 1;
}

void DataLoader::next(Batch& batch) {
  const size_t R = static_cast<size_t>(options_.rows), T = static_cast<size_t>(options_.seq_len);
  batch.rows = options_.rows;
  batch.seq_len = options_.seq_len;
  batch.inputs.resize(R * T);
  batch.targets.resize(R * T);
  batch.sources.resize(R);
  batch.cu_seqlens.clear();
  batch.max_seqlen = 0;
  const int64_t bos = options_.bos_id;
  const uint64_t vocab = options_.vocab_size > 0 ? static_cast<uint64_t>(options_.vocab_size) : 0;

  // Advance copies and commit at the end, so a failure leaves the position
  // where it was.
  uint64_t rows = rows_;
  std::vector<uint64_t> read = read_;
  for (size_t r = 0; r < R; ++r) {
    const size_t d = draw(rows++);
    size_t shard;
    const uint32_t* src = datasets_[d].window(read[d]++, &shard);
    if (vocab != 0) {
      for (size_t t = 0; t <= T; ++t) {
        if (src[t] >= vocab) {
          const TokenShard& s = datasets_[d].shards()[shard];
          fail("token shard '", s.path(), "' (dataset '", datasets_[d].name(), "') has token id ", src[t],
               " at position ", static_cast<uint64_t>(src + t - s.tokens().data()),
               ", outside the model's vocabulary of ", vocab,
               "; tokenize the data for this model, or set model.vocab_size to match the tokenizer");
        }
      }
    }
    int32_t* in = batch.inputs.data() + r * T;
    int32_t* tg = batch.targets.data() + r * T;
    for (size_t t = 0; t < T; ++t) {
      in[t] = static_cast<int32_t>(src[t]);
      tg[t] = static_cast<int32_t>(src[t + 1]);
      if (t == 0 || (bos >= 0 && src[t] == static_cast<uint64_t>(bos)))
        batch.cu_seqlens.push_back(static_cast<int32_t>(r * T + t));
    }
    batch.sources[r] = static_cast<int32_t>(d);
  }
  batch.cu_seqlens.push_back(static_cast<int32_t>(R * T));
  for (size_t i = 0; i + 1 < batch.cu_seqlens.size(); ++i)
    batch.max_seqlen = std::max(batch.max_seqlen, batch.cu_seqlens[i + 1] - batch.cu_seqlens[i]);
  rows_ = rows;
  read_ = std::move(read);
}

LoaderPosition DataLoader::position() const {
  LoaderPosition p;
  p.partition = options_.partition;
  p.partitions = options_.partitions;
  p.seq_len = static_cast<uint64_t>(options_.seq_len);
  p.rows = rows_;
  for (size_t d = 0; d < datasets_.size(); ++d) p.datasets.push_back({datasets_[d].name(), read_[d]});
  return p;
}

void DataLoader::seek(const LoaderPosition& p) {
  if (p.partition != options_.partition || p.partitions != options_.partitions)
    fail("cannot resume data from a position of partition ", p.partition, " of ", p.partitions,
         ": this loader reads partition ", options_.partition, " of ", options_.partitions,
         " (each node resumes from its own partition's position, with the same data.partitions)");
  if (p.seq_len != static_cast<uint64_t>(options_.seq_len))
    fail("cannot resume data from a position saved with seq_len ", p.seq_len, ": this run uses seq_len ",
         options_.seq_len, ", and windows of another length are other windows");
  std::string names;
  for (const DatasetWindows& d : datasets_) names += (names.empty() ? "" : ", ") + d.name();
  std::vector<uint64_t> read(datasets_.size(), 0);
  std::vector<bool> found(datasets_.size(), false);
  for (const DatasetPosition& dp : p.datasets) {
    size_t i = 0;
    while (i < datasets_.size() && datasets_[i].name() != dp.name) ++i;
    if (i == datasets_.size())
      fail("cannot resume data: the position names dataset '", dp.name,
           "', which this run does not have (its datasets: ", names, ")");
    if (found[i]) fail("cannot resume data: the position names dataset '", dp.name, "' twice");
    found[i] = true;
    read[i] = dp.windows_read;
  }
  for (size_t i = 0; i < datasets_.size(); ++i)
    if (!found[i])
      fail("cannot resume data: this run's dataset '", datasets_[i].name(),
           "' has no read position in the saved position (a dataset added since?)");
  rows_ = p.rows;
  read_ = std::move(read);
}

double unigram_entropy_nats(const std::vector<DatasetSource>& datasets, uint32_t vocab) {
  if (vocab == 0) fail("unigram entropy: vocab must be positive");
  if (datasets.empty()) fail("unigram entropy: no datasets given");
  double total_weight = 0.0;
  for (const DatasetSource& d : datasets) total_weight += d.weight;
  std::vector<double> p(vocab, 0.0);
  std::vector<uint64_t> counts(vocab);
  for (const DatasetSource& d : datasets) {
    std::fill(counts.begin(), counts.end(), 0);
    uint64_t total = 0;
    for (const auto& path : d.shards) {
      if (total >= kUnigramSampleTokens) break;  // an estimate: big datasets are sampled from their start
      TokenShard shard = TokenShard::open(path);
      const auto tokens = shard.tokens().first(
          std::min<size_t>(shard.tokens().size(), kUnigramSampleTokens - total));
      for (size_t i = 0; i < tokens.size(); ++i) {
        if (tokens[i] >= vocab)
          fail("token shard '", path, "' has token id ", tokens[i], " at position ", i,
               ", outside the vocabulary of ", vocab);
        ++counts[tokens[i]];
      }
      total += tokens.size();
    }
    if (total == 0) fail("unigram entropy: the shards of dataset '", d.name, "' hold no tokens");
    const double scale = d.weight / total_weight / static_cast<double>(total);
    for (uint32_t t = 0; t < vocab; ++t) p[t] += static_cast<double>(counts[t]) * scale;
  }
  double h = 0.0;
  for (double q : p)
    if (q > 0.0) h -= q * std::log(q);
  return h;
}

double unigram_entropy_nats(const std::vector<std::string>& shard_paths, uint32_t vocab) {
  return unigram_entropy_nats(std::vector<DatasetSource>{{"shards", shard_paths, 1.0}}, vocab);
}

}  // namespace intellect
