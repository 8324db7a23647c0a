#include "status/status_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sodium.h>
#include <sys/socket.h>

#include <cstdarg>
#include <cstring>

#include "util/error.h"
#include "util/file.h"

namespace intellect {

std::pair<std::string, uint16_t> parse_http_listen(const std::string& s, const std::string& what) {
  auto port_of = [&](const std::string& p) -> uint16_t {
    if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos || std::stoul(p) > 65535)
      fail(what, ": '", s, "' has no valid port: give PORT (served on loopback) or IPV4:PORT, e.g. 8080 or "
           "0.0.0.0:8080");
    return static_cast<uint16_t>(std::stoul(p));
  };
  const size_t colon = s.rfind(':');
  if (colon == std::string::npos) return {"127.0.0.1", port_of(s)};
  std::string host = s.substr(0, colon);
  if (host == "localhost") host = "127.0.0.1";
  in_addr a{};
  if (::inet_pton(AF_INET, host.c_str(), &a) != 1)
    fail(what, ": '", host, "' in '", s, "' is not an IPv4 address: give PORT (loopback) or IPV4:PORT, e.g. "
         "0.0.0.0:8080 for every interface");
  return {host, port_of(s.substr(colon + 1))};
}

namespace {

std::string digest(const std::string& v) {
  std::string d(crypto_generichash_BYTES, '\0');
  crypto_generichash(reinterpret_cast<unsigned char*>(d.data()), d.size(),
                     reinterpret_cast<const unsigned char*>(v.data()), v.size(), nullptr, 0);
  return d;
}

std::string read_token(const std::string& path, const std::string& what) {
  std::string t = read_text_file(path);
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ' || t.back() == '\t')) t.pop_back();
  if (t.size() < 16)
    fail(path, ": the ", what, "'s token file holds ", t.size(), " characters; put at least 16 in it (e.g. "
         "openssl rand -hex 32 > ", path, ")");
  if (t.find_first_of(" \t\r\n") != std::string::npos)
    fail(path, ": the ", what, "'s token must be one line without spaces (it travels in an HTTP header)");
  return t;
}

void mhd_log(void* cls, const char* fmt, va_list ap) {
  char buf[512];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  std::string m(buf);
  while (!m.empty() && m.back() == '\n') m.pop_back();
  const auto* log = static_cast<std::function<void(const std::string&)>*>(cls);
  if (*log) (*log)("http: " + m);
}

MHD_Result on_request(void* cls, MHD_Connection* c, const char* url, const char* method, const char*,
                      const char*, size_t* upload_size, void** con_cls) {
  // The first call only announces the request; a body (no GET has one we
  // want) is refused by answering at once.
  (void)upload_size;
  (void)con_cls;
  return static_cast<StatusServer*>(cls)->answer(c, url, method) ? MHD_YES : MHD_NO;
}

void on_connection(void* cls, MHD_Connection* c, void**, MHD_ConnectionNotificationCode code) {
  static_cast<StatusServer*>(cls)->track(c, code == MHD_CONNECTION_NOTIFY_STARTED);
}

bool queue(MHD_Connection* c, const HttpReply& r, bool head) {
  MHD_Response* resp = MHD_create_response_from_buffer(head ? 0 : r.body.size(), const_cast<char*>(r.body.data()),
                                                        MHD_RESPMEM_MUST_COPY);
  if (!resp) return false;
  MHD_add_response_header(resp, "Content-Type", r.content_type.c_str());
  MHD_add_response_header(resp, "Cache-Control", "no-store");
  MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
  // The page is self-contained: nothing from elsewhere may load.
  MHD_add_response_header(resp, "Content-Security-Policy",
                          "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                          "connect-src 'self'; img-src 'self' data:");
  if (r.status == 401) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"intellect\"");
  if (r.status == 405) MHD_add_response_header(resp, "Allow", "GET, HEAD");
  const MHD_Result ok = MHD_queue_response(c, static_cast<unsigned>(r.status), resp);
  MHD_destroy_response(resp);
  return ok == MHD_YES;
}

}  // namespace

StatusServer::StatusServer(StatusServerOptions options, std::function<HttpReply(const std::string&)> handler)
    : opt_(std::move(options)), handler_(std::move(handler)) {
  if (sodium_init() < 0) fail("libsodium failed to initialise");
  const auto [host, port] = parse_http_listen(opt_.listen, opt_.what);
  host_ = host;
  if (!opt_.token_file.empty()) token_digest_ = digest(read_token(opt_.token_file, opt_.what));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  daemon_ = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG, port, nullptr, nullptr, &on_request, this,
      MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_CONNECTION_LIMIT, opt_.max_connections,
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, opt_.max_per_client, MHD_OPTION_CONNECTION_TIMEOUT,
      static_cast<unsigned>(opt_.idle_timeout.count()), MHD_OPTION_CONNECTION_MEMORY_LIMIT, opt_.max_request_bytes,
      MHD_OPTION_NOTIFY_CONNECTION, &on_connection, this, MHD_OPTION_EXTERNAL_LOGGER, &mhd_log, &opt_.log,
      MHD_OPTION_STRICT_FOR_CLIENT, 1,  // malformed requests (no Host, bad header lines) get 400
      MHD_OPTION_END);
  if (!daemon_)
    fail(opt_.what, ": cannot listen on ", host, ":", port, " (", std::strerror(errno),
         "): is the port in use? choose another, or 0 for any free one");
  const MHD_DaemonInfo* info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
  port_ = info ? info->port : port;
  watchdog_ = std::thread([this] { watchdog(); });
  if (opt_.log) {
    opt_.log(str(opt_.what, " at ", url(), token_digest_.empty() ? "" : " (bearer token required)"));
    if (host_ != "127.0.0.1" && token_digest_.empty())
      opt_.log(str(opt_.what, ": anyone who reaches ", host_, ":", port_,
                   " sees the run's status; give a token file to restrict it"));
  }
}

StatusServer::~StatusServer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  if (daemon_) MHD_stop_daemon(daemon_);
}

std::string StatusServer::url() const { return str("http://", host_, ":", port_, "/"); }

bool StatusServer::authorized(MHD_Connection* c) const {
  if (token_digest_.empty()) return true;
  std::string presented;
  if (const char* h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
      h && ::strncasecmp(h, "Bearer ", 7) == 0)
    presented = h + 7;
  // Browsers cannot add a header to the page's own URL: ?token= there too.
  else if (const char* q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "token"))
    presented = q;
  else
    return false;
  // Digests of equal length, compared in constant time: neither the token's
  // bytes nor its length leak through timing.
  const std::string d = digest(presented);
  return sodium_memcmp(d.data(), token_digest_.data(), d.size()) == 0;
}

bool StatusServer::answer(MHD_Connection* c, const char* url, const char* method) {
  {
    // Its request is complete: the deadline starts again for the next one.
    std::lock_guard<std::mutex> lock(mu_);
    auto it = open_.find(c);
    if (it != open_.end()) it->second.since = std::chrono::steady_clock::now();
  }
  const bool head = std::strcmp(method, "HEAD") == 0;
  HttpReply r;
  if (!head && std::strcmp(method, "GET") != 0) {
    r = {405, "text/plain; charset=utf-8", "only GET and HEAD are served here\n"};
  } else if (!authorized(c)) {
    r = {401, "text/plain; charset=utf-8",
         "a bearer token is required: send 'Authorization: Bearer TOKEN' (or open the page as /?token=TOKEN)\n"};
  } else {
    try {
      r = handler_(url);
    } catch (const std::exception& e) {
      r = {500, "text/plain; charset=utf-8", str("the status could not be rendered: ", e.what(), "\n")};
    }
  }
  if (r.status >= 400) refused_.fetch_add(1);
  return queue(c, r, head);
}

void StatusServer::track(MHD_Connection* c, bool opened) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!opened) {
    open_.erase(c);
    return;
  }
  const MHD_ConnectionInfo* info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
  open_[c] = Open{info ? info->connect_fd : -1, std::chrono::steady_clock::now()};
}

// A client that sends its request a byte at a time is never idle, so the
// idle timeout alone would let it hold a connection forever: one whose
// request is not complete by the deadline is shut down (libmicrohttpd then
// sees the socket end and closes the connection on its own thread).
void StatusServer::watchdog() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, std::chrono::milliseconds(200));
    const auto now = std::chrono::steady_clock::now();
    for (auto& [conn, o] : open_) {
      if (o.fd < 0 || now - o.since < opt_.request_deadline) continue;
      ::shutdown(o.fd, SHUT_RDWR);
      o.fd = -1;  // once
      cut_.fetch_add(1);
    }
  }
}

}  // namespace intellect
