// consentd's HTTP port (--metrics_listen): /metrics for Prometheus, and
// /healthz and /readyz for probes (Kubernetes, load balancers, podman's
// HEALTHCHECK), which cannot speak gRPC health. Served by civetweb, the
// HTTP server prometheus-cpp's own Exposer wraps; the Exposer itself can
// only answer 200, and a probe needs 503.
//
//   /metrics  every registered Collectable in Prometheus' text format 0.0.4.
//   /healthz  200 "ok" while the process answers (liveness).
//   /readyz   200 or 503 with what the readiness callback says: a few
//             lines of plain text, the first "ready" or "not ready: why".
//
// GET and HEAD only (405 otherwise); other paths get 404. Thread safe.
#ifndef CONSENT_SERVER_HTTP_ENDPOINTS_H_
#define CONSENT_SERVER_HTTP_ENDPOINTS_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"

struct mg_context;

namespace consent {

// What /readyz answers.
struct Readiness {
  bool ready = false;
  // Plain text, one fact per line, ending in a newline.
  std::string body;
};

class HttpEndpoints {
 public:
  // Binds `listen` ("host:port"; port 0 picks one) and serves on 2
  // threads. `collectables` are scraped in order on each /metrics request
  // and must outlive this object; `readiness` is called on each /readyz
  // request from civetweb's threads and must be thread safe. Errors:
  // FAILED_PRECONDITION naming the address when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpEndpoints>> Start(
      const std::string& listen, std::vector<std::shared_ptr<prometheus::Collectable>> collectables,
      std::function<Readiness()> readiness);

  // Stops serving; requests in progress finish first.
  ~HttpEndpoints();
  HttpEndpoints(const HttpEndpoints&) = delete;
  HttpEndpoints& operator=(const HttpEndpoints&) = delete;

  // The port actually bound.
  int port() const { return port_; }

  // The text /metrics serves (also for tests).
  std::string Metrics() const;

 private:
  HttpEndpoints() = default;

  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  std::function<Readiness()> readiness_;
  mg_context* context_ = nullptr;
  int port_ = 0;

  friend struct HttpHandlers;
};

}  // namespace consent

#endif  // CONSENT_SERVER_HTTP_ENDPOINTS_H_
