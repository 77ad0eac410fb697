"""AWS adapter, second generation: one managed policy per (principal, source) holding a group of
statements per dataset, so that one IAM identity can hold many S3 prefixes.

IAM allows 10 managed policies per identity (20 on request) and 6,144 characters per managed
policy (whitespace excluded). One policy per (principal, dataset), as
:func:`governance.provisioners.aws_iam.plan` made them, caps a person at about ten prefixes; here
every dataset the principal holds on the source is one *statement group* (``D<dataset>List``,
``D<dataset>Read`` and ``D<dataset>NoWrites`` or ``D<dataset>Write``: the same statements as the
per-dataset document, the explicit Deny of a read included) in one document, split into numbered
parts (``...-p1``, ``...-p2``) only when the size limit requires it.

* **Built from the desired state**, never by patching the last document: the caller passes every
  dataset the principal should hold on the source (:class:`DatasetAccess`), and :func:`plan`
  packs them in dataset order, deterministically; each group is linted
  with parliament first. The same input gives the same names and texts.
* **Rewritten without a gap**: :func:`apply` writes the parts (a new default version, the oldest
  non-default deleted at IAM's limit of five) in an order in which a statement group that moves
  from one part to another is written to its new part first, attaches them, and only then removes
  what is no longer wanted: parts beyond the new count, and the principal's old per-dataset
  policies (the first generation's layout, converged here). An empty plan detaches and deletes
  every part.
* **Verified by reading back** (:func:`verify`): each part's default document and attachment, and
  that nothing else of the portal's is left attached to the principal.

Like the rest of :mod:`governance.provisioners`, this module knows no Django.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from . import aws_iam as aws
from .postgres import PermanentError

MAX_POLICY_CHARS = 6144  # IAM's size limit of a managed policy, whitespace excluded
_SID_SUFFIX = {"ListThePrefix": "List", "ReadObjects": "Read", "NoWrites": "NoWrites", "WriteObjects": "Write"}
_GROUP_SID = re.compile(r"^D(\d+)[A-Za-z]+$")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class DatasetAccess:
    """What one dataset contributes to a principal's source policy."""

    dataset_id: int
    location: aws.S3Location
    level: str


def statements(access: DatasetAccess) -> list[dict[str, Any]]:
    """The dataset's statement group: the per-dataset document's statements, with Sids naming the
    dataset (how a group is found again in a part, and how a part's contents are read back)."""
    document = aws.policy_document(access.location, access.level)
    return [{**s, "Sid": f"D{access.dataset_id}{_SID_SUFFIX[s['Sid']]}"} for s in document["Statement"]]


def size(document: dict[str, Any]) -> int:
    """The size IAM counts: the JSON text without whitespace (no string of ours holds any)."""
    return len(_WHITESPACE.sub("", json.dumps(document)))


def dataset_ids(document: dict[str, Any] | None) -> set[int]:
    """The datasets whose statement groups a document holds (read back from their Sids)."""
    ids: set[int] = set()
    for statement in (document or {}).get("Statement", []):
        match = _GROUP_SID.match(str(statement.get("Sid", "")))
        if match:
            ids.add(int(match.group(1)))
    return ids


def base_name(principal: aws.IamPrincipal, source: str) -> str:
    """``gov-<kind>-<name>-<hash>``: the principal's policy on the source, before the part number."""
    digest = hashlib.sha256(f"{principal}|{source}".encode()).hexdigest()[:10]
    tail = f"-{digest}-p999"
    return f"{f'gov-{principal.kind}-{principal.name}'[: 128 - len(tail)]}-{digest}"


def part_name(principal: aws.IamPrincipal, source: str, number: int) -> str:
    return f"{base_name(principal, source)}-p{number}"


def is_legacy_name(principal: aws.IamPrincipal, name: str) -> bool:
    """Whether `name` is one of the principal's first-generation per-dataset policies
    (:func:`governance.provisioners.aws_iam.policy_name`)."""
    match = re.match(r"^(.*)-d\d+-[0-9a-f]{10}$", name)
    return bool(match) and f"gov-{principal.kind}-{principal.name}".startswith(match.group(1))  # type: ignore[union-attr]


def is_part_name(principal: aws.IamPrincipal, source: str, name: str) -> bool:
    return re.fullmatch(re.escape(base_name(principal, source)) + r"-p\d+", name) is not None


@dataclass(frozen=True)
class Part:
    name: str
    document: dict[str, Any]

    @property
    def text(self) -> str:
        return aws.render(self.document)

    @property
    def datasets(self) -> set[int]:
        return dataset_ids(self.document)


@dataclass(frozen=True)
class SourcePlan:
    """Everything a principal should hold on one source: zero parts means nothing at all."""

    principal: aws.IamPrincipal
    source: str
    path: str
    parts: tuple[Part, ...]
    accesses: tuple[DatasetAccess, ...]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parts]

    def lines(self) -> list[str]:
        if not self.parts:
            return [f"Detach and delete every IAM policy {self.path}{base_name(self.principal, self.source)}-p*"]
        out = []
        for part in self.parts:
            out.append(f"IAM policy {self.path}{part.name} attached to {self.principal}:")
            out += part.text.splitlines()
        return out


def _document(groups: list[list[dict[str, Any]]]) -> dict[str, Any]:
    return {"Version": aws.POLICY_VERSION, "Statement": [s for group in groups for s in group]}


@functools.lru_cache(maxsize=4096)
def _lint(group: str) -> None:
    """parliament on one statement group (its findings are per statement, so a part built from
    clean groups is clean), remembered: a principal's unchanged groups are not linted again."""
    findings = aws.lint(_document([json.loads(group)]))
    if findings:
        raise PermanentError("The generated policy fails parliament: " + "; ".join(findings))


def plan(*, principal: aws.IamPrincipal, source: str, accesses: list[DatasetAccess]) -> SourcePlan:
    """The parts for `accesses` (one per dataset: the caller folds several grants into the highest
    level), packed in dataset order into as few documents as the size limit allows, each linted
    with parliament (a finding is a permanent failure)."""
    path = aws.policy_path(source)
    ordered = sorted(accesses, key=lambda a: a.dataset_id)
    if len({a.dataset_id for a in ordered}) != len(ordered):
        raise PermanentError("One statement group per dataset: fold the grants of a dataset first.")
    packed: list[list[list[dict[str, Any]]]] = []
    for access in ordered:
        group = statements(access)
        _lint(json.dumps(group, sort_keys=True))
        if size(_document([group])) > MAX_POLICY_CHARS:
            raise PermanentError(f"The statements for {access.location} alone exceed {MAX_POLICY_CHARS} characters.")
        if packed and size(_document([*packed[-1], group])) <= MAX_POLICY_CHARS:
            packed[-1].append(group)
        else:
            packed.append([group])
    parts = [Part(part_name(principal, source, n), _document(groups)) for n, groups in enumerate(packed, start=1)]
    return SourcePlan(principal, source, path, tuple(parts), tuple(ordered))


def own_lines(*, principal: aws.IamPrincipal, source: str, access: DatasetAccess) -> list[str]:
    """What an approver sees for one grant: its statement group, and the policy it is added to.
    Independent of the principal's other grants (which part it lands in is not), so the plan
    digest of an approval stays stable while the rest of the policy changes."""
    group = statements(access)
    _lint(json.dumps(group, sort_keys=True))
    name = f"{aws.policy_path(source)}{base_name(principal, source)}"
    head = (
        f"Add to IAM policy {name} (the source policy of {principal}, attached to {principal}; created if new, "
        f"split into numbered parts -p1, -p2... over {MAX_POLICY_CHARS} characters) the statements for "
        f"{access.level} on {access.location}:"
    )
    return [head, *json.dumps(group, indent=2, sort_keys=True).splitlines()]


# ---------------------------------------------------------------------------------------------
# Applying and reading back
# ---------------------------------------------------------------------------------------------


def _arn(account: str, path: str, name: str) -> str:
    return f"arn:aws:iam::{account}:policy{path}{name}"


def _current(iam: Any, arn: str, name: str) -> dict[str, Any] | None:
    with aws._errors(f"iam:GetPolicy {name}"):
        try:
            return aws._default_document(iam, arn)[1]
        except Exception as exc:
            if not aws._is(exc, "NoSuchEntity"):
                raise
            return None


def _leftovers(plan: SourcePlan, attached: set[str]) -> dict[str, str]:
    """The portal's policies attached to the principal that the plan does not name: parts beyond
    the new count and first-generation per-dataset policies, by name."""
    out = {}
    for arn in attached:
        name = arn.rsplit("/", 1)[-1]
        if name in plan.names:
            continue
        if is_part_name(plan.principal, plan.source, name) or is_legacy_name(plan.principal, name):
            out[name] = arn
    return out


def _write_order(plan: SourcePlan, held: dict[str, set[int]]) -> list[Part]:
    """The parts to write, in an order that never leaves a wanted dataset without a holder: a part
    is written once every wanted dataset it gives up is held by another attached policy."""
    wanted = {a.dataset_id for a in plan.accesses}
    holding = dict(held)
    pending = list(plan.parts)
    order: list[Part] = []
    while pending:
        for part in pending:
            given_up = (holding.get(part.name, set()) - part.datasets) & wanted
            others = set().union(*(ids for name, ids in holding.items() if name != part.name))
            if given_up <= others:
                break
        else:
            part = pending[0]  # cannot happen with packing in dataset order; write in order then
        pending.remove(part)
        order.append(part)
        holding[part.name] = part.datasets
    return order


def apply(target: aws.AwsTarget, plan: SourcePlan) -> list[str]:
    """Make IAM hold exactly `plan` for the principal on the source; returns what was done."""
    iam = aws.client(target)
    account = aws._account(iam, target)
    principal = plan.principal
    key = {"role": "RoleName", "user": "UserName"}[principal.kind]
    with aws._errors(f"iam:ListAttached{principal.kind.title()}Policies {principal}"):
        attached = aws._attached(iam, principal, plan.path)
    leftovers = _leftovers(plan, attached)
    current = {p.name: _current(iam, _arn(account, plan.path, p.name), p.name) for p in plan.parts}
    held = {name: dataset_ids(doc) for name, doc in current.items() if doc is not None}
    for name, arn in leftovers.items():
        document = _current(iam, arn, name)
        # A first-generation policy holds one dataset without grouped Sids: it stays until the end.
        held[name] = dataset_ids(document) or {a.dataset_id for a in plan.accesses}
    done: list[str] = []
    for part in _write_order(plan, held):
        arn = _arn(account, plan.path, part.name)
        done += aws._write(
            iam,
            arn=arn,
            name=part.name,
            path=plan.path,
            text=part.text,
            current=current[part.name],
            document=part.document,
            description=f"Managed by the data access portal: {principal}'s access on source {plan.source}",
        )
        if arn not in attached:
            with aws._errors(f"iam:Attach{principal.kind.title()}Policy {principal}"):
                getattr(iam, aws._attach_call(principal, "attach"))(**{key: principal.name, "PolicyArn": arn})
            done.append(f"Attach{principal.kind.title()}Policy {part.name} to {principal}")
    for name, arn in sorted(leftovers.items()):
        done += aws._remove_arn(iam, name, arn)  # only now: the new parts hold everything wanted
    return done


def verify(target: aws.AwsTarget, plan: SourcePlan) -> list[str]:
    """Differences between `plan` and IAM: each part's default document and attachment, and
    whatever else of the portal's is still attached to the principal."""
    iam = aws.client(target)
    account = aws._account(iam, target)
    with aws._errors(f"iam:ListAttached {plan.principal}"):
        attached = aws._attached(iam, plan.principal, plan.path)
    problems: list[str] = []
    for part in plan.parts:
        arn = _arn(account, plan.path, part.name)
        current = _current(iam, arn, part.name)
        if current is None:
            problems.append(f"policy {part.name} does not exist")
            continue
        if current != part.document:
            problems.append(f"policy {part.name}: the default version is not the planned document")
        if arn not in attached:
            problems.append(f"policy {part.name} is not attached to {plan.principal}")
    for name in sorted(_leftovers(plan, attached)):
        problems.append(f"policy {name} is still attached to {plan.principal}")
    return problems
