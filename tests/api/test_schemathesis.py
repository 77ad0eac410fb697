"""The published OpenAPI schema, fuzzed with every check schemathesis has (`--checks all`).

schemathesis runs against the app served on loopback (pytest-django's live server on the test
database), every operation, with a token of a governance admin holding every scope. Beyond "no 5xx"
and "every response matches the schema", `all` holds the API to its contract in both directions:
what the schema calls invalid must be refused (negative_data_rejection), what it calls valid must be
accepted (positive_data_acceptance), and authentication, methods and headers must behave.

The fuzzer is given the world's real ids, slugs and usernames (schemathesis dictionaries), so valid
requests reach the services instead of stopping at "no such dataset". What the schema cannot
express is listed in `BUSINESS_RULES` below, per operation: those operations may refuse a
schema-valid request with a 400 (schemathesis' documented way to allow a rejection "the schema
can't express, such as an unknown id or a cross-field rule"). Nothing else is excluded.

SCHEMATHESIS_MAX_EXAMPLES (default 10) sets the examples per operation, SCHEMATHESIS_SEED the seed
(fixed by default, so that a run is reproducible).

The operations are fuzzed in SHARDS tests, each on its own share of the schema's paths (every path
in exactly one share, checked below): one run of every operation took over 13 minutes under load,
alone at the end of `make test` while the other test process idled; shards run side by side.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from governance.models import AccessRequest, Classification, Column, Dataset, ProvisioningJob, Role
from tests.api.conftest import World

EXAMPLES = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "10")
SHARDS = 4
SEED = os.environ.get("SCHEMATHESIS_SEED", "20261124")

# Rules a schema-valid body can break, which JSON Schema cannot state (they depend on other rows,
# on the target object's state, or on the caller). On these operations a 400 in the error envelope
# is a correct answer to schema-valid data; on every other operation it is a finding.
BUSINESS_RULES = {
    "POST /api/v1/access-requests/": "the dataset, role and columns named must exist; the dataset's "
    "classification policy (justification required, longest duration, PII columns only when named)",
    "POST /api/v1/row-filters/": "the dataset named must exist and be of a PostgreSQL source; the expression is "
    "a predicate of the row filter grammar over the dataset's columns (docs/privacy.md)",
    "POST /api/v1/row-filters/security/": "the dataset named must exist",
    "POST /api/v1/grants/{id}/end/": "the new end is in the future (a date-time the fuzzer makes may be now), within "
    "the classification's longest duration",
    "POST /api/v1/sources/": "names are unique; default_classification names an existing classification; "
    "password_ref is env:NAME, aws-sm:ID#KEY, vault:PATH#KEY or vault-db:MOUNT/ROLE (PostgreSQL only); the model's "
    "checks of the fields together",
    "PUT /api/v1/sources/{name}/": "as POST /api/v1/sources/; IAM-provisioned sources keep their name and account",
    "PATCH /api/v1/sources/{name}/": "as PUT /api/v1/sources/{name}/",
    "POST /api/v1/sources/{name}/principals/": "the user or role named must exist; a user or a role, not both "
    "or neither; not mapped already; a name valid for the source's kind",
    "POST /api/v1/sources/{name}/s3-datasets/": "only on AWS sources; the classification and owner named must "
    "exist; a valid bucket and prefix, not registered already",
    "POST /api/v1/reviews/campaigns/": "the source, classification, role and dataset owner named must exist; a cron "
    "expression (five valid fields) exactly when the recurrence is cron",
    "POST /api/v1/reviews/items/{id}/decide/": "a comment to keep Restricted access or to shorten; shorten: a grant, "
    "a new end in the future and earlier than the current one",
    "POST /api/v1/reviews/items/decide/": "as POST /api/v1/reviews/items/{id}/decide/, for every item named",
    "POST /api/v1/reviews/items/{id}/delegate/": "the person named exists, is an eligible reviewer of the item, and "
    "is not its reviewer already nor the holder of the access",
    "POST /api/v1/quality/checks/": "the dataset exists and is a PostgreSQL table present on its source; the column "
    "is one of its columns; the params the kind needs; the threshold within the kind's range; names unique",
    "PATCH /api/v1/quality/checks/{id}/": "as POST /api/v1/quality/checks/, merged with the check as it is",
    "POST /api/v1/quality/checks/{id}/review/": "only owner-written SQL is reviewed, by someone other than its author",
    "POST /api/v1/quality/datasets/{dataset}/run/": "only PostgreSQL datasets; not while a run is in progress",
    "GET /api/v1/quality/as-code/": "each dataset named is <source>:<schema>.<name> of the catalog",
    "POST /api/v1/quality/as-code/plan/": "each dataset named exists, once; each check as POST /api/v1/quality/checks/ "
    "(a column of the dataset, the params its kind needs, the threshold in its range), names unique per dataset; "
    "a watched dataset keeps its integrity watch; YAML bodies parse, without aliases",
    "POST /api/v1/quality/as-code/apply/": "as POST /api/v1/quality/as-code/plan/",
    "POST /api/v1/policy/plan/": "each classification, role, user and dataset named exists, once; durations within "
    "the policy's bounds (at least the floor, at most ten years, the shortest no longer than the longest); a standing "
    "grant's columns exist and its end is a real date in the future; the quality section as POST "
    "/api/v1/quality/as-code/plan/; YAML bodies parse, without aliases",
    "POST /api/v1/policy/apply/": "as POST /api/v1/policy/plan/; nobody is added to a role by themselves",
    "POST /api/v1/access-requests/{id}/approve/": "an epsilon only on aggregate access, at most PRIVACY_MAX_EPSILON",
    "PUT /api/v1/privacy/datasets/{id}/policy/": "every column named is a column of the dataset, bounds only on "
    "numeric ones with lower below upper, each column once, categories distinct and non-empty",
    "POST /api/v1/subject-requests/": "identifier kinds are email, customer_id, user_id, national_id or phone, each "
    "with a non-empty value; only privacy officers create requests",
    "POST /api/v1/subject-requests/{id}/extend/": "a reason; the deadline is extended once",
    "POST /api/v1/subject-requests/{id}/corrections/": "only on a previewed rectification; each correction on a "
    "dataset its preview matched, not retained, and a present column of it, once; at least one",
    "POST /api/v1/subject-restrictions/{id}/acknowledge/": "only a restriction waiting for acknowledgement",
    "POST /api/v1/subject-identifiers/suggest/": "the source named must exist (and answer: its foreign keys are read)",
    "POST /api/v1/subject-relationships/": "both datasets exist, on one source; every column named is present in "
    "the catalog; as many referenced columns as columns; not known already",
    "PUT /api/v1/subject-handling/{dataset}/": "the dataset exists; retain needs a legal basis and a reason",
    "POST /api/v1/break-glass/": "the dataset exists; the caller is in the on-call group with a second factor and "
    "gives its current code; the classification's break-glass policy allows it for that many hours; a reason",
    "POST /api/v1/break-glass/{id}/review/": "a note when the use was inappropriate",
    "POST /api/v1/privacy/grants/{id}/query/": "the column has declared bounds (sum, mean) or categories (histogram), "
    "none for a count; the filter column is a column of the dataset",
}
POSITIVE_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # schemathesis' default


def toml_value(value: Any) -> str:
    """A TOML value: JSON strings, numbers, booleans and arrays of them are valid TOML."""
    return json.dumps(value)


def config(world: World) -> str:
    """The schemathesis configuration of this run: the world's references, the business rules."""
    datasets = list(Dataset.objects.values_list("pk", flat=True))
    requests = list(AccessRequest.objects.values_list("pk", flat=True))
    dictionaries = {
        "ids": sorted(
            {
                *datasets,
                *requests,
                world.granted.pk,
                world.finding.pk,
                *ProvisioningJob.objects.values_list("pk", flat=True),
                world.campaign.pk,
                world.review_item.pk,
                world.quality_check.pk,
                world.quality_run.pk,
                world.subject_request.pk,
                world.subject_identifier.pk,
                world.subject_relationship.pk,
            }
        ),
        "datasets": datasets,
        "columns": sorted(set(Column.objects.values_list("name", flat=True))),
        "classifications": list(Classification.objects.values_list("slug", flat=True)),
        "roles": list(Role.objects.values_list("slug", flat=True)),
        "users": [user.username for user in world.users.values()],
        "sources": [world.source.name],
    }
    bindings = {
        "path.id": "ids",
        "path.slug": "classifications",  # classifications and roles are looked up by slug
        "path.name": "sources",
        "path.dataset": "datasets",
        "body.dataset": "datasets",
        "body.columns[*]": "columns",
        "body.grantee_role": "roles",
        "body.role": "roles",
        "body.default_classification": "classifications",
        "body.classification": "classifications",
        "body.user": "users",
        "body.owner": "users",
        "body.dataset_owner": "users",
        "body.to": "users",
        "body.source": "sources",
    }
    lines = ["[dictionaries]"]
    lines += [f"{name} = {{ values = {toml_value(values)} }}" for name, values in dictionaries.items() if values]
    lines += ["", "[parameters]"]
    # Mostly real references, sometimes generated ones (unknown ids must still get a clean 4xx).
    lines += [f'"{key}" = {{ dictionary = "{name}", probability = 0.8 }}' for key, name in bindings.items()]
    for operation, rule in BUSINESS_RULES.items():
        lines += [
            "",
            f"# {rule}",
            "[[operations]]",
            f"include-name = {toml_value(operation)}",
            f"checks.positive_data_acceptance.expected-statuses = {toml_value([*POSITIVE_STATUSES, '400'])}",
        ]
    return "\n".join(lines) + "\n"


def schema_paths() -> list[str]:
    """The published schema's paths (templated, as schemathesis filters them), in a stable order."""
    from drf_spectacular.generators import SchemaGenerator

    return sorted(SchemaGenerator().get_schema(request=None, public=True)["paths"])


def shard_of(paths: list[str], shard: int) -> list[str]:
    return [path for index, path in enumerate(paths) if index % SHARDS == shard]


def test_the_shards_cover_every_path_once() -> None:
    paths = schema_paths()
    shares = [shard_of(paths, shard) for shard in range(SHARDS)]
    assert sorted(p for share in shares for p in share) == paths and all(shares)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("shard", range(SHARDS))
def test_schemathesis_all_checks_find_nothing(
    live_server: Any, world: World, token_for: Callable[..., str], tmp_path: Path, shard: int
) -> None:
    token = token_for(world.users["gov_admin"])
    mine = "^(" + "|".join(re.escape(path) for path in shard_of(schema_paths(), shard)) + ")$"
    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text(config(world))
    argv = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config_file),
        "run",
        f"{live_server.url}/api/schema/",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        EXAMPLES,
        "--seed",
        SEED,
        "--workers",
        "1",
        "--include-path-regex",
        mine,
        # Revoking the fuzzer's own token would turn the rest of the run into 401s (tested elsewhere).
        "--exclude-path-regex",
        "^/api/v1/tokens/[^/]+/revoke/$",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    output = result.stdout + result.stderr
    print(output[-6000:])  # the summary, shown with -s or when the test fails
    assert result.returncode == 0, output[-12000:]
    assert "No issues found" in output or " passed" in output.lower(), output[-3000:]
