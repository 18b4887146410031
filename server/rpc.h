// The project's RPCs, each with its name (metrics, logs, errors) and the
// roles that may call it (docs/security.md has the table).
#ifndef CONSENT_SERVER_RPC_H_
#define CONSENT_SERVER_RPC_H_

#include "server/auth.h"

namespace consent {

// The methods of consent.v1.ConsentRegistry and consent.v1.ConsentAdmin.
enum class Rpc {
  kSetPreference,
  kBatchSetPreferences,
  kUpdateSubject,
  kSetContentExclusion,
  kDeleteSubject,
  kGetSubject,
  kCheck,
  kBatchCheck,
  kStreamCheck,
  kListHistory,
  kWatchChanges,
  kGetPolicy,
  kReloadPolicy,
  kCreateBackup,
  kVerifyAuditLog,
  kReloadAuth,
  kRecordNotice,
  kBatchRecordNotices,
  kGetSubjectSummary,
  kImportSubjects,
  kExportSnapshot,
  kCount,
};
constexpr int kRpcCount = static_cast<int>(Rpc::kCount);

struct RpcInfo {
  const char* service;  // "consent.v1.ConsentRegistry"
  const char* method;   // "Check"
  const char* type;     // grpc-prometheus's grpc_type: "unary", "client_stream", "server_stream",
                        // "bidi_stream"
  bool batch;           // observes consent_batch_items
  RoleSet roles;        // a caller needs one of these
};

const RpcInfo& InfoOf(Rpc rpc);
inline const RpcInfo& InfoOf(int index) { return InfoOf(static_cast<Rpc>(index)); }

}  // namespace consent

#endif  // CONSENT_SERVER_RPC_H_
