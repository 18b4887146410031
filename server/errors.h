// The one place where absl::Status becomes grpc::Status. Details attached
// to an absl::Status as payloads (core/status_details.h: google.rpc.
// BadRequest and friends) travel as google.rpc.Status details in the
// grpc-status-details-bin trailer.
#ifndef CONSENT_SERVER_ERRORS_H_
#define CONSENT_SERVER_ERRORS_H_

#include "absl/status/status.h"
#include "core/status_details.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/support/status.h"

namespace consent {

grpc::Status ToGrpcStatus(const absl::Status& status);

// The same as a message (code, message, the payloads as details), for an
// error carried inside a response: a batch item's Decision.error.
google::rpc::Status ToRpcStatus(const absl::Status& status);

}  // namespace consent

#endif  // CONSENT_SERVER_ERRORS_H_
