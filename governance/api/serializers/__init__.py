"""Serializers: shapes of the API's resources. Reads only; writes are validated here for shape and
then done by the services (policy, separation of duties, audit), never by `serializer.save()`.
Every input serializer takes JSON types as the schema declares them, without coercion
(`StrictTypesMixin`, governance/api/validation.py).

The package is split by area (`shared`, `catalog`, `access`, `grants`, `records`, `aws`); every
shape is re-exported here, so callers keep importing `governance.api.serializers`.
"""

from __future__ import annotations

from .access import (  # noqa: F401
    AccessRequestCreateSerializer,
    AccessRequestDetailSerializer,
    AccessRequestSerializer,
    ApprovalSerializer,
    ApproveSerializer,
    CancelSerializer,
    DecisionSerializer,
    DenySerializer,
    GrantEndSerializer,
    GrantRefSerializer,
    ReasonSerializer,
    RoleMembershipSerializer,
    RoleSerializer,
)
from .aws import (  # noqa: F401
    PrincipalMapSerializer,
    PrincipalSerializer,
    S3DatasetRegisterSerializer,
    S3DatasetSerializer,
)
from .catalog import (  # noqa: F401
    ClassificationSerializer,
    ColumnSerializer,
    DatasetDetailSerializer,
    DatasetSerializer,
    DataSourceSerializer,
    DefinerRiskSerializer,
    InheritedTagSerializer,
    LineageNeighbourSerializer,
)
from .grants import (  # noqa: F401
    DriftFindingSerializer,
    GrantSerializer,
    ProvisioningJobSerializer,
    ReconcileRequestSerializer,
)
from .records import (  # noqa: F401
    ApiTokenSerializer,
    AuditEventSerializer,
)
from .shared import (  # noqa: F401
    AwareDateTimeField,
    DatasetRefSerializer,
    UserRefField,
)
