// The data loader: windows and packing with document boundaries, the dataset
// mixture, partitions for nodes (and late joiners), exact resume, the
// prefetching thread, the config's data block, and the trainer's saved
// position.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataloader.h"
#include "data/prefetch.h"
#include "data/synthetic_corpus.h"
#include "data/token_shard.h"
#include "train/config.h"
#include "train/data_setup.h"
#include "train/trainer.h"
#include "util/error.h"

namespace fs = std::filesystem;
using namespace intellect;

namespace {

std::string fresh_dir(const std::string& name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path dir = fs::path(::testing::TempDir()) / "intellect_loader" /
                       (std::string(info->test_suite_name()) + "." + info->name()) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

template <class F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "expected an intellect::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

std::vector<uint32_t> iota_tokens(uint32_t first, uint32_t n) {
  std::vector<uint32_t> v(n);
  for (uint32_t i = 0; i < n; ++i) v[i] = first + i;
  return v;
}

std::string shard(const std::string& dir, const std::string& name, const std::vector<uint32_t>& tokens) {
  const std::string path = dir + "/" + name;
  write_token_shard(path, tokens);
  return path;
}

LoaderOptions options(std::vector<DatasetSource> datasets, int rows, int seq_len) {
  LoaderOptions o;
  o.datasets = std::move(datasets);
  o.rows = rows;
  o.seq_len = seq_len;
  return o;
}

Batch next_batch(DataLoader& dl) {
  Batch b;
  dl.next(b);
  return b;
}

Batch next_batch(PrefetchLoader& dl) {
  Batch b;
  dl.next(b);
  return b;
}

bool same_batch(const Batch& a, const Batch& b) {
  return a.rows == b.rows && a.seq_len == b.seq_len && a.inputs == b.inputs && a.targets == b.targets &&
         a.cu_seqlens == b.cu_seqlens && a.max_seqlen == b.max_seqlen && a.sources == b.sources;
}

// Three datasets whose tokens tell them apart: dataset d's tokens are
// 100000*(d+1) + their index, so a window is known by its first token.
std::vector<DatasetSource> three_datasets(const std::string& dir, std::vector<double> weights) {
  std::vector<DatasetSource> out;
  const char* names[] = {"alpha", "beta", "gamma"};
  const uint32_t sizes[][2] = {{41, 23}, {57, 0}, {33, 29}};  // shard lengths (0: none)
  for (int d = 0; d < 3; ++d) {
    DatasetSource s{names[d], {}, weights[static_cast<size_t>(d)]};
    uint32_t base = 100000u * static_cast<uint32_t>(d + 1);
    for (int k = 0; k < 2; ++k) {
      if (sizes[d][k] == 0) continue;
      s.shards.push_back(shard(dir, std::string(names[d]) + std::to_string(k) + ".bin", iota_tokens(base, sizes[d][k])));
      base += 10000;
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

// --- windows and packing ------------------------------------------------------

TEST(LoaderWindows, ExactWindowsAndWrapAround) {
  // One shard 100..120 (21 tokens), T = 4: windows start at 0, 4, 8, 12, 16.
  const std::string path = shard(fresh_dir("l"), "a.bin", iota_tokens(100, 21));
  DataLoader dl(options({{"a", {path}, 1.0}}, 2, 4));
  EXPECT_EQ(dl.datasets()[0].windows_per_epoch(), 5u);
  EXPECT_EQ(dl.datasets()[0].total_tokens(), 21u);
  Batch b = next_batch(dl);
  EXPECT_EQ(b.inputs, (std::vector<int32_t>{100, 101, 102, 103, 104, 105, 106, 107}));
  EXPECT_EQ(b.targets, (std::vector<int32_t>{101, 102, 103, 104, 105, 106, 107, 108}));
  b = next_batch(dl);
  EXPECT_EQ(b.inputs, (std::vector<int32_t>{108, 109, 110, 111, 112, 113, 114, 115}));
  // The last window uses the shard's last token as its last target, then wraps.
  b = next_batch(dl);
  EXPECT_EQ(b.inputs, (std::vector<int32_t>{116, 117, 118, 119, 100, 101, 102, 103}));
  EXPECT_EQ(b.targets, (std::vector<int32_t>{117, 118, 119, 120, 101, 102, 103, 104}));
  EXPECT_EQ(b.sources, (std::vector<int32_t>{0, 0}));
}

TEST(LoaderWindows, WindowsNeverStraddleShards) {
  const std::string dir = fresh_dir("l");
  // T=3: a has windows at 0, 3, 6 (token 10 is never a target); b at 0, 3.
  DataLoader dl(options({{"x", {shard(dir, "a.bin", iota_tokens(0, 11)), shard(dir, "b.bin", iota_tokens(1000, 7))}, 1.0}},
                        1, 3));
  EXPECT_EQ(dl.datasets()[0].windows_per_epoch(), 5u);
  const std::vector<std::vector<int32_t>> inputs = {
      {0, 1, 2}, {3, 4, 5}, {6, 7, 8}, {1000, 1001, 1002}, {1003, 1004, 1005}, {0, 1, 2}};
  const std::vector<int32_t> last_target = {3, 6, 9, 1003, 1006, 3};
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Batch b = next_batch(dl);
    EXPECT_EQ(b.inputs, inputs[i]) << "window " << i;
    EXPECT_EQ(b.targets.back(), last_target[i]) << "window " << i;
  }
}

TEST(LoaderWindows, ShortShardsAndBadArguments) {
  const std::string dir = fresh_dir("l");
  const std::string ok = shard(dir, "ok.bin", iota_tokens(0, 100)), short_ = shard(dir, "short.bin", iota_tokens(0, 16));
  // A shard shorter than one window is skipped (prepare_data's short tail);
  // a dataset left with no window at all is refused.
  DataLoader skips(options({{"web", {ok, short_}, 1.0}}, 1, 16));
  EXPECT_EQ(skips.datasets()[0].windows_per_epoch(), 6u);  // (100 - 1) / 16 from ok.bin alone
  expect_error([&] { DataLoader(options({{"web", {short_}, 1.0}}, 1, 16)); }, {"dataset 'web'", "0 windows"});
  DataLoader fits(options({{"web", {short_}, 1.0}}, 1, 15));  // exactly one window
  EXPECT_EQ(fits.datasets()[0].windows_per_epoch(), 1u);
  expect_error([&] { DataLoader(options({}, 1, 4)); }, {"no datasets"});
  expect_error([&] { DataLoader(options({{"web", {}, 1.0}}, 1, 4)); }, {"'web'", "no token shards"});
  expect_error([&] { DataLoader(options({{"web", {ok}, 1.0}}, 0, 4)); }, {"rows"});
  expect_error([&] { DataLoader(options({{"web", {ok}, 1.0}}, 1, 0)); }, {"seq_len"});
  expect_error([&] { DataLoader(options({{"web", {ok}, -1.0}}, 1, 4)); }, {"'web'", "weight -1", "positive"});
  expect_error([&] { DataLoader(options({{"web", {ok}, 1.0}, {"web", {ok}, 1.0}}, 1, 4)); }, {"'web'", "unique"});
  LoaderOptions o = options({{"web", {ok}, 1.0}}, 1, 4);
  o.partition = 2;
  o.partitions = 2;
  expect_error([&] { DataLoader{o}; }, {"partition 2", "2 partitions"});
  o.partition = 0;
  o.partitions = 100;  // 24 windows of T=4 in 100 tokens: too few for 100 partitions
  expect_error([&] { DataLoader{o}; }, {"'web'", "24 windows", "100", "data.partitions"});
}

TEST(LoaderPacking, DocumentBoundariesAreCuSeqlens) {
  // Documents BOS(1) ... EOS(2): [1 10 11 2] [1 20 2] [1 30 31 32 2] [1
  const std::string path = shard(fresh_dir("l"), "a.bin", {1, 10, 11, 2, 1, 20, 2, 1, 30, 31, 32, 2, 1});
  LoaderOptions o = options({{"docs", {path}, 1.0}}, 3, 4);
  o.bos_id = 1;
  DataLoader dl(o);
  const Batch b = next_batch(dl);
  // Rows: [1 10 11 2] [1 20 2 1] [30 31 32 2]. Segments start at every row
  // start (flat 0, 4, 8) and at every BOS (flat 0, 4, 7).
  EXPECT_EQ(b.inputs, (std::vector<int32_t>{1, 10, 11, 2, 1, 20, 2, 1, 30, 31, 32, 2}));
  EXPECT_EQ(b.cu_seqlens, (std::vector<int32_t>{0, 4, 7, 8, 12}));
  EXPECT_EQ(b.max_seqlen, 4);
  // Without a BOS id every row is one segment.
  o.bos_id = -1;
  DataLoader plain(o);
  const Batch p = next_batch(plain);
  EXPECT_EQ(p.cu_seqlens, (std::vector<int32_t>{0, 4, 8, 12}));
  EXPECT_EQ(p.max_seqlen, 4);
}

TEST(LoaderPacking, BoundariesOfTheGeneratedCorpus) {
  // make_corpus documents (BOS 256 ... EOS 257): every segment is a row start
  // or begins with BOS, every BOS begins a segment, and a segment never
  // holds an EOS before its last token.
  const std::string dir = fresh_dir("corpus");
  CorpusOptions c;
  c.out_dir = dir;
  c.docs = 60;
  c.val_docs = 0;
  const CorpusSummary s = write_corpus(c);
  LoaderOptions o = options({{"corpus", s.train_shards, 1.0}}, 4, 96);
  o.bos_id = 256;
  DataLoader dl(o);
  size_t segments = 0;
  for (int i = 0; i < 20; ++i) {
    const Batch b = next_batch(dl);
    ASSERT_EQ(b.cu_seqlens.front(), 0);
    ASSERT_EQ(b.cu_seqlens.back(), 4 * 96);
    std::set<int32_t> starts(b.cu_seqlens.begin(), b.cu_seqlens.end() - 1);
    int32_t longest = 0;
    for (size_t k = 0; k + 1 < b.cu_seqlens.size(); ++k) {
      ASSERT_LT(b.cu_seqlens[k], b.cu_seqlens[k + 1]);
      longest = std::max(longest, b.cu_seqlens[k + 1] - b.cu_seqlens[k]);
      for (int32_t t = b.cu_seqlens[k]; t + 1 < b.cu_seqlens[k + 1]; ++t)
        EXPECT_NE(b.inputs[static_cast<size_t>(t)], 257) << "EOS inside a segment at flat " << t;
    }
    EXPECT_EQ(b.max_seqlen, longest);
    for (int32_t t = 0; t < 4 * 96; ++t)
      EXPECT_EQ(starts.count(t) == 1, t % 96 == 0 || b.inputs[static_cast<size_t>(t)] == 256) << "flat " << t;
    segments += b.cu_seqlens.size() - 1;
  }
  EXPECT_GT(segments, 80u) << "some rows should hold a document boundary";
}

// --- mixture -------------------------------------------------------------------

TEST(LoaderMixture, ProportionsFollowTheWeights) {
  // Relative weights 5:3:2, 20000 rows. Each dataset's count is binomial;
  // allow 4 standard deviations. Each dataset also reads its own windows in
  // order, whatever the others do.
  const auto ds = three_datasets(fresh_dir("m"), {5, 3, 2});
  LoaderOptions o = options(ds, 100, 2);
  o.seed = 7;
  DataLoader dl(o);
  EXPECT_NEAR(dl.shares()[0], 0.5, 1e-12);
  EXPECT_NEAR(dl.shares()[1], 0.3, 1e-12);
  EXPECT_NEAR(dl.shares()[2], 0.2, 1e-12);
  std::vector<uint64_t> count(3, 0);
  for (int i = 0; i < 200; ++i) {
    const Batch b = next_batch(dl);
    for (int r = 0; r < 100; ++r) {
      const size_t d = static_cast<size_t>(b.sources[static_cast<size_t>(r)]);
      const int32_t first = b.inputs[static_cast<size_t>(2 * r)];
      ASSERT_EQ(static_cast<size_t>(first / 100000 - 1), d) << "row from another dataset than its source";
      // The k-th window of this dataset (global window = k mod W, 1 partition).
      const DatasetWindows& w = dl.datasets()[d];
      EXPECT_EQ(first, static_cast<int32_t>(w.window(count[d])[0]));
      ++count[d];
    }
  }
  const double n = 20000;
  const double p[] = {0.5, 0.3, 0.2};
  double chi2 = 0;
  for (int d = 0; d < 3; ++d) {
    const double sigma = std::sqrt(n * p[d] * (1 - p[d]));
    EXPECT_NEAR(static_cast<double>(count[static_cast<size_t>(d)]), n * p[d], 4 * sigma) << "dataset " << d;
    chi2 += std::pow(static_cast<double>(count[static_cast<size_t>(d)]) - n * p[d], 2) / (n * p[d]);
  }
  EXPECT_LT(chi2, 18.4);  // chi-square, 2 degrees of freedom: p = 1e-4
  const LoaderPosition pos = dl.position();
  EXPECT_EQ(pos.rows, 20000u);
  for (int d = 0; d < 3; ++d) EXPECT_EQ(pos.datasets[static_cast<size_t>(d)].windows_read, count[static_cast<size_t>(d)]);
}

TEST(LoaderMixture, OrderIsAFunctionOfTheSeed) {
  const auto ds = three_datasets(fresh_dir("m"), {0.55, 0.25, 0.2});
  LoaderOptions o = options(ds, 4, 3);
  o.seed = 11;
  DataLoader a(o), b(o);
  LoaderOptions other = o;
  other.seed = 12;
  DataLoader c(other);
  // The row stream does not depend on how it is cut into batches.
  LoaderOptions halves = o;
  halves.rows = 2;
  DataLoader h(halves);
  bool differs = false;
  for (int i = 0; i < 50; ++i) {
    const Batch x = next_batch(a), y = next_batch(b), z = next_batch(c);
    ASSERT_TRUE(same_batch(x, y)) << "batch " << i;
    differs |= x.sources != z.sources;
    Batch h1 = next_batch(h), h2 = next_batch(h);
    h1.inputs.insert(h1.inputs.end(), h2.inputs.begin(), h2.inputs.end());
    h1.sources.insert(h1.sources.end(), h2.sources.begin(), h2.sources.end());
    ASSERT_EQ(h1.inputs, x.inputs) << "batch " << i;
    ASSERT_EQ(h1.sources, x.sources) << "batch " << i;
  }
  EXPECT_TRUE(differs) << "another seed should draw another order";
}

// --- partitions ------------------------------------------------------------------

TEST(LoaderPartition, DisjointAndCoverEveryWindow) {
  const auto ds = three_datasets(fresh_dir("p"), {1, 1, 1});
  const uint64_t P = 3;
  // Per dataset: first token of every window, over all partitions.
  std::vector<std::map<int32_t, uint64_t>> owner(3);
  std::vector<uint64_t> total(3, 0);
  for (uint64_t part = 0; part < P; ++part) {
    LoaderOptions o = options(ds, 5, 4);
    o.partition = part;
    o.partitions = P;
    DataLoader dl(o);
    std::vector<uint64_t> read(3, 0);
    // Read until every dataset has given one epoch of this partition.
    auto done = [&] {
      for (size_t d = 0; d < 3; ++d)
        if (read[d] < dl.datasets()[d].windows_per_epoch()) return false;
      return true;
    };
    while (!done()) {
      const Batch b = next_batch(dl);
      for (int r = 0; r < 5; ++r) {
        const size_t d = static_cast<size_t>(b.sources[static_cast<size_t>(r)]);
        if (read[d]++ >= dl.datasets()[d].windows_per_epoch()) continue;  // its next epoch
        const int32_t first = b.inputs[static_cast<size_t>(4 * r)];
        const auto [it, fresh] = owner[d].emplace(first, part);
        EXPECT_TRUE(fresh) << "dataset " << d << " window at token " << first << " read by partitions "
                           << it->second << " and " << part;
      }
    }
    for (size_t d = 0; d < 3; ++d) total[d] = dl.datasets()[d].total_windows();
  }
  for (size_t d = 0; d < 3; ++d) EXPECT_EQ(owner[d].size(), total[d]) << "dataset " << d << ": every window once";
}

TEST(LoaderPartition, LateJoinerStartsOnUntouchedData) {
  // Four partitions, two nodes at first. However long nodes 0 and 1 train
  // (several epochs here), partition 2 stays untouched for a joiner.
  const auto ds = three_datasets(fresh_dir("p"), {0.6, 0.3, 0.1});
  std::set<std::pair<int32_t, int32_t>> consumed;  // (dataset, first token)
  for (uint64_t part : {0u, 1u}) {
    LoaderOptions o = options(ds, 8, 4);
    o.partition = part;
    o.partitions = 4;
    DataLoader dl(o);
    for (int i = 0; i < 40; ++i) {
      const Batch b = next_batch(dl);
      for (int r = 0; r < 8; ++r)
        consumed.emplace(b.sources[static_cast<size_t>(r)], b.inputs[static_cast<size_t>(4 * r)]);
    }
  }
  LoaderOptions j = options(ds, 8, 4);
  j.partition = 2;
  j.partitions = 4;
  DataLoader joiner(j);
  for (int i = 0; i < 10; ++i) {
    const Batch b = next_batch(joiner);
    for (int r = 0; r < 8; ++r)
      EXPECT_FALSE(consumed.count({b.sources[static_cast<size_t>(r)], b.inputs[static_cast<size_t>(4 * r)]}))
          << "the joiner's window at token " << b.inputs[static_cast<size_t>(4 * r)] << " was already read";
  }
}

// --- resume ------------------------------------------------------------------------

TEST(LoaderResume, SeekResumesExactlyThroughJson) {
  const auto ds = three_datasets(fresh_dir("r"), {0.5, 0.3, 0.2});
  for (uint64_t partitions : {1u, 2u}) {
    for (uint64_t part = 0; part < partitions; ++part) {
      LoaderOptions o = options(ds, 3, 4);
      o.bos_id = 100005;  // some boundaries, so cu_seqlens vary
      o.seed = 3;
      o.partition = part;
      o.partitions = partitions;
      DataLoader ref(o);
      std::vector<LoaderPosition> positions;
      std::vector<Batch> batches;
      for (int step = 0; step < 60; ++step) {  // several epochs of every dataset
        positions.push_back(ref.position());
        batches.push_back(next_batch(ref));
      }
      for (int step = 0; step < 60; step += 7) {
        const LoaderPosition p = LoaderPosition::from_json(nlohmann::json::parse(positions[step].to_json().dump()));
        ASSERT_EQ(p, positions[step]);
        DataLoader resumed(o);
        resumed.seek(p);
        PrefetchLoader prefetched(o, 2);
        prefetched.seek(p);
        for (int k = step; k < std::min(step + 10, 60); ++k) {
          ASSERT_TRUE(same_batch(next_batch(resumed), batches[k])) << "partition " << part << " from step " << step;
          ASSERT_TRUE(same_batch(next_batch(prefetched), batches[k])) << "prefetched, from step " << step;
        }
      }
    }
  }
}

TEST(LoaderResume, ForeignPositionsAreRefused) {
  const auto ds = three_datasets(fresh_dir("r"), {1, 1, 1});
  LoaderOptions o = options(ds, 2, 4);
  o.partitions = 2;
  DataLoader dl(o);
  next_batch(dl);
  const LoaderPosition good = dl.position();
  LoaderPosition p = good;
  p.partition = 1;
  expect_error([&] { dl.seek(p); }, {"partition 1 of 2", "reads partition 0 of 2"});
  p = good;
  p.seq_len = 8;
  expect_error([&] { dl.seek(p); }, {"seq_len 8", "seq_len 4"});
  p = good;
  p.datasets[1].name = "delta";
  expect_error([&] { dl.seek(p); }, {"'delta'", "alpha, beta, gamma"});
  p = good;
  p.datasets.pop_back();
  expect_error([&] { dl.seek(p); }, {"'gamma'", "no read position"});
  EXPECT_EQ(dl.position(), good) << "a refused seek changes nothing";
  expect_error([] { LoaderPosition::from_json({{"partition", 0}}); }, {"'partitions'"});
  nlohmann::json j = good.to_json();
  j["rows"] = -4;
  expect_error([&] { LoaderPosition::from_json(j); }, {"'rows'", "non-negative"});
  j = good.to_json();
  j["datasets"][0].erase("windows_read");
  expect_error([&] { LoaderPosition::from_json(j); }, {"datasets[0]", "'windows_read'"});
}

// --- prefetch ------------------------------------------------------------------------

TEST(LoaderPrefetch, SameBatchesAndPositionIsTheNextBatchNotTheReadAhead) {
  const auto ds = three_datasets(fresh_dir("f"), {0.5, 0.3, 0.2});
  LoaderOptions o = options(ds, 4, 4);
  o.seed = 5;
  DataLoader sync(o);
  for (int depth : {0, 1, 4}) {
    DataLoader ref(o);
    PrefetchLoader pre(o, depth);
    EXPECT_EQ(pre.position(), ref.position());
    for (int i = 0; i < 30; ++i) {
      ASSERT_TRUE(same_batch(next_batch(pre), next_batch(ref))) << "depth " << depth << " batch " << i;
      if (i == 3) std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let the worker fill up
      ASSERT_EQ(pre.position(), ref.position()) << "depth " << depth << " batch " << i;
    }
  }
}

TEST(LoaderPrefetch, WorkerErrorsReachTheCallerWithTheirMessage) {
  std::vector<uint32_t> tokens = iota_tokens(0, 41);
  tokens[13] = 5000;  // in window 3 (tokens 12..16) of T=4
  const std::string path = shard(fresh_dir("f"), "bad.bin", tokens);
  LoaderOptions o = options({{"web", {path}, 1.0}}, 1, 4);
  o.vocab_size = 1000;
  for (int depth : {0, 3}) {
    PrefetchLoader pre(o, depth);
    for (int i = 0; i < 3; ++i) EXPECT_NO_THROW(next_batch(pre)) << "depth " << depth << " batch " << i;
    const LoaderPosition before = pre.position();
    for (int again = 0; again < 2; ++again)
      expect_error([&] { next_batch(pre); },
                   {"bad.bin", "dataset 'web'", "token id 5000", "position 13", "vocabulary of 1000"});
    EXPECT_EQ(pre.position(), before);
  }
}

TEST(LoaderPrefetch, ShutsDownWhileTheWorkerWaits) {
  const auto ds = three_datasets(fresh_dir("f"), {1, 1, 1});
  for (int i = 0; i < 20; ++i) {
    PrefetchLoader pre(options(ds, 2, 4), 2);
    next_batch(pre);
    if (i % 2) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // full queue, worker blocked
  }  // each destructor stops and joins its worker; a hang here fails by timeout
  PrefetchLoader never_started(options(ds, 2, 4), 2);
}

// --- unigram entropy -----------------------------------------------------------------

TEST(LoaderUnigram, ShardsAndMixtures) {
  const std::string dir = fresh_dir("u");
  const std::string a = shard(dir, "a.bin", {0, 1, 0}), b = shard(dir, "b.bin", {1, 2, 3, 2, 3});
  EXPECT_NEAR(unigram_entropy_nats({a, b}, 4), std::log(4.0), 1e-12);  // counts 2,2,2,2
  EXPECT_NEAR(unigram_entropy_nats({a}, 258), -(2.0 / 3 * std::log(2.0 / 3) + 1.0 / 3 * std::log(1.0 / 3)), 1e-12);
  expect_error([&] { unigram_entropy_nats({b}, 3); }, {"b.bin", "token id 3", "vocabulary of 3"});
  // A mixture weights each dataset's frequencies by its share.
  const std::string zeros = shard(dir, "z.bin", {0, 0, 0, 0}), ones = shard(dir, "o.bin", {1, 1});
  EXPECT_NEAR(unigram_entropy_nats(std::vector<DatasetSource>{{"z", {zeros}, 3}, {"o", {ones}, 1}}, 2),
              -(0.75 * std::log(0.75) + 0.25 * std::log(0.25)), 1e-12);
}

// --- the config's data block ---------------------------------------------------------

namespace {

std::string config_error(const std::vector<std::string>& overrides) {
  try {
    load_config("", overrides);
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

}  // namespace

TEST(LoaderConfig, StringAndMixtureForms) {
  Config c = load_config("", {"data.train=some/dir", "data.val="});
  ASSERT_EQ(c.data.train.size(), 1u);
  EXPECT_EQ(c.data.train[0].path, "some/dir");
  EXPECT_EQ(c.data.train[0].name, "train");
  EXPECT_TRUE(c.data.val.empty());
  EXPECT_EQ(c.data.partitions, 1);
  EXPECT_EQ(c.data.partition, 0);
  EXPECT_EQ(c.data.seed, c.train.seed);
  c = load_config("", {R"(data.train=[{"name": "a", "path": "x/*.bin", "weight": 3}, {"name": "b", "path": "y", "weight": 1}])",
                       "data.node_count=4", "data.node_rank=3", "data.partitions=10"});
  ASSERT_EQ(c.data.train.size(), 2u);
  EXPECT_EQ(c.data.train[1].name, "b");
  EXPECT_DOUBLE_EQ(c.data.train[0].weight, 3.0);
  EXPECT_EQ(c.data.partition, 3) << "a node owns the partition of its rank by default";
  EXPECT_EQ(c.data.partitions, 10);
  // INTELLECT-1's mix.
  c = load_config(std::string(INTELLECT_SOURCE_DIR) + "/configs/10b.json", {});
  std::map<std::string, double> mix;
  for (const DataSource& s : c.data.train) mix[s.name] = s.weight;
  EXPECT_EQ(mix, (std::map<std::string, double>{
                     {"fineweb-edu", 0.55}, {"fineweb", 0.10}, {"stack", 0.20}, {"dclm", 0.10}, {"openwebmath", 0.05}}));
  EXPECT_EQ(c.data.val.size(), 5u);
}

TEST(LoaderConfig, BadMixtureErrorsNameTheField) {
  const std::string two = R"(data.train=[{"name": "a", "path": "x", "weight": 1}, {"name": "b", "path": "y", "weight": )";
  EXPECT_CONTAINS(config_error({two + "-0.5}]"}), "data.train[1].weight: must be positive");
  EXPECT_CONTAINS(config_error({two + "0}]"}), "data.train[1].weight: must be positive");
  EXPECT_CONTAINS(config_error({R"(data.train=[{"name": "a", "weight": 1}])"}), "data.train[0].path: is required but missing");
  EXPECT_CONTAINS(config_error({R"(data.train=[{"name": "a", "path": "", "weight": 1}])"}), "data.train[0].path: must name");
  EXPECT_CONTAINS(config_error({"data.train=[]"}), "data.train: is an empty mixture");
  EXPECT_CONTAINS(config_error({"data.train="}), "data.train: must name shard files");
  EXPECT_CONTAINS(config_error({"data.train=5"}), "data.train: expected a path");
  EXPECT_CONTAINS(config_error({R"(data.val=[{"name": "a", "path": "x", "wieght": 1}])"}), "data.val[0].weight: is required");
  EXPECT_CONTAINS(config_error({R"(data.train=[{"name": "a", "path": "x", "weight": 1, "wieght": 1}])"}),
                  "data.train[0].wieght: unknown key");
  EXPECT_CONTAINS(config_error({R"(data.train=[{"name": "a", "path": "x", "weight": 1}, {"name": "a", "path": "y", "weight": 1}])"}),
                  "data.train[1].name: \"a\" is used by two datasets");
  EXPECT_CONTAINS(config_error({R"(data.train=["x"])"}), "data.train[0]: expected an object");
  EXPECT_CONTAINS(config_error({"data.node_rank=2", "data.node_count=2"}), "data.node_rank: must be below data.node_count (2)");
  EXPECT_CONTAINS(config_error({"data.node_count=4", "data.partitions=2"}), "data.partitions: must be at least data.node_count (4)");
  EXPECT_CONTAINS(config_error({"data.partitions=3", "data.partition=3"}), "data.partition: must be below data.partitions (3)");
  EXPECT_CONTAINS(config_error({"data.prefetch=-1"}), "data.prefetch: must be in [0");
  EXPECT_CONTAINS(config_error({"data.shuffle=true"}), "data.shuffle: unknown key");
}

// --- the trainer's saved position -------------------------------------------------

TEST(LoaderTrainer, SavedPositionResumesExactly) {
  // Train 5 steps of 2 micro-batches with prefetch on a two-dataset mixture;
  // the data_position of each metrics line must be where an uninterrupted
  // loader stands after that step, and a fresh loader seeked to it must give
  // the batches the uninterrupted one gives next.
  const std::string dir = fresh_dir("corpus");
  CorpusOptions c;
  c.out_dir = dir;
  c.docs = 150;
  c.val_docs = 20;
  write_corpus(c);
  const std::string out = fresh_dir("run");
  const std::vector<std::string> overrides = {
      "model.dim=32", "model.n_layers=1", "model.n_heads=2", "model.n_kv_heads=1", "model.head_dim=16",
      "model.ffn_dim=64", "model.max_seq_len=32", "train.seq_len=32", "train.batch_size=8",
      "train.micro_batch_size=4", "train.steps=5", "train.log_every=1000", "train.eval_every=2",
      "train.eval_batches=2", "data.prefetch=3", "data.seed=9",
      R"(data.train=[{"name": "story", "path": ")" + dir + R"(/train_000000.bin", "weight": 3}, {"name": "more", "path": ")" +
          dir + R"(/train_*.bin", "weight": 1}])",
      "data.val=" + dir + "/val_*.bin", "train.out_dir=" + out};
  const Config cfg = load_config("", overrides);
  const TrainResult r = train(cfg);
  EXPECT_EQ(r.steps, 5);
  EXPECT_GT(r.final_val_loss, 0.0);

  std::ifstream f(out + "/metrics.jsonl");
  std::vector<LoaderPosition> saved;
  for (std::string line; std::getline(f, line);)
    saved.push_back(LoaderPosition::from_json(nlohmann::json::parse(line).at("data_position")));
  ASSERT_EQ(saved.size(), 5u);
  std::ifstream pf(out + "/data_position.json");
  EXPECT_EQ(LoaderPosition::from_json(nlohmann::json::parse(pf)), saved.back());

  const LoaderOptions o = train_loader_options(cfg);
  DataLoader uninterrupted(o);
  std::vector<Batch> stream;
  std::vector<LoaderPosition> after;
  for (int i = 0; i < 14; ++i) {
    stream.push_back(next_batch(uninterrupted));
    after.push_back(uninterrupted.position());
  }
  for (int step = 0; step < 5; ++step) {
    const size_t consumed = static_cast<size_t>(2 * (step + 1));
    ASSERT_EQ(saved[static_cast<size_t>(step)], after[consumed - 1]) << "step " << step + 1;
    DataLoader resumed(o);
    resumed.seek(saved[static_cast<size_t>(step)]);
    for (size_t k = consumed; k < consumed + 4; ++k)
      ASSERT_TRUE(same_batch(next_batch(resumed), stream[k])) << "resumed after step " << step + 1;
  }
  EXPECT_GT(saved.back().datasets[1].windows_read, 0u) << "the mixture should draw from both datasets";
}
