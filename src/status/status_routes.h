// What the status server serves for a RunStatus: "/" the page (built into
// the binary from status_page.html), "/api/status" the snapshot as JSON,
// "/metrics" Prometheus' text format; 404 for anything else. The handler
// runs on the server's thread and holds the RunStatus lock only to copy it.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "status/run_status.h"
#include "status/status_server.h"

namespace intellect {

std::function<HttpReply(const std::string& path)> status_routes(std::shared_ptr<const RunStatus> status);
const char* status_page_html();

}  // namespace intellect
