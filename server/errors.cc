#include "server/errors.h"

#include <string>

#include "google/protobuf/any.pb.h"

namespace consent {

google::rpc::Status ToRpcStatus(const absl::Status& status) {
  google::rpc::Status rpc_status;
  // absl and gRPC share the canonical code numbers.
  rpc_status.set_code(static_cast<int>(status.code()));
  rpc_status.set_message(std::string(status.message()));
  status.ForEachPayload([&](absl::string_view type_url, const absl::Cord& value) {
    google::protobuf::Any* any = rpc_status.add_details();
    any->set_type_url(std::string(type_url));
    any->set_value(std::string(value));
  });
  return rpc_status;
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const auto code = static_cast<grpc::StatusCode>(status.code());
  google::rpc::Status rpc_status = ToRpcStatus(status);
  if (rpc_status.details_size() == 0) return grpc::Status(code, rpc_status.message());
  return grpc::Status(code, rpc_status.message(), rpc_status.SerializeAsString());
}

}  // namespace consent
