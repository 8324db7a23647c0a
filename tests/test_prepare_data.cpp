// prepare_data: documents in, shards and manifest out; bad lines, compressed
// inputs, shard boundaries, long documents, the command line's exit codes.
#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/prepare.h"
#include "data/token_shard.h"
#include "data/tokenizer.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace fs = std::filesystem;
using namespace intellect;
using nlohmann::json;

namespace {

const std::string kLlama3Json = INTELLECT_SHARED_DATA "/llama3/tokenizer.json";

std::string fresh_dir(const std::string& name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path dir = fs::path(::testing::TempDir()) / "intellect_prepare" /
                       (std::string(info->test_suite_name()) + "." + info->name()) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

std::string jsonl_of(const std::vector<std::string>& docs) {
  std::string s;
  for (const auto& d : docs) s += json{{"text", d}, {"meta", 1}}.dump() + "\n";
  return s;
}

void write_gz(const std::string& path, const std::string& text) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, text.data(), static_cast<unsigned>(text.size())), static_cast<int>(text.size()));
  gzclose(f);
}

std::string zstd_bytes(const std::string& text) {
  std::string out(ZSTD_compressBound(text.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), text.data(), text.size(), 3);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

// Varied documents: words, unicode, newlines, some empty-ish.
std::vector<std::string> make_docs(size_t n, uint64_t seed) {
  static const char* words[] = {"the", "cat", "naïve", "Größe", "数据", "🙂", "x=1;", "\n", "  ", "end."};
  std::mt19937 rng(static_cast<unsigned>(seed));
  std::vector<std::string> docs;
  for (size_t i = 0; i < n; ++i) {
    std::string d = "doc " + std::to_string(i) + ":";
    const size_t len = 1 + rng() % 60;
    for (size_t w = 0; w < len; ++w) d += std::string(" ") + words[rng() % 10];
    docs.push_back(d);
  }
  return docs;
}

PrepareOptions options(const std::string& tokenizer, std::vector<std::string> inputs,
                       const std::string& out, uint64_t shard_tokens = 1000) {
  PrepareOptions o;
  o.tokenizer = tokenizer;
  o.inputs = std::move(inputs);
  o.output_dir = out;
  o.shard_tokens = shard_tokens;
  o.threads = 3;
  o.batch_bytes = 512;  // many small batches, to exercise ordering
  return o;
}

std::vector<uint32_t> all_tokens(const std::string& dir, const json& manifest) {
  std::vector<uint32_t> all;
  for (const auto& sh : manifest.at("shards")) {
    const TokenShard s = TokenShard::open(dir + "/" + sh.at("file").get<std::string>());
    EXPECT_EQ(s.size(), sh.at("tokens").get<size_t>());
    all.insert(all.end(), s.tokens().begin(), s.tokens().end());
  }
  return all;
}

// Cuts a token stream framed as BOS ids EOS ... back into documents.
std::vector<std::string> decode_documents(const Tokenizer& tok, const std::vector<uint32_t>& all) {
  std::vector<std::string> docs;
  size_t i = 0;
  while (i < all.size()) {
    EXPECT_EQ(all[i], tok.bos_id()) << "document does not start with BOS at token " << i;
    size_t j = i + 1;
    while (j < all.size() && all[j] != tok.eos_id()) ++j;
    EXPECT_LT(j, all.size()) << "document without EOS";
    docs.push_back(tok.decode(std::span<const uint32_t>(all).subspan(i + 1, j - i - 1)));
    i = j + 1;
  }
  return docs;
}

json read_manifest(const std::string& dir) { return json::parse(read_text_file(dir + "/manifest.json")); }

}  // namespace

TEST(PrepareData, RoundTripByteTokenizer) {
  const std::string dir = fresh_dir("in"), out = fresh_dir("out");
  const auto docs = make_docs(300, 1);
  write_text(dir + "/a.txt", "one whole file\nis one document\n");
  write_text(dir + "/b.jsonl", jsonl_of(docs));
  const PrepareSummary s = prepare_data(options("byte", {dir + "/a.txt", dir + "/b.jsonl"}, out));
  EXPECT_EQ(s.documents, 301u);
  EXPECT_EQ(s.bad_lines, 0u);
  const auto tok = load_tokenizer("byte");
  const auto got = decode_documents(*tok, all_tokens(out, read_manifest(out)));
  ASSERT_EQ(got.size(), 301u);
  EXPECT_EQ(got[0], "one whole file\nis one document\n");
  for (size_t i = 0; i < docs.size(); ++i) EXPECT_EQ(got[i + 1], docs[i]) << i;
}

TEST(PrepareData, RoundTripLlama3AndThreadCountInvariance) {
  if (!fs::exists(kLlama3Json)) GTEST_SKIP() << "shared test data not found: " << kLlama3Json;
  const std::string dir = fresh_dir("in"), out1 = fresh_dir("out1"), out3 = fresh_dir("out3");
  const auto docs = make_docs(400, 2);
  write_text(dir + "/b.jsonl", jsonl_of(docs));
  auto o = options(kLlama3Json, {dir + "/b.jsonl"}, out1, 2000);
  o.threads = 1;
  prepare_data(o);
  o.output_dir = out3;
  o.threads = 3;
  prepare_data(o);
  const auto tok = load_tokenizer(kLlama3Json);
  const auto tokens1 = all_tokens(out1, read_manifest(out1));
  EXPECT_EQ(all_tokens(out3, read_manifest(out3)), tokens1);
  const auto got = decode_documents(*tok, tokens1);
  ASSERT_EQ(got.size(), docs.size());
  for (size_t i = 0; i < docs.size(); ++i) EXPECT_EQ(got[i], docs[i]) << i;
  // Shards are byte-identical too; only the output directory differs.
  EXPECT_EQ(read_file(out1 + "/shard_000000.bin"), read_file(out3 + "/shard_000000.bin"));
}

TEST(PrepareData, BadJsonlLinesAreReportedAndCounted) {
  const std::string dir = fresh_dir("in"), out = fresh_dir("out");
  write_text(dir + "/m.jsonl",
             "{\"text\": \"good one\"}\n"
             "{\"text\": \"unterminated\n"       // line 2: invalid JSON
             "{\"title\": \"no text\"}\n"         // line 3: no text field
             "{\"text\": 42}\n"                   // line 4: text not a string
             "\n"                                 // line 5: empty
             "[1, 2]\n"                           // line 6: not an object
             "{\"text\": \"good two\"}");         // line 7: no final newline
  std::ostringstream log;
  auto o = options("byte", {dir + "/m.jsonl"}, out);
  o.log = &log;
  const PrepareSummary s = prepare_data(o);
  EXPECT_EQ(s.documents, 2u);
  EXPECT_EQ(s.bad_lines, 5u);
  const std::string text = log.str();
  for (int line : {2, 3, 4, 5, 6})
    EXPECT_NE(text.find(dir + "/m.jsonl:" + std::to_string(line) + ": skipped"), std::string::npos)
        << "line " << line << " not reported in:\n" << text;
  EXPECT_NE(text.find("invalid JSON"), std::string::npos);
  EXPECT_NE(text.find("no \"text\" field"), std::string::npos);
  const json m = read_manifest(out);
  EXPECT_EQ(m["bad_lines"], 5);
  EXPECT_EQ(m["sources"][0]["bad_lines"], 5);
  EXPECT_EQ(m["sources"][0]["documents"], 2);
  const auto tok = load_tokenizer("byte");
  EXPECT_EQ(decode_documents(*tok, all_tokens(out, m)), (std::vector<std::string>{"good one", "good two"}));
}

TEST(PrepareData, GzipAndZstdInputs) {
  const std::string dir = fresh_dir("in"), out = fresh_dir("out");
  const auto docs = make_docs(500, 3);
  const std::string text = jsonl_of(docs);
  write_text(dir + "/plain.jsonl", text);
  write_gz(dir + "/c.jsonl.gz", text);
  write_text(dir + "/c.jsonl.zst", zstd_bytes(text));
  const PrepareSummary s = prepare_data(
      options("byte", {dir + "/plain.jsonl", dir + "/c.jsonl.gz", dir + "/c.jsonl.zst"}, out, 5000));
  EXPECT_EQ(s.documents, 1500u);
  const json m = read_manifest(out);
  EXPECT_EQ(m["sources"][1]["format"], "jsonl.gz");
  EXPECT_EQ(m["sources"][2]["format"], "jsonl.zst");
  EXPECT_EQ(m["sources"][1]["tokens"], m["sources"][0]["tokens"]);
  EXPECT_EQ(m["sources"][2]["tokens"], m["sources"][0]["tokens"]);
  const auto got = decode_documents(*load_tokenizer("byte"), all_tokens(out, m));
  ASSERT_EQ(got.size(), 1500u);
  for (size_t i = 0; i < 1500; ++i) EXPECT_EQ(got[i], docs[i % 500]) << i;

  // Broken inputs fail with the file named, and leave no manifest.
  const std::string bad_out = fresh_dir("bad_out");
  const std::string gz = read_text_file(dir + "/c.jsonl.gz");
  write_text(dir + "/cut.jsonl.gz", gz.substr(0, gz.size() / 2));
  write_text(dir + "/notgz.jsonl.gz", text);
  const std::string zst = zstd_bytes(text);
  write_text(dir + "/cut.jsonl.zst", zst.substr(0, zst.size() / 2));
  write_text(dir + "/garbage.jsonl.zst", "this is not zstd at all");
  for (const char* name : {"cut.jsonl.gz", "notgz.jsonl.gz", "cut.jsonl.zst", "garbage.jsonl.zst"}) {
    try {
      prepare_data(options("byte", {dir + "/" + name}, bad_out));
      ADD_FAILURE() << name << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(bad_out + "/manifest.json")) << name;
    for (const auto& e : fs::directory_iterator(bad_out)) fs::remove(e.path());
  }
}

TEST(PrepareData, ShardBoundariesRespectDocuments) {
  const std::string dir = fresh_dir("in"), out = fresh_dir("out");
  const auto docs = make_docs(400, 4);
  write_text(dir + "/d.jsonl", jsonl_of(docs));
  const uint64_t shard_tokens = 1500;  // every document is shorter than this
  const PrepareSummary s = prepare_data(options("byte", {dir + "/d.jsonl"}, out, shard_tokens));
  EXPECT_EQ(s.split_documents, 0u);
  ASSERT_GT(s.shards.size(), 3u);
  const auto tok = load_tokenizer("byte");
  for (size_t i = 0; i < s.shards.size(); ++i) {
    const TokenShard sh = TokenShard::open(out + "/" + s.shards[i].file);
    ASSERT_GT(sh.size(), 0u);
    EXPECT_LE(sh.size(), shard_tokens);
    EXPECT_EQ(sh.tokens().front(), tok->bos_id()) << s.shards[i].file;
    EXPECT_EQ(sh.tokens().back(), tok->eos_id()) << s.shards[i].file;
    // Shards are filled: the next document would not have fitted.
    if (i + 1 < s.shards.size()) {
      const TokenShard next = TokenShard::open(out + "/" + s.shards[i + 1].file);
      size_t first_doc = 0;
      while (next.tokens()[first_doc] != tok->eos_id()) ++first_doc;
      EXPECT_GT(sh.size() + first_doc + 1, shard_tokens);
    }
  }
  char name[32];
  std::snprintf(name, sizeof(name), "shard_%06zu.bin", s.shards.size() - 1);
  EXPECT_EQ(s.shards.back().file, name);
}

TEST(PrepareData, DocumentLongerThanAShardIsSplit) {
  const std::string dir = fresh_dir("in"), out = fresh_dir("out");
  const std::string big(2500, 'z');
  write_text(dir + "/e.jsonl", jsonl_of({"short", big, "tail"}));
  const PrepareSummary s = prepare_data(options("byte", {dir + "/e.jsonl"}, out, 1000));
  EXPECT_EQ(s.split_documents, 1u);
  // "short" (7 tokens) fills shard 0 alone; the big one (2502) takes shards
  // 1 and 2 whole and starts shard 3, where "tail" follows it.
  ASSERT_EQ(s.shards.size(), 4u);
  EXPECT_EQ(s.shards[0].tokens, 7u);
  EXPECT_EQ(s.shards[1].tokens, 1000u);
  EXPECT_EQ(s.shards[2].tokens, 1000u);
  EXPECT_EQ(s.shards[3].tokens, 502u + 6u);
  const auto got = decode_documents(*load_tokenizer("byte"), all_tokens(out, read_manifest(out)));
  EXPECT_EQ(got, (std::vector<std::string>{"short", big, "tail"}));
}

TEST(PrepareData, ManifestContents) {
  if (!fs::exists(kLlama3Json)) GTEST_SKIP() << "shared test data not found: " << kLlama3Json;
  const std::string dir = fresh_dir("in"), out = fresh_dir("out");
  write_text(dir + "/a.txt", "Hello world");
  write_text(dir + "/b.jsonl", jsonl_of({"x", "y"}) + "oops\n");
  const std::string model = INTELLECT_SHARED_DATA "/llama3/tokenizer.model";
  prepare_data(options(model, {dir + "/a.txt", dir + "/b.jsonl"}, out));
  const json m = read_manifest(out);
  // The sha256 SOURCES.md gives for Meta's file.
  EXPECT_EQ(m["tokenizer"]["sha256"], "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55");
  EXPECT_EQ(m["tokenizer"]["vocab_size"], 128256);
  EXPECT_EQ(m["tokenizer"]["bos_id"], 128000);
  EXPECT_EQ(m["tokenizer"]["eos_id"], 128001);
  EXPECT_EQ(m["format"]["magic"], kShardMagic);
  EXPECT_EQ(m["format"]["version"], kShardVersion);
  EXPECT_EQ(m["documents"], 3);
  EXPECT_EQ(m["bad_lines"], 1);
  // "Hello world" is 2 tokens, "x" and "y" one each: 4 + 3 + 3 with framing.
  EXPECT_EQ(m["tokens"], 10);
  ASSERT_EQ(m["sources"].size(), 2u);
  EXPECT_EQ(m["sources"][0]["path"], dir + "/a.txt");
  EXPECT_EQ(m["sources"][0]["bytes"], 11);
  EXPECT_EQ(m["sources"][0]["tokens"], 4);
  EXPECT_EQ(m["sources"][1]["bytes"], fs::file_size(dir + "/b.jsonl"));
  ASSERT_EQ(m["shards"].size(), 1u);
  EXPECT_EQ(m["shards"][0]["file"], "shard_000000.bin");
  EXPECT_EQ(m["shards"][0]["tokens"], 10);
  const auto tokens = all_tokens(out, m);
  EXPECT_EQ(tokens, (std::vector<uint32_t>{128000, 9906, 1917, 128001, 128000, 87, 128001, 128000, 88, 128001}));
}

TEST(PrepareData, RefusesUsedOutputAndBadInputs) {
  const std::string dir = fresh_dir("in"), out = fresh_dir("out");
  write_text(dir + "/a.txt", "abc");
  prepare_data(options("byte", {dir + "/a.txt"}, out));
  EXPECT_THROW(prepare_data(options("byte", {dir + "/a.txt"}, out)), Error);  // shards there
  auto o = options("byte", {dir + "/a.txt"}, out);
  o.overwrite = true;
  EXPECT_NO_THROW(prepare_data(o));
  const std::string out2 = fresh_dir("out2");
  EXPECT_THROW(prepare_data(options("byte", {dir + "/missing.jsonl"}, out2)), Error);
  write_text(dir + "/a.csv", "x");
  EXPECT_THROW(prepare_data(options("byte", {dir + "/a.csv"}, out2)), Error);
  EXPECT_THROW(prepare_data(options(dir + "/nope.json", {dir + "/a.txt"}, out2)), Error);
  EXPECT_FALSE(fs::exists(out2 + "/manifest.json"));
}

TEST(PrepareData, CommandLineExitCodes) {
  const std::string tool = INTELLECT_BINARY_DIR "/prepare_data";
  if (!fs::exists(tool)) GTEST_SKIP() << "prepare_data not built at " << tool;
  const std::string dir = fresh_dir("in"), out = fresh_dir("out");
  write_text(dir + "/a.txt", "hello");
  auto run = [&](const std::string& args) {
    const int rc = std::system((tool + " " + args + " 2>/dev/null").c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  };
  EXPECT_EQ(run(""), 2);
  EXPECT_EQ(run("--tokenizer byte --output " + out), 2);                       // no input
  EXPECT_EQ(run("--tokenizer byte --input " + dir + "/a.txt --output " + out + " --shard-tokens 0"), 2);
  EXPECT_EQ(run("--bogus"), 2);
  EXPECT_EQ(run("--tokenizer byte --input " + dir + "/missing.txt --output " + out), 1);
  EXPECT_EQ(run("--tokenizer byte --input " + dir + "/a.txt --output " + out + " --threads 2"), 0);
  EXPECT_TRUE(fs::exists(out + "/manifest.json"));
  EXPECT_TRUE(fs::exists(out + "/shard_000000.bin"));
}
