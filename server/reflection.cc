#include "server/reflection.h"

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "server/errors.h"

namespace consent {
namespace {

namespace reflection = grpc::reflection::v1alpha;
using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptor;

void SetError(grpc::StatusCode code, std::string message,
              reflection::ServerReflectionResponse* response) {
  reflection::ErrorResponse* error = response->mutable_error_response();
  error->set_error_code(static_cast<int32_t>(code));
  error->set_error_message(std::move(message));
}

// `file` and each file it depends on, directly or not, each once. As
// gRPC's own reflection does, every answer carries the whole closure,
// whatever the stream sent before: a client may drop its cache.
void SendFile(const FileDescriptor* file, reflection::ServerReflectionResponse* response) {
  reflection::FileDescriptorResponse* files = response->mutable_file_descriptor_response();
  absl::flat_hash_set<std::string> sent;
  std::vector<const FileDescriptor*> pending = {file};
  while (!pending.empty()) {
    const FileDescriptor* next = pending.back();
    pending.pop_back();
    if (!sent.insert(next->name()).second) continue;
    google::protobuf::FileDescriptorProto proto;
    next->CopyTo(&proto);
    files->add_file_descriptor_proto(proto.SerializeAsString());
    for (int i = 0; i < next->dependency_count(); ++i) pending.push_back(next->dependency(i));
  }
}

// The answer to `request` of a server offering `services`.
void Answer(const std::vector<std::string>& services,
            const reflection::ServerReflectionRequest& request,
            reflection::ServerReflectionResponse* response) {
  const DescriptorPool* pool = DescriptorPool::generated_pool();
  response->set_valid_host(request.host());
  *response->mutable_original_request() = request;
  switch (request.message_request_case()) {
    case reflection::ServerReflectionRequest::kFileByFilename: {
      const FileDescriptor* file = pool->FindFileByName(request.file_by_filename());
      if (file == nullptr) {
        return SetError(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("no file \"", request.file_by_filename(), "\""), response);
      }
      return SendFile(file, response);
    }
    case reflection::ServerReflectionRequest::kFileContainingSymbol: {
      const FileDescriptor* file = pool->FindFileContainingSymbol(request.file_containing_symbol());
      if (file == nullptr) {
        return SetError(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("no symbol \"", request.file_containing_symbol(), "\""),
                        response);
      }
      return SendFile(file, response);
    }
    case reflection::ServerReflectionRequest::kFileContainingExtension: {
      const reflection::ExtensionRequest& ask = request.file_containing_extension();
      const Descriptor* type = pool->FindMessageTypeByName(ask.containing_type());
      const FieldDescriptor* extension =
          type == nullptr ? nullptr : pool->FindExtensionByNumber(type, ask.extension_number());
      if (extension == nullptr) {
        return SetError(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("no extension ", ask.extension_number(), " of \"",
                                     ask.containing_type(), "\""),
                        response);
      }
      return SendFile(extension->file(), response);
    }
    case reflection::ServerReflectionRequest::kAllExtensionNumbersOfType: {
      const Descriptor* type = pool->FindMessageTypeByName(request.all_extension_numbers_of_type());
      if (type == nullptr) {
        return SetError(
            grpc::StatusCode::NOT_FOUND,
            absl::StrCat("no message type \"", request.all_extension_numbers_of_type(), "\""),
            response);
      }
      std::vector<const FieldDescriptor*> extensions;
      pool->FindAllExtensions(type, &extensions);
      reflection::ExtensionNumberResponse* numbers =
          response->mutable_all_extension_numbers_response();
      numbers->set_base_type_name(type->full_name());
      for (const FieldDescriptor* extension : extensions) {
        numbers->add_extension_number(extension->number());
      }
      return;
    }
    case reflection::ServerReflectionRequest::kListServices: {
      reflection::ListServiceResponse* list = response->mutable_list_services_response();
      for (const std::string& name : services) list->add_service()->set_name(name);
      return;
    }
    case reflection::ServerReflectionRequest::MESSAGE_REQUEST_NOT_SET:
      break;
  }
  SetError(grpc::StatusCode::INVALID_ARGUMENT, "the request asks for nothing (message_request)",
           response);
}

}  // namespace

ReflectionService::ReflectionService(std::vector<std::string> services, const AuthHolder* auth)
    : services_(std::move(services)), auth_(auth) {}

grpc::Status ReflectionService::ServerReflectionInfo(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<reflection::ServerReflectionResponse,
                             reflection::ServerReflectionRequest>* stream) {
  if (auth_ != nullptr) {
    if (absl::StatusOr<Authorized> who = auth_->Authenticate(*context); !who.ok()) {
      return ToGrpcStatus(who.status());
    }
  }
  reflection::ServerReflectionRequest request;
  while (stream->Read(&request)) {
    reflection::ServerReflectionResponse response;
    Answer(services_, request, &response);
    if (!stream->Write(response)) break;
  }
  return grpc::Status::OK;
}

}  // namespace consent
