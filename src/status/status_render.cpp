#include "status/status_render.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

namespace intellect {

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds)) return "?";
  const long long s = std::llround(seconds);
  char buf[48];
  if (s >= 86400) std::snprintf(buf, sizeof buf, "%lldd %02lldh", s / 86400, s % 86400 / 3600);
  else if (s >= 3600) std::snprintf(buf, sizeof buf, "%lldh %02lldm", s / 3600, s % 3600 / 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%lldm %02llds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%llds", s);
  return buf;
}

namespace {
bool is_member(const NodeView& n) { return n.state != "left" && n.state != "evicted"; }
}  // namespace

RunSummary summarize(const RunSnapshot& s) {
  RunSummary r;
  double wall = 0, blocked = 0;
  std::map<int64_t, std::pair<double, int>> by_step;
  for (const NodeView& n : s.nodes) {
    if (!is_member(n)) continue;
    ++r.live;
    for (const LossPoint& p : n.loss) {
      auto& [sum, count] = by_step[p.step];
      sum += p.loss;
      ++count;
    }
    if (!n.status) continue;
    const control::NodeStatus& st = *n.status;
    r.tokens_per_s += st.tokens_per_s;
    wall += st.wall_s;
    blocked += st.outer_blocked_s;
    r.eta_s = std::max(r.eta_s, st.eta_s);
    r.inner_step = std::max(r.inner_step, st.inner_step);
    r.total_steps = std::max(r.total_steps, st.total_steps);
    r.gpus += static_cast<int>(st.gpus);
  }
  if (wall > 0) r.utilization = std::clamp(1.0 - blocked / wall, 0.0, 1.0);
  for (const auto& [step, sc] : by_step) r.mean_loss.push_back({step, sc.first / sc.second});
  return r;
}

namespace {

nlohmann::json curve(const std::deque<LossPoint>& c) {
  nlohmann::json a = nlohmann::json::array();
  for (const LossPoint& p : c) a.push_back({p.step, p.loss});
  return a;
}

nlohmann::json node_json(const NodeView& n) {
  nlohmann::json j = {{"id", n.id},           {"name", n.name},           {"address", n.address},
                      {"state", n.state},     {"joined_at", n.joined_at}, {"last_seen_at", n.last_seen_at},
                      {"loss", curve(n.loss)}, {"val_loss", curve(n.val_loss)}};
  if (n.status) {
    const control::NodeStatus& s = *n.status;
    j["status"] = {{"inner_step", s.inner_step},
                   {"total_steps", s.total_steps},
                   {"loss", s.has_loss ? nlohmann::json(s.loss) : nlohmann::json()},
                   {"val_loss", s.has_val_loss ? nlohmann::json(s.val_loss) : nlohmann::json()},
                   {"tokens_per_s", s.tokens_per_s},
                   {"gpus", s.gpus},
                   {"device", s.device},
                   {"memory_bytes", s.memory_bytes},
                   {"wall_s", s.wall_s},
                   {"outer_blocked_s", s.outer_blocked_s},
                   {"utilization", s.wall_s > 0 ? std::clamp(1.0 - s.outer_blocked_s / s.wall_s, 0.0, 1.0) : -1.0},
                   {"eta_s", s.eta_s},
                   {"outer_step", s.outer_step},
                   {"allreduce_s", s.allreduce_s},
                   {"outer_bytes", s.outer_bytes},
                   {"outer_retries", s.outer_retries}};
  }
  return j;
}

}  // namespace

nlohmann::json status_json(const RunSnapshot& s) {
  const RunSummary r = summarize(s);
  nlohmann::json nodes = nlohmann::json::array(), outer = nlohmann::json::array(), events = nlohmann::json::array();
  for (const NodeView& n : s.nodes) nodes.push_back(node_json(n));
  for (const OuterStepView& o : s.outer)
    outer.push_back({{"step", o.step},
                     {"round", o.round},
                     {"ring", o.ring},
                     {"retries", o.retries},
                     {"announced_at", o.announced_at},
                     {"done_at", o.done_at},
                     {"allreduce_s", o.allreduce_s},
                     {"bytes", o.bytes},
                     {"agreement", o.agreement},
                     {"rewinds", o.rewinds}});
  for (const EventView& e : s.events)
    events.push_back({{"at", e.at},           {"kind", e.kind},   {"node", e.node}, {"detail", e.detail},
                      {"seconds", e.seconds}, {"bytes", e.bytes}, {"donor", e.donor}});
  nlohmann::json mean = nlohmann::json::array();
  for (const LossPoint& p : r.mean_loss) mean.push_back({p.step, p.loss});
  return {{"title", s.title},
          {"now", s.now},
          {"started_unix", s.started_unix},
          {"run",
           {{"members", r.live},
            {"gpus", r.gpus},
            {"tokens_per_s", r.tokens_per_s},
            {"utilization", r.utilization},
            {"eta_s", r.eta_s},
            {"eta", format_duration(r.eta_s)},
            {"inner_step", r.inner_step},
            {"total_steps", r.total_steps},
            {"agreed", s.agreed},
            {"diverged", s.diverged},
            {"joins", s.joins},
            {"evictions", s.evictions},
            {"departures", s.departures},
            {"rewinds", s.rewinds},
            {"mean_loss", mean}}},
          {"nodes", nodes},
          {"outer_steps", outer},
          {"events", events}};
}

namespace {

// A label value in the text format: backslash, double quote and newline escaped.
std::string label_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

class MetricWriter {
 public:
  void family(const char* name, const char* type, const char* help) {
    out_ += str_("# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
  }
  void sample(const char* name, const std::string& labels, double v) {
    out_ += name;
    if (!labels.empty()) out_ += "{" + labels + "}";
    out_ += " " + number(v) + "\n";
  }
  std::string take() { return std::move(out_); }

 private:
  template <typename... A>
  static std::string str_(const A&... a) {
    std::string s;
    ((s += a), ...);
    return s;
  }
  std::string out_;
};

std::string node_labels(const NodeView& n) {
  return "node=\"" + std::to_string(n.id) + "\",name=\"" + label_value(n.name) + "\"";
}

}  // namespace

std::string prometheus_text(const RunSnapshot& s) {
  const RunSummary r = summarize(s);
  MetricWriter w;
  w.family("intellect_members", "gauge", "Nodes in the run, by state.");
  std::map<std::string, int> by_state;
  for (const char* st : {"fetching state", "training", "waiting for ring", "in ring", "late"}) by_state[st] = 0;
  for (const NodeView& n : s.nodes)
    if (is_member(n)) ++by_state[n.state];
  for (const auto& [st, count] : by_state) w.sample("intellect_members", "state=\"" + label_value(st) + "\"", count);
  w.family("intellect_run_tokens_per_second", "gauge", "Training throughput summed over the members.");
  w.sample("intellect_run_tokens_per_second", "", r.tokens_per_s);
  w.family("intellect_run_gpus", "gauge", "GPUs of the members (0 for CPU nodes).");
  w.sample("intellect_run_gpus", "", r.gpus);
  w.family("intellect_run_inner_step", "gauge", "The furthest member's inner step.");
  w.sample("intellect_run_inner_step", "", static_cast<double>(r.inner_step));
  w.family("intellect_run_total_steps", "gauge", "train.steps as the members report it.");
  w.sample("intellect_run_total_steps", "", static_cast<double>(r.total_steps));
  w.family("intellect_run_eta_seconds", "gauge", "Time to train.steps at the slowest member's pace (-1: unknown).");
  w.sample("intellect_run_eta_seconds", "", r.eta_s);
  w.family("intellect_run_compute_utilization", "gauge",
           "1 - time the members' training threads waited for outer steps / their wall time (-1: unknown).");
  w.sample("intellect_run_compute_utilization", "", r.utilization);
  w.family("intellect_outer_steps_agreed_total", "counter", "Outer steps whose hashes all agreed.");
  w.sample("intellect_outer_steps_agreed_total", "", static_cast<double>(s.agreed));
  w.family("intellect_outer_steps_diverged_total", "counter", "Outer steps whose hashes disagreed.");
  w.sample("intellect_outer_steps_diverged_total", "", static_cast<double>(s.diverged));
  w.family("intellect_joins_total", "counter", "Nodes that joined.");
  w.sample("intellect_joins_total", "", static_cast<double>(s.joins));
  w.family("intellect_evictions_total", "counter", "Nodes evicted for silence.");
  w.sample("intellect_evictions_total", "", static_cast<double>(s.evictions));
  w.family("intellect_departures_total", "counter", "Nodes that left (goodbye or lost connection).");
  w.sample("intellect_departures_total", "", static_cast<double>(s.departures));
  w.family("intellect_rewinds_total", "counter", "Times the run went back to an older outer step.");
  w.sample("intellect_rewinds_total", "", static_cast<double>(s.rewinds));
  const OuterStepView* last = nullptr;
  for (const OuterStepView& o : s.outer)
    if (o.agreement != "pending") last = &o;
  w.family("intellect_outer_step", "gauge", "The newest completed outer step (-1: none).");
  w.sample("intellect_outer_step", "", last ? static_cast<double>(last->step) : -1.0);
  w.family("intellect_outer_allreduce_seconds", "gauge", "The newest completed outer step's all-reduce (slowest member).");
  w.sample("intellect_outer_allreduce_seconds", "", last ? last->allreduce_s : 0.0);
  w.family("intellect_outer_ring_size", "gauge", "Members of the newest completed outer step's ring.");
  w.sample("intellect_outer_ring_size", "", last ? static_cast<double>(last->ring.size()) : 0.0);

  struct PerNode {
    const char* name;
    const char* type;
    const char* help;
    double (*get)(const control::NodeStatus&);
  };
  static const PerNode per_node[] = {
      {"intellect_node_inner_step", "gauge", "Inner steps done.", [](const control::NodeStatus& s) { return double(s.inner_step); }},
      {"intellect_node_tokens_per_second", "gauge", "Training throughput.", [](const control::NodeStatus& s) { return s.tokens_per_s; }},
      {"intellect_node_gpus", "gauge", "GPUs (0: CPU).", [](const control::NodeStatus& s) { return double(s.gpus); }},
      {"intellect_node_memory_bytes", "gauge", "Memory in use (device, or resident on the CPU).",
       [](const control::NodeStatus& s) { return double(s.memory_bytes); }},
      {"intellect_node_wall_seconds_total", "counter", "Training time of the node's process.", [](const control::NodeStatus& s) { return s.wall_s; }},
      {"intellect_node_outer_blocked_seconds_total", "counter", "Time the training thread waited for outer steps.",
       [](const control::NodeStatus& s) { return s.outer_blocked_s; }},
      {"intellect_node_eta_seconds", "gauge", "Time to train.steps at this node's pace (-1: unknown).",
       [](const control::NodeStatus& s) { return s.eta_s; }},
      {"intellect_node_allreduce_seconds", "gauge", "The node's newest all-reduce.", [](const control::NodeStatus& s) { return s.allreduce_s; }},
      {"intellect_node_outer_retries", "gauge", "Retries of the node's newest outer step.",
       [](const control::NodeStatus& s) { return double(s.outer_retries); }},
  };
  for (const PerNode& m : per_node) {
    w.family(m.name, m.type, m.help);
    for (const NodeView& n : s.nodes)
      if (is_member(n) && n.status) w.sample(m.name, node_labels(n), m.get(*n.status));
  }
  w.family("intellect_node_loss", "gauge", "The newest training loss.");
  for (const NodeView& n : s.nodes)
    if (is_member(n) && n.status && n.status->has_loss) w.sample("intellect_node_loss", node_labels(n), n.status->loss);
  w.family("intellect_node_val_loss", "gauge", "The newest validation loss.");
  for (const NodeView& n : s.nodes)
    if (is_member(n) && n.status && n.status->has_val_loss)
      w.sample("intellect_node_val_loss", node_labels(n), n.status->val_loss);
  w.family("intellect_node_info", "gauge", "1 per member, with its device.");
  for (const NodeView& n : s.nodes)
    if (is_member(n))
      w.sample("intellect_node_info", node_labels(n) + ",device=\"" + label_value(n.status ? n.status->device : "") +
                                          "\",state=\"" + label_value(n.state) + "\"", 1);
  return w.take();
}

}  // namespace intellect
