// The service layer's wire-level code, for the hot paths: a BatchCheck
// request parsed onto an arena, its response written by hand
// (EncodedDecisions), StreamCheck's messages handled the same way on a
// per-stream arena, and BatchRecordNotices' messages on an arena
// (ArenaMessageAllocator).
// Everything else goes through gRPC's generated (de)serialization.
#ifndef CONSENT_SERVER_WIRE_H_
#define CONSENT_SERVER_WIRE_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "consent/v1/registry.pb.h"
#include "google/protobuf/arena.h"
#include "grpcpp/impl/service_type.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/message_allocator.h"
#include "grpcpp/support/method_handler.h"
#include "grpcpp/support/status.h"
#include "grpcpp/support/sync_stream.h"
#include "server/registry_checks.h"

namespace consent {

// Arena block sizes for a batch of checks (1,000 items: a few blocks).
google::protobuf::ArenaOptions BatchArenaOptions();

// A unary callback method's request and response on one arena of their
// own (gRPC's MessageAllocator): a batch write's thousands of strings cost
// no malloc and free each. gRPC releases the holder, and the arena, once
// the call is done. Thread safe.
template <typename Request, typename Response>
class ArenaMessageAllocator final : public grpc::MessageAllocator<Request, Response> {
 public:
  grpc::MessageHolder<Request, Response>* AllocateMessages() override { return new Holder(); }

 private:
  class Holder final : public grpc::MessageHolder<Request, Response> {
   public:
    Holder() : arena_(BatchArenaOptions()) {
      this->set_request(google::protobuf::Arena::CreateMessage<Request>(&arena_));
      this->set_response(google::protobuf::Arena::CreateMessage<Response>(&arena_));
    }
    void Release() override { delete this; }

   private:
    google::protobuf::Arena arena_;
  };
};

// A batch's decisions as the bytes of a BatchCheckResponse (the same as a
// StreamCheckResponse's), written directly: building a v1::Decision each
// (and a copy of the policy version each) and serializing them took about
// 9% of consentd's CPU under BatchCheck (docs/performance.md). The bytes
// are what protobuf would write for the same decisions
// (tests/server/encoded_decisions_test.cc compares them, and check_request_fuzzer
// parses them). Not thread safe.
class EncodedDecisions final : public DecisionSink {
 public:
  const std::string& bytes() const { return bytes_; }
  // Decisions by reason (index: the reason's number), for metrics; index
  // 0 (DECISION_REASON_UNSPECIFIED) counts the invalid items.
  absl::Span<const int64_t> tally() const { return tally_; }

  // `n` decisions under `policy` (its version) follow, each added by Add.
  void Reserve(int n, const CompiledPolicy& policy) override { Reserve(n, policy.version()); }
  void Reserve(int n, absl::string_view policy_version);
  void Add(const Verdict& verdict, int64_t revision) override;
  // A Decision holding only its error (rare: through protobuf).
  void AddInvalid(const absl::Status& problem) override;
  // BatchCheckResponse.revision, after the decisions (protobuf's order).
  void Finish(int64_t revision) override;

 private:
  std::string bytes_;
  std::string version_field_;  // policy_version's tag, length and bytes
  std::array<int64_t, v1::DecisionReason_ARRAYSIZE> tally_{};
};

// A raw BatchCheck call's request parsed onto `arena`; null when the bytes
// are not a well-formed request (BadBatchCheckRequest() is the status).
v1::BatchCheckRequest* ParseBatchCheck(const grpc::ByteBuffer& bytes,
                                       google::protobuf::Arena* arena);
grpc::Status BadBatchCheckRequest();
// `bytes` (copied) as a raw call's response.
void SetResponseBytes(const std::string& bytes, grpc::ByteBuffer* response);

// StreamCheck with raw messages, on the synchronous API: a
// StreamCheckRequest has a BatchCheckRequest's fields (names, numbers and
// types; tests/server/encoded_decisions_test.cc compares the
// descriptors), so each message is parsed by ParseBatchCheck, and a
// StreamCheckResponse is a BatchCheckResponse, written as EncodedDecisions.
// A service serves it so by passing StreamCheckMethodIndex() and
// NewRawStreamCheckHandler(...) to grpc::Service::MarkMethodStreamed in
// its constructor.
using RawCheckStream = grpc::ServerReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>;
// A handler that runs `serve` for each StreamCheck call on `service`
// (gRPC's synchronous handler over ByteBuffers, as its generated code
// builds for typed methods); the service takes ownership of it.
grpc::internal::MethodHandler* NewRawStreamCheckHandler(
    grpc::Service* service,
    std::function<grpc::Status(grpc::ServerContext*, RawCheckStream*)> serve);
// StreamCheck's position among ConsentRegistry's methods: the proto's
// order, the order gRPC's generated service adds them in.
int StreamCheckMethodIndex();
// Message `index` of a stream (from 0) does not parse: INVALID_ARGUMENT.
grpc::Status BadStreamCheckMessage(int64_t index);

// The arena of a StreamCheck stream: each message on it, reset between
// messages. Its first block, kept across resets, holds a message of 1,000
// items (with the response that was once on it too: 312,528 bytes by
// Arena::SpaceUsed), so such a message costs no allocation. (Messages on
// the heap, reused, still freed and reallocated every item's content and
// create_time: docs/performance.md.) Not thread safe.
class StreamArena {
 public:
  StreamArena();
  // The arena, emptied: what was on it is gone.
  google::protobuf::Arena* Next() {
    arena_.Reset();
    return &arena_;
  }

 private:
  static constexpr size_t kFirstBlock = 512 << 10;
  std::unique_ptr<char[]> first_block_;
  google::protobuf::Arena arena_;
};

}  // namespace consent

#endif  // CONSENT_SERVER_WIRE_H_
