#include "train/node_report.h"

#include <unistd.h>

#include <fstream>

#include "dist/mesh_node.h"
#include "kernels/cuda_device.h"
#include "status/status_routes.h"
#include "train/log.h"

namespace intellect {

uint64_t resident_memory_bytes() {
  std::ifstream f("/proc/self/statm");
  uint64_t pages = 0, resident = 0;
  if (!(f >> pages >> resident)) return 0;
  return resident * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

NodeReport::NodeReport(const Config& cfg, const std::string& device, MeshNode* mesh, int64_t start_step)
    : cfg_(cfg), mesh_(mesh), start_step_(start_step), t0_(std::chrono::steady_clock::now()) {
  status_.total_steps = cfg.train.steps;
  status_.inner_step = start_step;
  status_.device = device.substr(0, control::kMaxDevice);
  if (cfg.train.device == "cuda") {
    const int visible = cuda::device_count();
    status_.gpus = static_cast<uint32_t>(cfg.train.gpus > 0 ? cfg.train.gpus : visible);
  }
  if (!cfg.train.metrics_listen.empty()) {
    local_ = std::make_shared<RunStatus>(cfg.mesh.name.empty() ? "intellect node" : "intellect node " + cfg.mesh.name);
    local_->node_joined(mesh ? mesh->id() : 1, cfg.mesh.name.empty() ? "this node" : cfg.mesh.name, "", 0);
    StatusServerOptions so;
    so.listen = cfg.train.metrics_listen;
    so.token_file = cfg.train.metrics_token_file;
    so.what = "train.metrics_listen";
    so.log = [](const std::string& m) { note(m); };
    server_ = std::make_unique<StatusServer>(std::move(so), status_routes(local_));
  }
}

NodeReport::~NodeReport() = default;

void NodeReport::joined(const nlohmann::json& summary) {
  status_.join_s = summary.value("seconds", 0.0);
  status_.join_bytes = summary.value("state_bytes", uint64_t{0}) + summary.value("round_bytes", uint64_t{0});
}

void NodeReport::outer_step(const nlohmann::json& o) {
  if (!o.contains("outer_step")) return;
  status_.outer_step = o["outer_step"].get<int64_t>();
  status_.allreduce_s = o.value("allreduce_s", 0.0);
  status_.outer_bytes = o.value("bytes_sent", uint64_t{0}) + o.value("bytes_received", uint64_t{0});
  status_.outer_retries = static_cast<uint32_t>(o.value("retries", 0));
  if (local_)
    local_->local_outer_step(status_.outer_step, status_.allreduce_s, status_.outer_bytes,
                             mesh_ ? "local" : "alone");
}

void NodeReport::val_loss(double v) {
  status_.has_val_loss = true;
  status_.val_loss = v;
}

void NodeReport::step_done(int64_t steps_done, double loss, double tokens_per_s, double outer_blocked_s) {
  status_.inner_step = steps_done;
  status_.has_loss = true;
  status_.loss = loss;
  status_.tokens_per_s = tokens_per_s;
  status_.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  status_.outer_blocked_s = outer_blocked_s;
  // This run's pace, outer steps included: an ETA that only counted inner
  // steps would be short by every all-reduce still to come.
  const int64_t done_here = steps_done - start_step_;
  status_.eta_s = done_here > 0 ? status_.wall_s / static_cast<double>(done_here) *
                                      static_cast<double>(cfg_.train.steps - steps_done)
                                : -1.0;
  status_.memory_bytes = status_.gpus > 0 ? cuda::device_memory_in_use(0) : resident_memory_bytes();
  if (mesh_) mesh_->set_status(status_);
  if (local_) local_->node_status(mesh_ ? mesh_->id() : 1, status_);
}

}  // namespace intellect
