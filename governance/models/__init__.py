from .api import IdempotencyRecord
from .catalog import (
    STAGE_ORDER,
    ApprovalStage,
    Classification,
    Column,
    ColumnTag,
    Dataset,
    DatasetGroupObjectPermission,
    DatasetKind,
    DatasetUserObjectPermission,
    DataSource,
    SensitiveTag,
    SourceKind,
    SslMode,
    TagStatus,
)
from .drift import DriftFinding, DriftKind, DriftResolution
from .grants import Grant, GrantStatus
from .provisioning import JobAction, JobStatus, ProvisioningJob, SourceHealth, SourcePrincipal
from .requests import AccessLevel, AccessRequest, Approval, Decision, RequestState
from .roles import Role, RoleKind, RoleMembership

__all__ = [
    "STAGE_ORDER",
    "AccessLevel",
    "AccessRequest",
    "Approval",
    "ApprovalStage",
    "Classification",
    "Column",
    "ColumnTag",
    "DataSource",
    "Dataset",
    "DatasetGroupObjectPermission",
    "DatasetKind",
    "DatasetUserObjectPermission",
    "Decision",
    "DriftFinding",
    "DriftKind",
    "DriftResolution",
    "Grant",
    "GrantStatus",
    "IdempotencyRecord",
    "JobAction",
    "JobStatus",
    "ProvisioningJob",
    "RequestState",
    "Role",
    "RoleKind",
    "RoleMembership",
    "SensitiveTag",
    "SourceHealth",
    "SourceKind",
    "SourcePrincipal",
    "SslMode",
    "TagStatus",
]
