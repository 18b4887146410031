#include "server/http_endpoints.h"

#include <civetweb.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"
#include "server/log.h"

namespace consent {

// civetweb's C callbacks, friends of HttpEndpoints.
struct HttpHandlers {
  enum class Path { kMetrics, kHealthz, kReadyz };

  static void Send(mg_connection* connection, int code, absl::string_view content_type,
                   absl::string_view body, bool head) {
    const char* status = code == 200   ? "OK"
                         : code == 503 ? "Service Unavailable"
                         : code == 405 ? "Method Not Allowed"
                                       : "Error";
    std::string header =
        absl::StrCat("HTTP/1.1 ", code, " ", status, "\r\nContent-Type: ", content_type,
                     "\r\nContent-Length: ", body.size(), "\r\nCache-Control: no-store\r\n");
    if (code == 405) absl::StrAppend(&header, "Allow: GET, HEAD\r\n");
    absl::StrAppend(&header, "\r\n");
    mg_write(connection, header.data(), header.size());
    if (!head && !body.empty()) mg_write(connection, body.data(), body.size());
  }

  template <Path path>
  static int Handle(mg_connection* connection, void* data) {
    const auto* endpoints = static_cast<const HttpEndpoints*>(data);
    const mg_request_info* request = mg_get_request_info(connection);
    const bool head = std::strcmp(request->request_method, "HEAD") == 0;
    if (!head && std::strcmp(request->request_method, "GET") != 0) {
      Send(connection, 405, "text/plain; charset=utf-8", "only GET and HEAD\n", false);
      return 405;
    }
    constexpr absl::string_view kText = "text/plain; charset=utf-8";
    switch (path) {
      case Path::kMetrics:
        Send(connection, 200, "text/plain; version=0.0.4; charset=utf-8", endpoints->Metrics(),
             head);
        return 200;
      case Path::kHealthz:
        Send(connection, 200, kText, "ok\n", head);
        return 200;
      case Path::kReadyz: {
        Readiness readiness = endpoints->readiness_();
        const int code = readiness.ready ? 200 : 503;
        Send(connection, code, kText, readiness.body, head);
        return code;
      }
    }
    return 500;
  }

  // civetweb's own messages (a failed bind, a broken connection) go to
  // consentd's log rather than stderr.
  static int LogMessage(const mg_connection*, const char* message) {
    LogWarning("metrics/health HTTP server", {{"error", message}});
    return 1;
  }
};

absl::StatusOr<std::unique_ptr<HttpEndpoints>> HttpEndpoints::Start(
    const std::string& listen, std::vector<std::shared_ptr<prometheus::Collectable>> collectables,
    std::function<Readiness()> readiness) {
  static const unsigned initialized = mg_init_library(0);
  (void)initialized;
  std::unique_ptr<HttpEndpoints> endpoints(new HttpEndpoints());
  endpoints->collectables_ = std::move(collectables);
  endpoints->readiness_ = std::move(readiness);

  // Two threads as prometheus-cpp's Exposer uses: scrapes and probes are
  // a few requests a second. Connections are not kept open between
  // requests past 5 s.
  const char* options[] = {"listening_ports",
                           listen.c_str(),
                           "num_threads",
                           "2",
                           "enable_keep_alive",
                           "yes",
                           "keep_alive_timeout_ms",
                           "5000",
                           "request_timeout_ms",
                           "10000",
                           nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  callbacks.log_message = &HttpHandlers::LogMessage;
  mg_init_data init;
  init.callbacks = &callbacks;
  init.user_data = nullptr;
  init.configuration_options = options;
  char error_text[256] = "";
  unsigned error_code = 0;
  mg_error_data error;
  error.code = &error_code;
  error.text = error_text;
  error.text_buffer_size = sizeof(error_text);
  // Start-up errors come back in `error`; later ones go to the log.
  endpoints->context_ = mg_start2(&init, &error);
  if (endpoints->context_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot serve HTTP on --metrics_listen ", listen, ": ",
                     error_text[0] != '\0' ? error_text : "civetweb failed to start"));
  }
  mg_server_port ports[4];
  const int count = mg_get_server_ports(endpoints->context_, 4, ports);
  endpoints->port_ = count > 0 ? ports[0].port : 0;
  void* self = endpoints.get();
  mg_set_request_handler(endpoints->context_, "/metrics$",
                         &HttpHandlers::Handle<HttpHandlers::Path::kMetrics>, self);
  mg_set_request_handler(endpoints->context_, "/healthz$",
                         &HttpHandlers::Handle<HttpHandlers::Path::kHealthz>, self);
  mg_set_request_handler(endpoints->context_, "/readyz$",
                         &HttpHandlers::Handle<HttpHandlers::Path::kReadyz>, self);
  return endpoints;
}

HttpEndpoints::~HttpEndpoints() {
  if (context_ != nullptr) mg_stop(context_);
}

std::string HttpEndpoints::Metrics() const {
  std::vector<prometheus::MetricFamily> families;
  for (const auto& collectable : collectables_) {
    auto collected = collectable->Collect();
    families.insert(families.end(), std::make_move_iterator(collected.begin()),
                    std::make_move_iterator(collected.end()));
  }
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace consent
