"""AWS adapter: an S3 prefix's IAM policy documents, applied with boto3 and read back; the client,
error classification and policy primitives that :mod:`governance.provisioners.aws_policy` builds on.

The package's modules, in layers: ``targets`` (what and who), ``plans`` (names and documents,
linted), ``calls`` (the client, errors, apply, remove, verify), ``observed`` (what the reconciler
reads, and the portal's own policy). Everything is re-exported here, so callers keep writing
``aws_iam.apply(...)``.

The provisioning engine holds one policy per (principal, source) with a statement group per dataset
(:mod:`~governance.provisioners.aws_policy`). This package's :func:`plan`/:func:`apply` keep the
first generation's layout, one policy per (principal, dataset) named by :func:`policy_name`, so
that such policies are recognised and converged (and for the adapter's own tests).

Like :mod:`governance.provisioners.postgres`, this package knows no Django: the caller says who
(:class:`IamPrincipal`), where (:class:`S3Location`) and at which level.

* **Deterministic names** under the portal's path (``/governance/<source>/``), so that applying
  twice changes nothing and the reconciler lists everything the portal manages with one
  ``ListPolicies(PathPrefix=...)``.
* **Least privilege, checked.** Read is ``s3:GetObject`` on ``arn:aws:s3:::bucket/prefix/*`` and
  ``s3:ListBucket`` on the bucket only for keys under the prefix (``s3:prefix`` condition); write
  adds ``s3:PutObject`` and ``s3:DeleteObject`` on the prefix; a read grant also carries an
  explicit Deny of those writes, so another policy's Allow cannot widen it. No ``*`` resource and
  no wildcard action is ever generated, and every document is run through ``parliament``
  (:func:`lint`) before it is applied: a finding is a permanent failure, never a warning.
* **Updates keep IAM's limit of five versions**: a changed document becomes a new default version
  after the oldest non-default ones are deleted; revoking detaches from every entity, deletes the
  non-default versions, then the policy (AWS refuses to delete an attached policy or one with
  versions; moto does not, so the order is ours to keep).
* **Verification reads back** the attachment and the default version's document and compares them
  with the plan: what IAM holds, not what the calls returned.
* Errors become :class:`~governance.provisioners.errors.TransientError` (throttling, endpoint
  unreachable, 5xx: retried) or :class:`~governance.provisioners.errors.PermanentError` (access
  denied, malformed document: shown to an operator), with one-line messages and no credentials.
"""

from __future__ import annotations

from .calls import (  # noqa: F401
    _TRANSIENT_CODES,
    _account,
    _attach_call,
    _attached,
    _default_document,
    _entities,
    _errors,
    _is,
    _remove_arn,
    _write,
    apply,
    client,
    detach_others,
    policy_arn,
    probe,
    remove_policy,
    verify,
)
from .observed import (  # noqa: F401
    ManagedPolicy,
    observe,
    portal_policy_document,
)
from .plans import (  # noqa: F401
    Plan,
    lint,
    plan,
    policy_document,
    policy_name,
    policy_path,
    render,
)
from .targets import (  # noqa: F401
    _BUCKET,
    _IAM_NAME,
    _PREFIX,
    _SOURCE,
    LEVELS,
    LIST_ACTION,
    MAX_VERSIONS,
    POLICY_VERSION,
    READ_ACTIONS,
    WRITE_ACTIONS,
    AwsTarget,
    IamPrincipal,
    S3Location,
)
