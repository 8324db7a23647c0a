// BPE tokenizer: exactness against HuggingFace tokenizers / tiktoken (shared
// llama.cpp vectors and our generated golden ids), the hand-written
// pre-tokenizer against PCRE2, byte round trips, parallel encoding, loaders.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/bpe_tokenizer.h"
#include "data/byte_level.h"
#include "data/pretokenizer.h"
#include "data/tokenizer.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace fs = std::filesystem;
using namespace intellect;

namespace {

const std::string kLlama3Dir = INTELLECT_SHARED_DATA "/llama3";
const std::string kVectorsDir = INTELLECT_SHARED_DATA "/tokenizer-vectors";
const std::string kGolden = INTELLECT_SOURCE_DIR "/tests/data/tokenizer/llama3_vectors.json";

#define SKIP_WITHOUT_LLAMA3()                                      \
  do {                                                             \
    if (!fs::exists(kLlama3Dir + "/tokenizer.json"))               \
      GTEST_SKIP() << "shared test data not found at " << kLlama3Dir; \
  } while (0)

// Loading tokenizer.json takes a few tenths of a second: once per process.
const Tokenizer& llama3_json() {
  static std::unique_ptr<Tokenizer> t = load_tokenizer(kLlama3Dir + "/tokenizer.json");
  return *t;
}
const Tokenizer& llama3_model() {
  static std::unique_ptr<Tokenizer> t = load_tokenizer(kLlama3Dir + "/tokenizer.model");
  return *t;
}

std::string fresh_dir(const std::string& name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path dir = fs::path(::testing::TempDir()) / "intellect_tokenizer" /
                       (std::string(info->test_suite_name()) + "." + info->name()) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

std::string ids_text(const std::vector<uint32_t>& ids) {
  std::ostringstream s;
  for (uint32_t id : ids) s << id << ' ';
  return s.str();
}

struct Vector {
  std::string name, text;
  std::vector<uint32_t> ids, bos_ids;
};

// llama.cpp's format: inputs separated by "\n__ggml_vocab_test__\n" (the file
// ends with one), one line of ids per input.
std::vector<Vector> shared_vectors() {
  const std::string inp = read_text_file(kVectorsDir + "/llama-bpe.inp");
  const std::string out = read_text_file(kVectorsDir + "/llama-bpe.out");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<Vector> v;
  for (size_t p = 0; p < inp.size();) {
    size_t q = inp.find(sep, p);
    if (q == std::string::npos) q = inp.size();
    v.push_back({"shared_" + std::to_string(v.size()), inp.substr(p, q - p), {}, {}});
    p = q + sep.size();
  }
  std::istringstream lines(out);
  std::string line;
  size_t i = 0;
  for (; std::getline(lines, line); ++i) {
    if (i >= v.size()) break;
    std::istringstream ls(line);
    for (uint32_t id; ls >> id;) v[i].ids.push_back(id);
  }
  EXPECT_EQ(i, v.size()) << "inputs and id lines differ in number";
  return v;
}

std::vector<Vector> golden_vectors() {
  const auto doc = nlohmann::json::parse(read_text_file(kGolden));
  std::vector<Vector> v;
  for (const auto& e : doc.at("vectors")) {
    Vector x{e.at("name"), e.at("text"), e.at("ids").get<std::vector<uint32_t>>(), {}};
    if (e.contains("bos_ids")) x.bos_ids = e["bos_ids"].get<std::vector<uint32_t>>();
    v.push_back(std::move(x));
  }
  return v;
}

void expect_vectors(const Tokenizer& tok, const std::vector<Vector>& vectors) {
  size_t matched = 0;
  for (const Vector& v : vectors) {
    const auto ids = tok.encode(v.text, false);
    EXPECT_EQ(ids, v.ids) << tok.name() << " on '" << v.name << "'\n got:  " << ids_text(ids)
                          << "\n want: " << ids_text(v.ids);
    EXPECT_EQ(tok.decode(ids), v.text) << v.name;
    if (!v.bos_ids.empty()) {
      EXPECT_EQ(tok.encode(v.text, true), v.bos_ids) << v.name;
    }
    matched += ids == v.ids;
  }
  EXPECT_EQ(matched, vectors.size());
}

// Random bytes biased towards what breaks tokenizers: multi-byte UTF-8,
// truncated and invalid sequences, whitespace, apostrophes, digits.
std::string random_bytes(std::mt19937& rng, size_t n, bool valid_only) {
  static const std::vector<std::string> atoms = {
      "a", "Z", "s", "'", " ", "  ", "\t", "\n", "\r\n", "\r", "7", "42", ".", "!?", "é", "я",
      "中", "😀", "\u3000", "\u00a0", "\u0085", "\u017f", "\u0301", "<|eot_id|>", "<|", "x's"};
  static const std::vector<std::string> broken = {"\xff", "\xc3", "\xe4\xb8", "\xf0\x9f\x98",
                                                  "\x80", "\xed\xa0\x80", "\xc0\xaf", "\xf5\x80\x80\x80"};
  std::string s;
  while (s.size() < n) {
    const unsigned r = rng() % 10;
    if (r < 7) {
      s += atoms[rng() % atoms.size()];
    } else if (valid_only) {
      s.push_back(static_cast<char>('a' + rng() % 26));
    } else if (r < 8) {
      s += broken[rng() % broken.size()];
    } else {
      s.push_back(static_cast<char>(rng() % 256));
    }
  }
  return s;
}

}  // namespace

TEST(TokenizerLlama3, SharedVectorsTokenizerJson) {
  SKIP_WITHOUT_LLAMA3();
  const auto v = shared_vectors();
  ASSERT_EQ(v.size(), 46u);
  expect_vectors(llama3_json(), v);
}

TEST(TokenizerLlama3, SharedVectorsTiktokenModel) {
  SKIP_WITHOUT_LLAMA3();
  expect_vectors(llama3_model(), shared_vectors());
}

TEST(TokenizerLlama3, GoldenVectorsTokenizerJson) {
  SKIP_WITHOUT_LLAMA3();
  const auto v = golden_vectors();
  ASSERT_GT(v.size(), 400u);
  expect_vectors(llama3_json(), v);
}

TEST(TokenizerLlama3, GoldenVectorsTiktokenModel) {
  SKIP_WITHOUT_LLAMA3();
  expect_vectors(llama3_model(), golden_vectors());
}

TEST(TokenizerLlama3, SpecialIdsAndSizes) {
  SKIP_WITHOUT_LLAMA3();
  for (const Tokenizer* t : {&llama3_json(), &llama3_model()}) {
    EXPECT_EQ(t->vocab_size(), 128256u) << t->name();
    EXPECT_EQ(t->bos_id(), 128000u) << t->name();
    EXPECT_EQ(t->eos_id(), 128001u) << t->name();
    EXPECT_EQ(t->encode("", true), std::vector<uint32_t>{128000}) << t->name();
    EXPECT_TRUE(t->encode("", false).empty());
    EXPECT_EQ(t->decode(std::vector<uint32_t>{128000, 9906, 128009}), "<|begin_of_text|>Hello<|eot_id|>");
    EXPECT_THROW(t->decode(std::vector<uint32_t>{128256}), Error);
  }
  const auto& json = dynamic_cast<const BpeTokenizer&>(llama3_json());
  const auto& model = dynamic_cast<const BpeTokenizer&>(llama3_model());
  EXPECT_EQ(json.merge_count(), 280147u);
  EXPECT_EQ(model.merge_count(), 280147u);  // the same merges, rebuilt from ranks
  EXPECT_EQ(json.token_id(" Hello"), 22691u);
  EXPECT_EQ(model.token_id("<|eot_id|>"), 128009u);
}

TEST(TokenizerLlama3, ArbitraryBytesRoundTrip) {
  SKIP_WITHOUT_LLAMA3();
  // HF cannot take invalid UTF-8 at all (Python str); ours encodes it
  // byte-level, so every byte string comes back unchanged.
  std::mt19937 rng(3);
  for (int i = 0; i < 300; ++i) {
    const std::string s = random_bytes(rng, 1 + rng() % 200, false);
    const auto a = llama3_json().encode(s, false);
    EXPECT_EQ(llama3_json().decode(a), s) << i;
    EXPECT_EQ(llama3_model().encode(s, false), a) << i;
    for (uint32_t id : a) EXPECT_LT(id, 128256u);
  }
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(llama3_json().decode(llama3_json().encode(all + all, true)),
            "<|begin_of_text|>" + all + all);
}

TEST(TokenizerLlama3, ParallelEncodeMatchesSerial) {
  SKIP_WITHOUT_LLAMA3();
  std::string text;
  const std::string shakespeare = INTELLECT_SHARED_DATA "/text/tinyshakespeare.txt";
  if (fs::exists(shakespeare)) text = read_text_file(shakespeare).substr(0, 400000);
  std::mt19937 rng(5);
  while (text.size() < 600000) text += random_bytes(rng, 5000, false) + "\nAbc <|eot_id|>\n\n";
  const auto serial = llama3_json().encode(text, true);
  for (int threads : {1, 2, 3, 8}) {
    EXPECT_EQ(llama3_json().encode_parallel(text, true, threads), serial) << threads << " threads";
  }
  std::vector<std::string_view> docs;
  for (size_t p = 0; p < text.size(); p += 7919) docs.push_back(std::string_view(text).substr(p, 7919));
  const auto batch = llama3_json().encode_batch(docs, false, 3);
  ASSERT_EQ(batch.size(), docs.size());
  for (size_t i = 0; i < docs.size(); ++i) EXPECT_EQ(batch[i], llama3_json().encode(docs[i], false));
}

// The scanners must split exactly as PCRE2 runs the same regex. Characters
// are kept to old Unicode so PCRE2's tables (older than HF's) agree; invalid
// bytes are included: both sides make each run of them a piece of its own.
TEST(TokenizerPreTokenizer, ScannersMatchPcre2) {
  for (std::string_view pattern : {kLlama3Pattern, kGpt2Pattern}) {
    const auto scanner = make_regex_pretokenizer(std::string(pattern));
    const auto pcre = make_pcre2_pretokenizer(std::string(pattern));
    std::mt19937 rng(11);
    for (int i = 0; i < 3000; ++i) {
      const std::string s = random_bytes(rng, 1 + rng() % 60, i % 2 == 0);
      std::vector<std::string_view> a, b;
      scanner->split(s, a);
      pcre->split(s, b);
      ASSERT_EQ(std::vector<std::string>(a.begin(), a.end()), std::vector<std::string>(b.begin(), b.end()))
          << "pattern " << pattern << " input #" << i << " '" << s << "'";
    }
  }
}

TEST(TokenizerPreTokenizer, Llama3Pieces) {
  const auto pre = make_regex_pretokenizer(std::string(kLlama3Pattern));
  auto pieces = [&](std::string_view s) {
    std::vector<std::string_view> out;
    pre->split(s, out);
    return std::vector<std::string>(out.begin(), out.end());
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(pieces("  hi"), (V{" ", " hi"}));
  EXPECT_EQ(pieces("12345"), (V{"123", "45"}));
  EXPECT_EQ(pieces("it's 'S"), (V{"it", "'s", " '", "S"}));
  EXPECT_EQ(pieces("a \n\n b"), (V{"a", " \n\n", " b"}));
  EXPECT_EQ(pieces(" !!\n\nx"), (V{" !!\n\n", "x"}));
  EXPECT_EQ(pieces("x   "), (V{"x", "   "}));
  EXPECT_EQ(pieces("a\xff\xfe b"), (V{"a", "\xff\xfe", " b"}));
}

TEST(TokenizerByteLevel, SpellingRoundTrips) {
  EXPECT_EQ(byte_level_encode(" "), "Ġ");
  EXPECT_EQ(byte_level_encode("\n"), "Ċ");
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(byte_level_decode(byte_level_encode(all)), all);
  EXPECT_FALSE(byte_level_decode("\xe4\xb8\xad").has_value());  // 中 spells no byte
}

namespace {

// A small byte-level tokenizer.json: the 256 bytes, then "ab", "abc", "xyz"
// (the last reachable by no merge), in either merges format.
std::string tiny_tokenizer_json(bool string_merges, bool ignore_merges) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level_encode(std::string(1, static_cast<char>(b)))] = b;
  vocab["ab"] = 256;
  vocab["abc"] = 257;
  vocab["xyz"] = 258;
  vocab["Ġab"] = 259;
  auto j = nlohmann::json::parse(R"({
    "version": "1.0",
    "added_tokens": [{"id": 260, "content": "<s>", "special": true},
                     {"id": 261, "content": "</s>", "special": true}],
    "normalizer": null,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                  {"Sequence": {"id": "A", "type_id": 0}}],
                       "special_tokens": {"<s>": {"id": "<s>", "ids": [260], "tokens": ["<s>"]}}},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "merges": []}
  })");
  j["model"]["vocab"] = vocab;
  j["model"]["ignore_merges"] = ignore_merges;
  j["model"]["merges"] = string_merges ? nlohmann::json::parse(R"(["a b", "ab c", "Ġ ab"])")
                                       : nlohmann::json::parse(R"([["a", "b"], ["ab", "c"], ["Ġ", "ab"]])");
  return j.dump();
}

}  // namespace

TEST(TokenizerLoad, BothMergeFormatsAndIgnoreMerges) {
  const std::string dir = fresh_dir("tiny");
  for (bool string_merges : {true, false}) {
    for (bool ignore : {true, false}) {
      const std::string path = dir + "/tokenizer.json";
      write_text(path, tiny_tokenizer_json(string_merges, ignore));
      const auto tok = load_tokenizer(path);
      EXPECT_EQ(tok->vocab_size(), 262u);
      EXPECT_EQ(tok->bos_id(), 260u);
      EXPECT_EQ(tok->eos_id(), 261u);
      EXPECT_EQ(tok->encode("abc ab", true), (std::vector<uint32_t>{260, 257, 259}));
      EXPECT_EQ(tok->encode("ab</s>c", false), (std::vector<uint32_t>{256, 261, 'c'}));
      // "xyz" is a token no merge makes: whole only with ignore_merges.
      const std::vector<uint32_t> whole = {258}, bytes = {'x', 'y', 'z'};
      EXPECT_EQ(tok->encode("xyz", false), ignore ? whole : bytes);
      EXPECT_EQ(tok->decode(tok->encode("<s>abcab xyz", false)), "<s>abcab xyz");
    }
  }
  // A directory resolves to its tokenizer.json.
  EXPECT_EQ(load_tokenizer(dir)->vocab_size(), 262u);
}

TEST(TokenizerLoad, RejectsWhatItCannotEncodeExactly) {
  const std::string dir = fresh_dir("bad");
  auto expect_error = [&](const std::string& text, const std::string& needle) {
    const std::string path = dir + "/tokenizer.json";
    write_text(path, text);
    try {
      load_tokenizer(path);
      ADD_FAILURE() << "no error; wanted one mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto j = nlohmann::json::parse(tiny_tokenizer_json(false, true));
  auto with = [&](const char* key, const char* type) {
    auto k = j;
    k[key] = nlohmann::json::object();
    k[key]["type"] = type;
    return k.dump();
  };
  expect_error(with("normalizer", "NFC"), "normalizer");
  expect_error(with("pre_tokenizer", "Whitespace"), "Whitespace");
  expect_error(with("decoder", "WordPiece"), "WordPiece");
  {
    auto k = j;
    k["model"]["merges"].push_back(nlohmann::json::parse(R"(["q", "nope"])"));
    expect_error(k.dump(), "nope");
  }
  {
    auto k = j;
    k["model"]["type"] = "Unigram";
    expect_error(k.dump(), "Unigram");
  }
  expect_error("{not json", "not valid JSON");
  EXPECT_THROW(load_tokenizer(dir + "/missing.json"), Error);
  EXPECT_THROW(load_tokenizer(dir + "/tokenizer.txt"), Error);

  write_text(dir + "/tokenizer.model", "IQ== 0\nnot-base64! 1\n");
  try {
    load_tokenizer(dir + "/tokenizer.model");
    ADD_FAILURE() << "bad base64 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
  }
}

TEST(TokenizerByte, ThroughTheFactory) {
  const auto tok = load_tokenizer("byte");
  EXPECT_EQ(tok->vocab_size(), 258u);
  EXPECT_EQ(tok->bos_id(), 256u);
  EXPECT_EQ(tok->eos_id(), 257u);
  EXPECT_EQ(tok->encode("hi", true), (std::vector<uint32_t>{256, 'h', 'i'}));
  EXPECT_EQ(tok->decode(std::vector<uint32_t>{256, 'h', 'i', 257}), "hi");
  const std::vector<std::string_view> docs = {"a", "", "bc"};
  const auto batch = tok->encode_batch(docs, false, 2);
  EXPECT_EQ(batch[2], (std::vector<uint32_t>{'b', 'c'}));
}
