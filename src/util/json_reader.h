// JsonReader walks one JSON object of a config file, reading typed fields with
// range checks and remembering which keys it read, so that finish() can refuse
// unknown keys. Every error names the file and the dotted field.
#pragma once
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace intellect {

class JsonReader {
 public:
  // `source` names where the JSON came from (a file path, or "the embedded default").
  JsonReader(const nlohmann::json& obj, std::string source, std::string prefix = "");

  int64_t get_int(const std::string& key, std::optional<int64_t> def, int64_t min, int64_t max);
  double get_double(const std::string& key, std::optional<double> def, double min, double max);
  bool get_bool(const std::string& key, std::optional<bool> def);
  std::string get_string(const std::string& key, std::optional<std::string> def,
                         const std::vector<std::string>& allowed = {});
  // The raw value (marks the key as known); the caller validates it.
  const nlohmann::json& get_json(const std::string& key);
  bool has(const std::string& key) const;
  bool is_null(const std::string& key) const;
  // A nested object; an absent or null key reads as {} so its fields take their defaults.
  JsonReader child(const std::string& key);
  // Refuses keys that no get_* asked for.
  void finish() const;

  [[noreturn]] void error(const std::string& key, const std::string& what) const;
  std::string field(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }

 private:
  const nlohmann::json* lookup(const std::string& key, bool required);
  nlohmann::json obj_;
  std::string source_, prefix_;
  std::set<std::string> read_;
};

// Applies `dotted.key=value` to a JSON document. The value is parsed as JSON
// when it parses (numbers, true/false, null, arrays, objects), else taken as a
// string, so `--set data.train=dir/x.bin` needs no quotes.
void apply_override(nlohmann::json& doc, const std::string& assignment);

}  // namespace intellect
