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
    LineageStatus,
    SensitiveTag,
    SourceKind,
    SslMode,
    TagStatus,
    tag_label,
)
from .credentials import CredentialRotation, RotationStatus, RotationTrigger
from .drift import DriftFinding, DriftKind, DriftResolution
from .grants import Grant, GrantStatus
from .lineage import ColumnDerivation, DatasetDependency
from .operations import FINISHED_STATES, Operation, OperationKind, OperationState
from .provisioning import JobAction, JobStatus, ProvisioningJob, SourceHealth, SourcePrincipal
from .requests import UNPROVISIONED_LEVELS, AccessLevel, AccessRequest, Approval, Decision, RequestState
from .roles import MembershipSource, Role, RoleKind, RoleMembership
from .row_filters import GranteeAttributes, RowFilter
from .treatments import TREATMENT_ORDER, GovernedSchema, Treatment, TreatmentRule, treated
from .usage import GrantUsage, SourceUsage

__all__ = [
    "FINISHED_STATES",
    "STAGE_ORDER",
    "TREATMENT_ORDER",
    "UNPROVISIONED_LEVELS",
    "AccessLevel",
    "AccessRequest",
    "Approval",
    "ApprovalStage",
    "Classification",
    "Column",
    "ColumnDerivation",
    "ColumnTag",
    "CredentialRotation",
    "DataSource",
    "Dataset",
    "DatasetDependency",
    "DatasetGroupObjectPermission",
    "DatasetKind",
    "DatasetUserObjectPermission",
    "Decision",
    "DriftFinding",
    "DriftKind",
    "DriftResolution",
    "GovernedSchema",
    "Grant",
    "GrantStatus",
    "GrantUsage",
    "GranteeAttributes",
    "IdempotencyRecord",
    "JobAction",
    "JobStatus",
    "LineageStatus",
    "MembershipSource",
    "Operation",
    "OperationKind",
    "OperationState",
    "ProvisioningJob",
    "RequestState",
    "Role",
    "RoleKind",
    "RoleMembership",
    "RotationStatus",
    "RotationTrigger",
    "RowFilter",
    "SensitiveTag",
    "SourceHealth",
    "SourceKind",
    "SourcePrincipal",
    "SourceUsage",
    "SslMode",
    "TagStatus",
    "Treatment",
    "TreatmentRule",
    "tag_label",
    "treated",
]
