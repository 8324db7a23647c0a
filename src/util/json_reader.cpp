#include "util/json_reader.h"

#include <cmath>

#include "util/error.h"

namespace intellect {

using nlohmann::json;

static std::string describe(const json& v) {
  std::string d = v.dump();
  if (d.size() > 60) d = d.substr(0, 57) + "...";
  return str(d, " (", v.type_name(), ")");
}

JsonReader::JsonReader(const json& obj, std::string source, std::string prefix)
    : obj_(obj), source_(std::move(source)), prefix_(std::move(prefix)) {
  if (!obj_.is_object()) {
    if (prefix_.empty()) fail(source_, ": the config must be a JSON object, got ", describe(obj_));
    fail(source_, ": ", prefix_, ": expected an object, got ", describe(obj_));
  }
}

void JsonReader::error(const std::string& key, const std::string& what) const {
  fail(source_, ": ", field(key), ": ", what);
}

bool JsonReader::has(const std::string& key) const { return obj_.contains(key); }

const json& JsonReader::get_json(const std::string& key) { return *lookup(key, true); }
bool JsonReader::is_null(const std::string& key) const {
  return obj_.contains(key) && obj_.at(key).is_null();
}

const json* JsonReader::lookup(const std::string& key, bool required) {
  read_.insert(key);
  auto it = obj_.find(key);
  if (it == obj_.end()) {
    if (required) error(key, "is required but missing");
    return nullptr;
  }
  return &*it;
}

int64_t JsonReader::get_int(const std::string& key, std::optional<int64_t> def, int64_t min,
                            int64_t max) {
  const json* v = lookup(key, !def.has_value());
  if (!v) return *def;
  int64_t x;
  if (v->is_number_integer()) {
    x = v->get<int64_t>();
  } else if (v->is_number_float() && std::nearbyint(v->get<double>()) == v->get<double>() &&
             std::fabs(v->get<double>()) < 9e15) {
    x = static_cast<int64_t>(v->get<double>());  // 1e3 written for 1000 is fine
  } else {
    error(key, str("expected an integer, got ", describe(*v)));
  }
  if (x < min || x > max) error(key, str("must be in [", min, ", ", max, "], got ", x));
  return x;
}

double JsonReader::get_double(const std::string& key, std::optional<double> def, double min,
                              double max) {
  const json* v = lookup(key, !def.has_value());
  if (!v) return *def;
  if (!v->is_number()) error(key, str("expected a number, got ", describe(*v)));
  double x = v->get<double>();
  if (!(x >= min && x <= max)) error(key, str("must be in [", min, ", ", max, "], got ", x));
  return x;
}

bool JsonReader::get_bool(const std::string& key, std::optional<bool> def) {
  const json* v = lookup(key, !def.has_value());
  if (!v) return *def;
  if (!v->is_boolean()) error(key, str("expected true or false, got ", describe(*v)));
  return v->get<bool>();
}

std::string JsonReader::get_string(const std::string& key, std::optional<std::string> def,
                                   const std::vector<std::string>& allowed) {
  const json* v = lookup(key, !def.has_value());
  std::string s;
  if (!v) {
    s = *def;
  } else {
    if (!v->is_string()) error(key, str("expected a string, got ", describe(*v)));
    s = v->get<std::string>();
  }
  if (!allowed.empty()) {
    bool ok = false;
    std::string list;
    for (auto& a : allowed) {
      ok |= (a == s);
      list += (list.empty() ? "" : ", ") + ("\"" + a + "\"");
    }
    if (!ok) error(key, str("must be one of ", list, ", got \"", s, "\""));
  }
  return s;
}

JsonReader JsonReader::child(const std::string& key) {
  const json* v = lookup(key, false);
  if (!v || v->is_null()) return JsonReader(json::object(), source_, field(key));
  return JsonReader(*v, source_, field(key));
}

void JsonReader::finish() const {
  for (auto it = obj_.begin(); it != obj_.end(); ++it) {
    if (!read_.count(it.key())) {
      std::string known;
      for (auto& k : read_) known += (known.empty() ? "" : ", ") + k;
      fail(source_, ": ", field(it.key()), ": unknown key (known keys",
           prefix_.empty() ? "" : " in " + prefix_, ": ", known, ")");
    }
  }
}

void apply_override(json& doc, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    fail("--set ", assignment, ": expected dotted.key=value, e.g. --set train.steps=100");
  std::string path = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  json value;
  try {
    value = json::parse(text);
  } catch (const json::parse_error&) {
    value = text;  // bare strings need no JSON quotes on the command line
  }
  json* node = &doc;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) fail("--set ", assignment, ": empty key component in '", path, "'");
    if (!node->is_object())
      fail("--set ", assignment, ": '", path.substr(0, start - 1), "' is not an object");
    if (dot == std::string::npos) {
      (*node)[part] = value;
      return;
    }
    node = &(*node)[part];
    if (node->is_null()) *node = json::object();
    start = dot + 1;
  }
}

}  // namespace intellect
