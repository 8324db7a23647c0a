#include "dist/run_settings.h"

#include <map>

#include <nlohmann/json.hpp>

#include "util/error.h"

namespace intellect {

namespace {

// Settings are two levels deep; a joiner's text nested deeper than this is
// refused before anything recurses over it (flatten, dump).
constexpr int kMaxDepth = 8;

// The text as a JSON object no deeper than kMaxDepth; discarded otherwise.
nlohmann::json parse_settings(const std::string& text) {
  bool too_deep = false;
  nlohmann::json j = nlohmann::json::parse(
      text,
      [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
        if (depth > kMaxDepth) too_deep = true;
        return !too_deep;
      },
      false);
  if (too_deep || !j.is_object()) return nlohmann::json(nlohmann::json::value_t::discarded);
  return j;
}

// Leaves of a JSON object as "a.b" -> their JSON text.
void flatten(const nlohmann::json& j, const std::string& prefix, std::map<std::string, std::string>& out) {
  if (j.is_object() && !j.empty()) {
    for (const auto& [k, v] : j.items()) flatten(v, prefix.empty() ? k : prefix + "." + k, out);
    return;
  }
  out[prefix] = j.dump();
}

}  // namespace

bool run_settings_valid(const std::string& text) { return !parse_settings(text).is_discarded(); }

std::string run_settings_difference(const std::string& run, const std::string& joiner) {
  if (run == joiner) return "";
  const nlohmann::json theirs = parse_settings(joiner);
  if (theirs.is_discarded()) return "the joiner's settings are not a JSON object (of at most 8 levels)";
  const nlohmann::json ours = parse_settings(run);
  if (ours.is_discarded()) return "the run's settings are not a JSON object (internal error)";
  std::map<std::string, std::string> a, b;
  flatten(ours, "", a);
  flatten(theirs, "", b);
  constexpr size_t kNamed = 6;
  std::string said;
  size_t differ = 0;
  auto add = [&](const std::string& key, const std::string& here, const std::string& in_run) {
    if (++differ > kNamed) return;
    if (!said.empty()) said += "; ";
    said += str(key, " is ", here, " here and ", in_run, " in the run");
  };
  for (const auto& [key, v] : a) {
    const auto it = b.find(key);
    if (it == b.end()) add(key, "not set", v);
    else if (it->second != v) add(key, it->second, v);
  }
  for (const auto& [key, v] : b)
    if (!a.count(key)) add(key, v, "not set");
  if (differ > kNamed) said += str("; and ", differ - kNamed, " more");
  // Equal leaves in another text (whitespace, key order): the same settings.
  return said;
}

}  // namespace intellect
