#include "status/status_routes.h"

#include "status/status_render.h"
#include "status_page.h"  // generated from status_page.html

namespace intellect {

const char* status_page_html() { return kStatusPageHtml; }

std::function<HttpReply(const std::string& path)> status_routes(std::shared_ptr<const RunStatus> status) {
  return [status](const std::string& path) -> HttpReply {
    if (path == "/" || path == "/index.html") return {200, "text/html; charset=utf-8", kStatusPageHtml};
    if (path == "/api/status") return {200, "application/json", status_json(status->snapshot()).dump()};
    if (path == "/metrics")
      return {200, "text/plain; version=0.0.4; charset=utf-8", prometheus_text(status->snapshot())};
    return {404, "text/plain; charset=utf-8", "not found: this server has /, /api/status and /metrics\n"};
  };
}

}  // namespace intellect
