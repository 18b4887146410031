#include "server/rpc.h"

namespace consent {
namespace {

constexpr char kRegistryService[] = "consent.v1.ConsentRegistry";
constexpr char kAdminService[] = "consent.v1.ConsentAdmin";

constexpr RoleSet kChecker = RoleBit(v1::ROLE_CHECKER);
constexpr RoleSet kWriter = RoleBit(v1::ROLE_WRITER);
constexpr RoleSet kAuditor = RoleBit(v1::ROLE_AUDITOR);
constexpr RoleSet kAdmin = RoleBit(v1::ROLE_ADMIN);

// In the order of enum Rpc.
constexpr RpcInfo kRpcs[] = {
    {kRegistryService, "SetPreference", "unary", false, kWriter},
    {kRegistryService, "BatchSetPreferences", "unary", true, kWriter},
    {kRegistryService, "UpdateSubject", "unary", false, kWriter},
    {kRegistryService, "SetContentExclusion", "unary", false, kWriter},
    {kRegistryService, "DeleteSubject", "unary", false, kWriter},
    {kRegistryService, "GetSubject", "unary", false, kWriter | kAuditor},
    {kRegistryService, "Check", "unary", false, kChecker},
    {kRegistryService, "BatchCheck", "unary", true, kChecker},
    {kRegistryService, "StreamCheck", "bidi_stream", true, kChecker},
    {kRegistryService, "ListHistory", "unary", false, kAuditor},
    {kRegistryService, "WatchChanges", "server_stream", false, kChecker | kAuditor},
    {kAdminService, "GetPolicy", "unary", false, kChecker | kAuditor | kAdmin},
    {kAdminService, "ReloadPolicy", "unary", false, kAdmin},
    {kAdminService, "CreateBackup", "unary", false, kAdmin},
    {kAdminService, "VerifyAuditLog", "unary", false, kAuditor | kAdmin},
    {kAdminService, "ReloadAuth", "unary", false, kAdmin},
    {kRegistryService, "RecordNotice", "unary", false, kWriter},
    {kRegistryService, "BatchRecordNotices", "unary", true, kWriter},
    {kRegistryService, "GetSubjectSummary", "unary", false, kWriter | kAuditor},
    {kRegistryService, "ImportSubjects", "client_stream", true, kWriter},
    {kAdminService, "ExportSnapshot", "server_stream", false, kAdmin},
};
static_assert(sizeof(kRpcs) / sizeof(kRpcs[0]) == static_cast<size_t>(kRpcCount));

}  // namespace

const RpcInfo& InfoOf(Rpc rpc) { return kRpcs[static_cast<int>(rpc)]; }

}  // namespace consent
