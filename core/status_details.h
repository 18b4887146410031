// Error details (google.rpc.BadRequest, ErrorInfo, PreconditionFailure)
// carried on an absl::Status as payloads, so code without gRPC can give
// them; the service layer turns them into the google.rpc.Status details of
// the grpc-status-details-bin trailer (server/errors.h).
#ifndef CONSENT_CORE_STATUS_DETAILS_H_
#define CONSENT_CORE_STATUS_DETAILS_H_

#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace consent {

// Attaches `detail` to `status` under its type URL
// (type.googleapis.com/<full name>), as a google.protobuf.Any would hold it.
void AttachDetail(absl::Status& status, const google::protobuf::Message& detail);

}  // namespace consent

#endif  // CONSENT_CORE_STATUS_DETAILS_H_
