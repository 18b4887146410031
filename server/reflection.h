// gRPC server reflection (grpc.reflection.v1alpha.ServerReflection), served
// from the program's generated descriptors, for grpcurl, grpc_cli and
// grpcio-reflection clients. consentd serves its own rather than gRPC's
// plugin (libgrpc++_reflection) so that reflection, like every service but
// health, answers only authenticated callers: the plugin's service cannot
// be made to ask.
#ifndef CONSENT_SERVER_REFLECTION_H_
#define CONSENT_SERVER_REFLECTION_H_

#include <string>
#include <vector>

#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "server/authenticator.h"

namespace consent {

// Answers every request of the protocol (list_services, file_by_filename,
// file_containing_symbol, file_containing_extension,
// all_extension_numbers_of_type) from the generated descriptor pool; what
// it does not hold gets NOT_FOUND, an empty request INVALID_ARGUMENT, in the
// stream's error_response. A caller the auth file does not know gets
// UNAUTHENTICATED. Thread safe.
class ReflectionService final : public grpc::reflection::v1alpha::ServerReflection::Service {
 public:
  // `services`: the full names list_services answers with. `auth` (not
  // owned; may be null, then every caller is served) authenticates each
  // stream: any caller of the auth file may reflect, whatever its roles.
  ReflectionService(std::vector<std::string> services, const AuthHolder* auth);

  grpc::Status ServerReflectionInfo(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<grpc::reflection::v1alpha::ServerReflectionResponse,
                               grpc::reflection::v1alpha::ServerReflectionRequest>* stream)
      override;

 private:
  const std::vector<std::string> services_;
  const AuthHolder* auth_;
};

}  // namespace consent

#endif  // CONSENT_SERVER_REFLECTION_H_
