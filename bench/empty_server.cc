// consent-empty-server: the gRPC floor for checks on this machine. The same
// server set-up as consentd (Check on the callback API; BatchCheck on the
// callback API's raw form, its request parsed onto an arena and its
// response written by hand; StreamCheck synchronous, each message on an
// arena; health checking and reflection on; the same message size limit
// and threads), but Check, BatchCheck and StreamCheck answer a fixed
// decision per item at once: no validation, storage or rules, only the
// messages' own parsing and serialization. consent-bench run against it
// and against consentd in the same session gives the share of a check's
// cost that is gRPC and protobuf itself (docs/performance.md).
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/synchronization/mutex.h"
#include "consent/v1/registry.grpc.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/registry_service.h"
#include "server/server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0", "host:port; port 0 picks a free port.");

namespace {

constexpr char kVersion[] = "empty";

void FixedDecision(consent::v1::Decision* decision) {
  decision->set_allowed(true);
  decision->set_reason(consent::v1::DECISION_REASON_ALLOWED_DEFAULT);
  decision->set_policy_version(kVersion);
}

namespace v1 = consent::v1;

class EmptyRegistry final
    : public v1::ConsentRegistry::WithCallbackMethod_Check<
          v1::ConsentRegistry::WithRawCallbackMethod_BatchCheck<v1::ConsentRegistry::Service>> {
 public:
  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context, const v1::CheckRequest*,
                                  v1::CheckResponse* response) override {
    FixedDecision(response->mutable_decision());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* BatchCheck(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    google::protobuf::Arena arena(consent::BatchArenaOptions());
    const v1::BatchCheckRequest* message = consent::ParseBatchCheck(*request, &arena);
    if (message == nullptr) {
      reactor->Finish(consent::BadBatchCheckRequest());
      return reactor;
    }
    consent::EncodedDecisions decisions;
    decisions.Reserve(message->items_size(), kVersion);
    for (int i = 0; i < message->items_size(); ++i) {
      decisions.Add(consent::Verdict{consent::v1::DECISION_REASON_ALLOWED_DEFAULT, 10}, 0);
    }
    consent::SetResponseBytes(decisions.bytes(), response);
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::Status StreamCheck(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<consent::v1::StreamCheckResponse, consent::v1::StreamCheckRequest>*
          stream) override {
    consent::StreamArena messages;
    for (;;) {
      google::protobuf::Arena* arena = messages.Next();
      auto* request = google::protobuf::Arena::CreateMessage<v1::StreamCheckRequest>(arena);
      if (!stream->Read(request)) break;
      auto& response = *google::protobuf::Arena::CreateMessage<v1::StreamCheckResponse>(arena);
      response.mutable_decisions()->Reserve(request->items_size());
      for (int i = 0; i < request->items_size(); ++i) FixedDecision(response.add_decisions());
      if (!stream->Write(response)) break;
    }
    return grpc::Status::OK;
  }
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);  // as consentd
  EmptyRegistry service;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string listen = absl::GetFlag(FLAGS_listen);
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  consent::ConfigureServerBuilder(consent::ServerOptions().max_receive_message_bytes, &builder);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr << "consent-empty-server: cannot listen on " << listen << "\n";
    return 1;
  }
  std::cout << "consentd listening on " << listen.substr(0, listen.rfind(':')) << ":" << port
            << std::endl;
  server->Wait();
}
