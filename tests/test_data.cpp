// Token shards, byte tokenizer and the generated corpus (the loader: test_loader.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/byte_tokenizer.h"
#include "data/synthetic_corpus.h"
#include "data/token_shard.h"
#include "util/error.h"
#include "util/file.h"

namespace fs = std::filesystem;
using namespace intellect;

namespace {

// A fresh, empty directory under the test temp dir, unique per test.
std::string fresh_dir(const std::string& name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path dir = fs::path(::testing::TempDir()) / "intellect_data" /
                       (std::string(info->test_suite_name()) + "." + info->name()) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// Writes a file with an arbitrary header and body, valid or not.
void write_raw_shard(const std::string& path, int32_t magic, int32_t version, int32_t count,
                     size_t body_tokens, size_t extra_bytes = 0) {
  std::vector<int32_t> header(kShardHeaderInts, 0);
  header[0] = magic;
  header[1] = version;
  header[2] = count;
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(header.data()), kShardHeaderBytes);
  std::vector<uint32_t> body(body_tokens, 7);
  f.write(reinterpret_cast<const char*>(body.data()), static_cast<std::streamsize>(body.size() * 4));
  std::string extra(extra_bytes, 'x');
  f.write(extra.data(), static_cast<std::streamsize>(extra.size()));
}

// Runs f, expecting an intellect::Error whose message contains every part.
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

}  // namespace

// --- token shards -------------------------------------------------------------

TEST(DataShard, RoundTrip) {
  const std::string dir = fresh_dir("s");
  std::vector<uint32_t> tokens = {0, 1, 255, 256, 257, 128000, 0xffffffffu, 42};
  const std::string path = dir + "/a.bin";
  write_token_shard(path, tokens);
  EXPECT_EQ(fs::file_size(path), kShardHeaderBytes + 4 * tokens.size());
  TokenShard s = TokenShard::open(path);
  EXPECT_EQ(s.size(), tokens.size());
  EXPECT_EQ(s.path(), path);
  EXPECT_EQ(std::vector<uint32_t>(s.tokens().begin(), s.tokens().end()), tokens);
  // The header is llm.c's, byte for byte.
  auto bytes = read_file(path);
  int32_t h[3];
  std::memcpy(h, bytes.data(), sizeof(h));
  EXPECT_EQ(h[0], 20240801);
  EXPECT_EQ(h[1], 7);
  EXPECT_EQ(h[2], 8);
  // Moving keeps the mapping valid.
  TokenShard moved = std::move(s);
  EXPECT_EQ(moved.tokens()[5], 128000u);
  // No temporary file is left beside it.
  for (const auto& e : fs::directory_iterator(dir)) EXPECT_EQ(e.path().filename(), "a.bin");
}

TEST(DataShard, EmptyShardIsValid) {
  const std::string path = fresh_dir("s") + "/empty.bin";
  write_token_shard(path, {});
  EXPECT_EQ(TokenShard::open(path).size(), 0u);
}

TEST(DataShard, RejectsBadMagic) {
  const std::string path = fresh_dir("s") + "/bad.bin";
  write_raw_shard(path, 12345, 7, 3, 3);
  expect_error([&] { TokenShard::open(path); }, {path, "bad magic 12345", "expected 20240801"});
}

TEST(DataShard, RejectsGpt2Shard) {
  const std::string path = fresh_dir("s") + "/gpt2.bin";
  write_raw_shard(path, 20240520, 1, 3, 3);
  expect_error([&] { TokenShard::open(path); }, {path, "GPT-2 shard", "20240520", "20240801"});
}

TEST(DataShard, RejectsWrongVersion) {
  const std::string path = fresh_dir("s") + "/v.bin";
  write_raw_shard(path, 20240801, 1, 3, 3);
  expect_error([&] { TokenShard::open(path); }, {path, "version 1", "expected 7"});
}

TEST(DataShard, RejectsTruncated) {
  const std::string path = fresh_dir("s") + "/t.bin";
  write_raw_shard(path, 20240801, 7, 10, 4);
  expect_error([&] { TokenShard::open(path); },
               {path, "truncated", "10 tokens", "1064 bytes", "1040 bytes"});
}

TEST(DataShard, RejectsExtraBytes) {
  const std::string path = fresh_dir("s") + "/x.bin";
  write_raw_shard(path, 20240801, 7, 4, 4, 3);
  expect_error([&] { TokenShard::open(path); }, {path, "extra bytes", "1040 bytes", "1043 bytes"});
}

TEST(DataShard, RejectsTooSmall) {
  const std::string path = fresh_dir("s") + "/small.bin";
  std::ofstream(path) << "hello";
  expect_error([&] { TokenShard::open(path); }, {path, "too small", "5 bytes", "1024"});
}

TEST(DataShard, RejectsNegativeCountAndMissingFile) {
  const std::string dir = fresh_dir("s");
  write_raw_shard(dir + "/neg.bin", 20240801, 7, -1, 0);
  expect_error([&] { TokenShard::open(dir + "/neg.bin"); }, {"neg.bin", "negative token count"});
  expect_error([&] { TokenShard::open(dir + "/missing.bin"); }, {"missing.bin", "cannot open"});
  expect_error([&] { TokenShard::open(dir); }, {"not a regular file"});
}

TEST(DataShard, PatternExpansion) {
  const std::string dir = fresh_dir("p");
  for (const char* name : {"train_000001.bin", "train_000000.bin", "val_000000.bin"})
    write_token_shard(dir + "/" + name, iota_tokens(0, 4));
  std::ofstream(dir + "/manifest.json") << "{}";
  fs::create_directories(dir + "/sub.bin.d");

  // A directory: every *.bin, sorted.
  EXPECT_EQ(expand_shard_pattern(dir),
            (std::vector<std::string>{dir + "/train_000000.bin", dir + "/train_000001.bin",
                                      dir + "/val_000000.bin"}));
  // A glob.
  EXPECT_EQ(expand_shard_pattern(dir + "/train_*.bin"),
            (std::vector<std::string>{dir + "/train_000000.bin", dir + "/train_000001.bin"}));
  // A single file.
  EXPECT_EQ(expand_shard_pattern(dir + "/val_000000.bin"),
            (std::vector<std::string>{dir + "/val_000000.bin"}));
  // Nothing matches.
  expect_error([&] { expand_shard_pattern(dir + "/test_*.bin"); }, {"no token shards match", dir + "/test_*.bin"});
  expect_error([&] { expand_shard_pattern(dir + "/nope.bin"); }, {"does not exist", dir + "/nope.bin"});
  const std::string empty = fresh_dir("empty");
  expect_error([&] { expand_shard_pattern(empty); }, {"contains no token shards", empty});
}

// --- byte tokenizer -----------------------------------------------------------

TEST(DataTokenizer, RoundTripUtf8) {
  ByteTokenizer tok;
  const std::string text = "Hello, wörld! 你好 🙂\n\ttabs";
  auto ids = tok.encode(text);
  EXPECT_EQ(ids.size(), text.size());  // bytes, not code points
  for (uint32_t id : ids) EXPECT_LT(id, 256u);
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_EQ(tok.encode("ö"), (std::vector<uint32_t>{0xc3, 0xb6}));
}

TEST(DataTokenizer, RoundTripBinary) {
  ByteTokenizer tok;
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  auto ids = tok.encode(all);
  ASSERT_EQ(ids.size(), 256u);
  for (uint32_t i = 0; i < 256; ++i) EXPECT_EQ(ids[i], i);
  EXPECT_EQ(tok.decode(ids), all);
  EXPECT_TRUE(tok.encode("").empty());
}

TEST(DataTokenizer, DecodeSkipsBosEosAndRejectsUnknownIds) {
  ByteTokenizer tok;
  EXPECT_EQ(ByteTokenizer::kVocab, 258u);
  std::vector<uint32_t> ids = {ByteTokenizer::kBos, 'h', 'i', ByteTokenizer::kEos, ByteTokenizer::kBos, '!'};
  EXPECT_EQ(tok.decode(ids), "hi!");
  std::vector<uint32_t> bad = {'a', 258};
  expect_error([&] { tok.decode(bad); }, {"258", "position 1"});
}

// --- generated corpus ---------------------------------------------------------

TEST(DataCorpus, GeneratorIsDeterministic) {
  for (uint64_t i = 0; i < 50; ++i) EXPECT_EQ(generate_document(1, i), generate_document(1, i));
  EXPECT_NE(generate_document(1, 0), generate_document(1, 1));
  EXPECT_NE(generate_document(1, 0), generate_document(2, 0));
  EXPECT_NE(generate_document(1, kValDocIndexBase), generate_document(1, 0));
  std::set<std::string> distinct;
  for (uint64_t i = 0; i < 200; ++i) {
    const std::string d = generate_document(7, i);
    EXPECT_GT(d.size(), 100u);
    EXPECT_EQ(d.back(), '\n');
    for (unsigned char c : d) EXPECT_TRUE(c == '\n' || (c >= 32 && c < 127)) << "byte " << int(c);
    EXPECT_EQ(d.find('~'), std::string::npos);  // every article resolved
    EXPECT_EQ(d.find('{'), std::string::npos);  // every slot filled
    distinct.insert(d);
  }
  EXPECT_EQ(distinct.size(), 200u);
}

TEST(DataCorpus, ArithmeticIsCorrect) {
  std::map<std::string, int> value;
  const char* ones[] = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                        "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                        "seventeen", "eighteen", "nineteen"};
  const char* tens[] = {"twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"};
  for (int i = 0; i < 20; ++i) value[ones[i]] = i;
  for (int t = 0; t < 8; ++t) {
    value[tens[t]] = 20 + 10 * t;
    for (int o = 1; o < 10; ++o) value[std::string(tens[t]) + "-" + ones[o]] = 20 + 10 * t + o;
  }
  // Every "A plus|minus|times B is C." in the text, in words, must be true.
  int checked = 0;
  for (uint64_t i = 0; i < 300; ++i) {
    std::string d = generate_document(3, i);
    for (char& c : d) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::vector<std::string> w;
    std::istringstream words(d);
    for (std::string x; words >> x;) w.push_back(x);
    for (size_t k = 1; k + 3 < w.size(); ++k) {
      if (w[k] != "plus" && w[k] != "minus" && w[k] != "times") continue;
      if (w[k + 2] != "is" || w[k + 3].back() != '.') continue;  // e.g. "What is two plus three?"
      const std::string a_word = w[k - 1], b_word = w[k + 1], c_word = w[k + 3].substr(0, w[k + 3].size() - 1);
      const std::string fact = a_word + " " + w[k] + " " + b_word + " is " + c_word;
      ASSERT_TRUE(value.count(a_word) && value.count(b_word) && value.count(c_word)) << fact;
      const int a = value[a_word], b = value[b_word];
      const int expected = w[k] == "plus" ? a + b : w[k] == "minus" ? a - b : a * b;
      EXPECT_EQ(value[c_word], expected) << fact;
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);
}

TEST(DataCorpus, TextIsPredictableFromContext) {
  // Byte entropy given the previous three bytes must be far below the unigram
  // entropy; otherwise a model would have little to learn.
  std::string text;
  for (uint64_t i = 0; i < 400; ++i) text += generate_document(1, i);
  std::map<unsigned char, double> uni;
  std::map<std::string, std::map<unsigned char, double>> ctx;
  for (size_t i = 3; i < text.size(); ++i) {
    uni[static_cast<unsigned char>(text[i])] += 1;
    ctx[text.substr(i - 3, 3)][static_cast<unsigned char>(text[i])] += 1;
  }
  const double n = static_cast<double>(text.size() - 3);
  double h_uni = 0, h_ctx = 0;
  for (auto& [c, k] : uni) h_uni -= k / n * std::log2(k / n);
  for (auto& [c, next] : ctx) {
    double total = 0;
    for (auto& [b, k] : next) total += k;
    for (auto& [b, k] : next) h_ctx -= k / n * std::log2(k / total);
  }
  std::printf("unigram %.3f bits/byte, order-3 context %.3f bits/byte\n", h_uni, h_ctx);
  EXPECT_GT(h_uni, 3.5);
  EXPECT_LT(h_ctx, 0.5 * h_uni);
}

TEST(DataCorpus, WriteCorpusPacksWholeDocuments) {
  const std::string dir = fresh_dir("c");
  // Leftovers of an earlier, larger corpus must not survive.
  write_token_shard(dir + "/train_000099.bin", iota_tokens(0, 3));
  write_token_shard(dir + "/val_000007.bin", iota_tokens(0, 3));
  std::ofstream(dir + "/notes.bin") << "keep me";

  CorpusOptions o;
  o.out_dir = dir;
  o.docs = 60;
  o.val_docs = 5;
  o.seed = 11;
  o.shard_tokens = 8000;
  std::ostringstream log;
  const CorpusSummary s = write_corpus(o, &log);
  EXPECT_NE(log.str().find("65/65 documents"), std::string::npos) << log.str();
  EXPECT_EQ(s.train_docs, 60u);
  EXPECT_EQ(s.val_docs, 5u);
  EXPECT_GT(s.train_shards.size(), 2u);
  ASSERT_EQ(s.val_shards.size(), 1u);
  EXPECT_FALSE(fs::exists(dir + "/train_000099.bin"));
  EXPECT_FALSE(fs::exists(dir + "/val_000007.bin"));
  EXPECT_TRUE(fs::exists(dir + "/notes.bin"));

  // Shards hold whole documents, in order, and decode to the generator's text.
  ByteTokenizer tok;
  std::string train_text;
  uint64_t train_tokens = 0;
  for (const auto& path : s.train_shards) {
    TokenShard shard = TokenShard::open(path);
    EXPECT_LE(shard.size(), o.shard_tokens);
    EXPECT_EQ(shard.tokens().front(), ByteTokenizer::kBos) << path;
    EXPECT_EQ(shard.tokens().back(), ByteTokenizer::kEos) << path;
    train_tokens += shard.size();
    train_text += tok.decode(shard.tokens());
  }
  std::string expected;
  for (uint64_t i = 0; i < 60; ++i) expected += generate_document(11, i);
  EXPECT_EQ(train_text, expected);
  EXPECT_EQ(train_tokens, s.train_tokens);
  EXPECT_EQ(train_tokens, expected.size() + 2 * 60);  // BOS + EOS each
  TokenShard val = TokenShard::open(s.val_shards[0]);
  EXPECT_EQ(tok.decode(val.tokens()), generate_document(11, kValDocIndexBase) +
                                          generate_document(11, kValDocIndexBase + 1) +
                                          generate_document(11, kValDocIndexBase + 2) +
                                          generate_document(11, kValDocIndexBase + 3) +
                                          generate_document(11, kValDocIndexBase + 4));

  const auto m = nlohmann::json::parse(read_text_file(dir + "/manifest.json"));
  EXPECT_EQ(m["seed"], 11);
  EXPECT_EQ(m["train"]["docs"], 60);
  EXPECT_EQ(m["train"]["tokens"], s.train_tokens);
  EXPECT_EQ(m["train"]["shards"].size(), s.train_shards.size());
  EXPECT_EQ(m["train"]["shards"][0]["file"], "train_000000.bin");
  EXPECT_EQ(m["total_tokens"], s.train_tokens + s.val_tokens);
  EXPECT_EQ(m["tokenizer"]["vocab_size"], 258);

  // The directory is what the loader takes, and the same call is reproducible.
  EXPECT_EQ(expand_shard_pattern(dir + "/train_*.bin"), s.train_shards);
  const auto first = read_file(s.train_shards[0]);
  write_corpus(o);
  EXPECT_EQ(read_file(s.train_shards[0]), first);
}

TEST(DataCorpus, WriteCorpusFromInputFiles) {
  const std::string in = fresh_dir("in"), out = fresh_dir("out");
  const std::string small = "Hello there.\n", big(250, 'z');
  std::ofstream(in + "/1.txt") << small;
  std::ofstream(in + "/2.txt") << big;  // longer than a shard: split across shards
  std::ofstream(in + "/3.txt") << "held out\n";
  CorpusOptions o;
  o.out_dir = out;
  o.inputs = {in + "/1.txt", in + "/2.txt", in + "/3.txt"};
  o.val_docs = 1;
  o.shard_tokens = 100;
  const CorpusSummary s = write_corpus(o);
  EXPECT_EQ(s.train_docs, 2u);
  EXPECT_EQ(s.train_tokens, small.size() + big.size() + 4);
  // 15 tokens of doc 1; doc 2 (252) does not fit beside it, so it starts a new
  // shard and is cut in pieces of 100.
  std::vector<size_t> sizes;
  std::string text;
  ByteTokenizer tok;
  for (const auto& p : s.train_shards) {
    TokenShard shard = TokenShard::open(p);
    sizes.push_back(shard.size());
    text += tok.decode(shard.tokens());
  }
  EXPECT_EQ(sizes, (std::vector<size_t>{15, 100, 100, 52}));
  EXPECT_EQ(text, small + big);
  ASSERT_EQ(s.val_shards.size(), 1u);
  EXPECT_EQ(tok.decode(TokenShard::open(s.val_shards[0]).tokens()), "held out\n");
  const auto m = nlohmann::json::parse(read_text_file(out + "/manifest.json"));
  EXPECT_EQ(m["generator"], "input files");
  EXPECT_EQ(m["inputs"].size(), 3u);

  o.val_docs = 3;
  expect_error([&] { write_corpus(o); }, {"3 input files", "none for training"});
  o.val_docs = 0;
  o.inputs = {in + "/missing.txt"};
  expect_error([&] { write_corpus(o); }, {"missing.txt"});
}
