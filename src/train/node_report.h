// What a training node reports about itself: the NodeStatus its heartbeats
// carry to the coordinator (and that its own status server shows with
// train.metrics_listen), and the ETA on its step lines.
//
// Threads: owned and fed by the training thread; it hands copies to
// MeshNode::set_status and RunStatus::node_status, which lock their own.
#pragma once
#include <chrono>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "dist/control.h"
#include "status/run_status.h"
#include "status/status_server.h"
#include "train/config.h"

namespace intellect {

class MeshNode;

class NodeReport {
 public:
  // Serves train.metrics_listen when set; `mesh` (nullable) gets every report.
  NodeReport(const Config& cfg, const std::string& device, MeshNode* mesh, int64_t start_step);
  ~NodeReport();

  void joined(const nlohmann::json& summary);  // OuterSync::joined(), when this node joined a run in progress
  void outer_step(const nlohmann::json& line);  // an outer step's metrics ("outer", "outer_final")
  void val_loss(double v);
  // After each step; publishes the status.
  void step_done(int64_t steps_done, double loss, double tokens_per_s, double outer_blocked_s);

  // Seconds to train.steps at this run's pace so far (-1: not known yet).
  double eta_s() const { return status_.eta_s; }
  std::string url() const { return server_ ? server_->url() : std::string(); }

 private:
  const Config& cfg_;
  MeshNode* mesh_;
  int64_t start_step_;
  std::chrono::steady_clock::time_point t0_;
  control::NodeStatus status_;
  std::shared_ptr<RunStatus> local_;  // for train.metrics_listen
  std::unique_ptr<StatusServer> server_;
};

// This process's resident memory, in bytes (0 if /proc cannot be read).
uint64_t resident_memory_bytes();

}  // namespace intellect
