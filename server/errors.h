// The one place where absl::Status becomes grpc::Status. Details attached
// to an absl::Status as payloads (google.rpc.BadRequest and friends) travel
// as google.rpc.Status details in the grpc-status-details-bin trailer.
#ifndef CONSENT_SERVER_ERRORS_H_
#define CONSENT_SERVER_ERRORS_H_

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/status.h"

namespace consent {

// Attaches `detail` (packed as a google.protobuf.Any) to `status`.
void AttachDetail(absl::Status& status, const google::protobuf::Message& detail);

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace consent

#endif  // CONSENT_SERVER_ERRORS_H_
