// The options of a ConsentServer started inside the test's process (to
// reach its clock or a fault-injecting file system): loopback on a free
// port, no metrics endpoint, a real RocksDB in `data_dir`, and the shipped
// policy unless another is named, not watched (tests that rewrite it reload
// it themselves). Tests set whatever else they need on
// the copy they get.
#ifndef CONSENT_TESTS_IN_PROCESS_SERVER_H_
#define CONSENT_TESTS_IN_PROCESS_SERVER_H_

#include <string>

#include "server/server.h"
#include "tests/test_util.h"

namespace consent::testing {

inline ServerOptions InProcessOptions(const std::string& data_dir,
                                      const std::string& policy_path = DefaultPolicyPath()) {
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.metrics_listen = "";
  options.data_dir = data_dir;
  options.policy_path = policy_path;
  options.policy_watch_interval = absl::ZeroDuration();
  return options;
}

}  // namespace consent::testing

#endif  // CONSENT_TESTS_IN_PROCESS_SERVER_H_
