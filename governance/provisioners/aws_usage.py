"""IAM's service-last-accessed data: when an IAM identity last used S3 (the last-used facts on AWS).

Knows no Django. ``GenerateServiceLastAccessedDetails`` starts a job per identity and
``GetServiceLastAccessedDetails`` returns, per service, when the identity last authenticated to it
(IAM tracks about 400 days). It says *S3*, not which bucket or prefix: on an AWS source a use is a
use of S3 by the grantee's identity, which covers every grant of that identity on the source and
anything else it may reach in S3. Where the endpoint does not provide the data (moto's server
answers these calls with an HTTP 500) the source cannot tell, raised as :class:`UsageUnavailable`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Collection

from .aws_iam import AwsTarget, IamPrincipal, client
from .errors import UsageUnavailable

TRACKING_DAYS = 400
SERVICE = "s3"


def _arn(iam: object, principal: IamPrincipal) -> str:
    if principal.kind == "role":
        return str(iam.get_role(RoleName=principal.name)["Role"]["Arn"])  # type: ignore[attr-defined]
    return str(iam.get_user(UserName=principal.name)["User"]["Arn"])  # type: ignore[attr-defined]


def s3_last_accessed(
    target: AwsTarget, principals: Collection[IamPrincipal], *, wait_s: float = 30.0
) -> dict[IamPrincipal, dt.datetime | None]:
    """When each identity last authenticated to S3 (None: not in the tracking period)."""
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    iam = client(target)
    out: dict[IamPrincipal, dt.datetime | None] = {}
    for principal in principals:
        try:
            job = iam.generate_service_last_accessed_details(Arn=_arn(iam, principal))["JobId"]
            deadline = time.monotonic() + wait_s
            while True:
                details = iam.get_service_last_accessed_details(JobId=job)
                if details["JobStatus"] != "IN_PROGRESS":
                    break
                if time.monotonic() > deadline:
                    raise UsageUnavailable("IAM did not finish its service-last-accessed report in time.")
                time.sleep(0.5)
        except (ClientError, BotoCoreError, ResponseParserError) as exc:  # moto: HTML 500
            raise UsageUnavailable(
                "the IAM endpoint does not provide service-last-accessed data"
                f" (iam:GenerateServiceLastAccessedDetails: {str(exc).splitlines()[0][:200]})."
            ) from None
        if details["JobStatus"] != "COMPLETED":
            error = details.get("Error", {}).get("Message", details["JobStatus"])
            raise UsageUnavailable(f"IAM's service-last-accessed report failed ({error}).")
        out[principal] = next(
            (
                s.get("LastAuthenticated")
                for s in details.get("ServicesLastAccessed", [])
                if s["ServiceNamespace"] == SERVICE
            ),
            None,
        )
    return out
