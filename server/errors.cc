#include "server/errors.h"

#include <string>

#include "google/protobuf/any.pb.h"
#include "google/rpc/status.pb.h"

namespace consent {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbers.
  const auto code = static_cast<grpc::StatusCode>(status.code());
  const std::string message(status.message());
  google::rpc::Status rpc_status;
  status.ForEachPayload([&](absl::string_view type_url, const absl::Cord& value) {
    google::protobuf::Any* any = rpc_status.add_details();
    any->set_type_url(std::string(type_url));
    any->set_value(std::string(value));
  });
  if (rpc_status.details_size() == 0) return grpc::Status(code, message);
  rpc_status.set_code(static_cast<int>(code));
  rpc_status.set_message(message);
  return grpc::Status(code, message, rpc_status.SerializeAsString());
}

}  // namespace consent
