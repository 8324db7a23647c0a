// Loads a HuggingFace tokenizer.json of the byte-level BPE kind. Accepted:
//   model:          BPE (vocab, merges as "a b" strings or ["a", "b"] pairs,
//                   ignore_merges); no dropout, no subword prefix/suffix
//   normalizer:     none
//   pre_tokenizer:  Split (Regex, "Isolated"), ByteLevel (add_prefix_space
//                   false; use_regex adds GPT-2's regex), or a Sequence of them
//   post_processor: TemplateProcessing (its leading special tokens are the BOS
//                   prefix), ByteLevel, or a Sequence of them
//   decoder:        ByteLevel
// Anything else fails with a message naming the field, rather than encoding
// differently from HF without a word.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <unordered_map>

#include "data/bpe_tokenizer.h"
#include "data/byte_level.h"
#include "util/error.h"
#include "util/file.h"

namespace intellect {
namespace {

using nlohmann::json;

struct Loader {
  std::string path;

  [[noreturn]] void bad(const std::string& what) const {
    fail("tokenizer '", path, "': ", what);
  }

  std::string type_of(const json& node, const std::string& where) const {
    if (!node.is_object() || !node.contains("type") || !node["type"].is_string())
      bad(where + " has no \"type\"");
    return node["type"].get<std::string>();
  }

  bool flag(const json& node, const char* key, bool fallback) const {
    if (!node.contains(key) || node[key].is_null()) return fallback;
    if (!node[key].is_boolean()) bad(std::string("\"") + key + "\" must be true or false");
    return node[key].get<bool>();
  }

  std::string raw_bytes(const std::string& spelled, const std::string& where) const {
    auto bytes = byte_level_decode(spelled);
    if (!bytes)
      bad(where + " '" + spelled + "' is not spelled in GPT-2's byte-level alphabet; intellect "
          "supports byte-level BPE tokenizers only");
    return *bytes;
  }

  // One pre-tokenizer node; appends its stages.
  void pre_tokenizer(const json& node, std::vector<std::unique_ptr<PreTokenizer>>& stages) const {
    const std::string type = type_of(node, "pre_tokenizer");
    if (type == "Sequence") {
      for (const json& child : node.at("pretokenizers")) pre_tokenizer(child, stages);
    } else if (type == "Split") {
      const json& pattern = node.at("pattern");
      std::string regex;
      if (pattern.contains("Regex")) {
        regex = pattern["Regex"].get<std::string>();
      } else if (pattern.contains("String")) {
        regex = "\\Q" + pattern["String"].get<std::string>() + "\\E";  // a literal
      } else {
        bad("Split pre-tokenizer pattern is neither {\"Regex\": ...} nor {\"String\": ...}");
      }
      const std::string behavior = node.value("behavior", std::string("Isolated"));
      if (behavior != "Isolated")
        bad("Split pre-tokenizer behavior '" + behavior + "' is not supported (only Isolated)");
      if (flag(node, "invert", false)) bad("Split pre-tokenizer with invert: true is not supported");
      stages.push_back(make_regex_pretokenizer(regex));
    } else if (type == "ByteLevel") {
      // The byte-to-unicode spelling itself needs no stage: tokens are kept as raw bytes.
      if (flag(node, "add_prefix_space", false))
        bad("ByteLevel pre-tokenizer with add_prefix_space: true is not supported");
      if (flag(node, "use_regex", true)) stages.push_back(make_regex_pretokenizer(std::string(kGpt2Pattern)));
    } else {
      bad("pre_tokenizer type '" + type + "' is not supported (Split, ByteLevel, Sequence)");
    }
  }

  // The leading special tokens of the single-sequence template.
  void post_processor(const json& node, const std::map<std::string, uint32_t>& added_ids,
                      std::vector<uint32_t>& prefix) const {
    const std::string type = type_of(node, "post_processor");
    if (type == "Sequence") {
      for (const json& child : node.at("processors")) post_processor(child, added_ids, prefix);
    } else if (type == "ByteLevel") {
      // Only adjusts offsets; ids are unchanged.
    } else if (type == "TemplateProcessing") {
      const json& specials = node.value("special_tokens", json::object());
      for (const json& item : node.at("single")) {
        if (item.contains("Sequence")) break;
        if (!item.contains("SpecialToken")) bad("post_processor template item is not understood");
        const std::string name = item["SpecialToken"].at("id").get<std::string>();
        if (specials.contains(name)) {
          for (const json& id : specials[name].at("ids")) prefix.push_back(id.get<uint32_t>());
        } else if (auto it = added_ids.find(name); it != added_ids.end()) {
          prefix.push_back(it->second);
        } else {
          bad("post_processor template names '" + name + "', which is not a special token");
        }
      }
    } else {
      bad("post_processor type '" + type + "' is not supported (TemplateProcessing, ByteLevel, "
          "Sequence)");
    }
  }
};

// tokenizer_config.json's eos_token is either a string or {"content": ...}.
std::optional<std::string> config_token(const std::string& dir, const char* key) {
  const std::string path = (std::filesystem::path(dir) / "tokenizer_config.json").string();
  if (!path_exists(path)) return std::nullopt;
  try {
    const json config = json::parse(read_text_file(path));
    if (!config.contains(key)) return std::nullopt;
    const json& v = config[key];
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content")) return v["content"].get<std::string>();
  } catch (const json::exception&) {
    // A broken config beside the tokenizer only costs us this hint.
  }
  return std::nullopt;
}

std::optional<uint32_t> pick_special(const std::map<std::string, uint32_t>& added,
                                     std::initializer_list<const char*> names,
                                     const std::optional<std::string>& fallback) {
  for (const char* n : names)
    if (auto it = added.find(n); it != added.end()) return it->second;
  if (fallback)
    if (auto it = added.find(*fallback); it != added.end()) return it->second;
  return std::nullopt;
}

}  // namespace

std::unique_ptr<BpeTokenizer> load_hf_tokenizer_json(const std::string& path) {
  Loader L{path};
  json root;
  try {
    root = json::parse(read_text_file(path));
  } catch (const json::parse_error& e) {
    L.bad(std::string("not valid JSON: ") + e.what());
  }
  try {
    BpeSpec spec;
    spec.name = path;
    if (!root.is_object() || !root.contains("model")) L.bad("no \"model\" (not a tokenizer.json?)");
    const json& model = root["model"];
    const std::string model_type = model.value("type", std::string("BPE"));
    if (model_type != "BPE")
      L.bad("model type '" + model_type + "' is not supported (intellect reads BPE models)");
    if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"].get<double>() != 0.0)
      L.bad("BPE dropout is set; encoding would be random, so it is not supported");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (model.contains(key) && !model[key].is_null() && !model[key].get<std::string>().empty())
        L.bad(std::string("BPE ") + key + " is not supported (byte-level BPE has none)");
    spec.ignore_merges = L.flag(model, "ignore_merges", false);

    const json& vocab = model.at("vocab");
    if (!vocab.is_object()) L.bad("model.vocab is not an object of token -> id");
    std::unordered_map<std::string, uint32_t> spelled_ids;
    spelled_ids.reserve(vocab.size());
    spec.vocab.reserve(vocab.size());
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const uint32_t id = it.value().get<uint32_t>();
      spelled_ids.emplace(it.key(), id);
      spec.vocab.emplace_back(L.raw_bytes(it.key(), "vocabulary token"), id);
    }

    const json& merges = model.at("merges");
    spec.merges.reserve(merges.size());
    auto id_of = [&](const std::string& spelled, size_t index) {
      auto it = spelled_ids.find(spelled);
      if (it == spelled_ids.end())
        L.bad("merge " + std::to_string(index) + " names '" + spelled + "', which is not in the vocabulary");
      return it->second;
    };
    for (size_t i = 0; i < merges.size(); ++i) {
      const json& m = merges[i];
      std::string a, b;
      if (m.is_string()) {  // older files: "a b"
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
          L.bad("merge " + std::to_string(i) + " '" + s + "' is not two tokens separated by one space");
        a = s.substr(0, space);
        b = s.substr(space + 1);
      } else if (m.is_array() && m.size() == 2) {  // newer files: ["a", "b"]
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        L.bad("merge " + std::to_string(i) + " is neither \"a b\" nor [\"a\", \"b\"]");
      }
      spec.merges.emplace_back(id_of(a, i), id_of(b, i));
    }

    std::map<std::string, uint32_t> added_ids;
    if (root.contains("added_tokens") && root["added_tokens"].is_array()) {
      for (const json& t : root["added_tokens"]) {
        AddedToken a;
        a.id = t.at("id").get<uint32_t>();
        a.content = t.at("content").get<std::string>();
        for (const char* key : {"single_word", "lstrip", "rstrip"})
          if (L.flag(t, key, false))
            L.bad("added token '" + a.content + "' sets " + key + ", which is not supported");
        added_ids[a.content] = a.id;
        spec.added.push_back(std::move(a));
      }
    }

    if (root.contains("normalizer") && !root["normalizer"].is_null())
      L.bad("normalizer '" + L.type_of(root["normalizer"], "normalizer") +
            "' is not supported (byte-level BPE tokenizers have none)");
    std::vector<std::unique_ptr<PreTokenizer>> stages;
    bool byte_level = false;
    if (root.contains("pre_tokenizer") && !root["pre_tokenizer"].is_null()) {
      L.pre_tokenizer(root["pre_tokenizer"], stages);
      byte_level = root["pre_tokenizer"].dump().find("\"ByteLevel\"") != std::string::npos;
    }
    if (root.contains("decoder") && !root["decoder"].is_null()) {
      const std::string type = L.type_of(root["decoder"], "decoder");
      if (type != "ByteLevel")
        L.bad("decoder '" + type + "' is not supported (intellect reads byte-level BPE: ByteLevel)");
      byte_level = true;
    }
    if (!byte_level)
      L.bad("neither the pre_tokenizer nor the decoder is ByteLevel; intellect supports "
            "byte-level BPE tokenizers only");
    if (!stages.empty()) spec.pre_tokenizer = make_sequence_pretokenizer(std::move(stages));

    if (root.contains("post_processor") && !root["post_processor"].is_null())
      L.post_processor(root["post_processor"], added_ids, spec.bos_prefix);
    const std::string dir = std::filesystem::path(path).parent_path().string();
    if (!spec.bos_prefix.empty()) spec.bos = spec.bos_prefix.front();
    else spec.bos = pick_special(added_ids, {"<|begin_of_text|>", "<s>", "<|endoftext|>"},
                                 config_token(dir, "bos_token"));
    // Document ends: the pretraining end-of-text token comes before the
    // config's eos_token, which chat models set to their end-of-turn token.
    spec.eos = pick_special(added_ids, {"<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>"},
                            config_token(dir, "eos_token"));
    return std::make_unique<BpeTokenizer>(std::move(spec));
  } catch (const json::exception& e) {
    L.bad(std::string("unexpected structure: ") + e.what());
  }
}

}  // namespace intellect
