"""The attributes this server stores, published through /Schemas, and the discovery documents.

The schemas list exactly what is stored and returned (no more): an identity provider, and
scim2-tester, then send only what round-trips. Attribute names are matched without regard to case
(RFC 7643 §2.1), through `canonical()`. Pure data: no Django.
"""

from __future__ import annotations

from typing import Any

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RT_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"

MAX_RESULTS = 200


def _attr(name: str, type_: str = "string", **kw: Any) -> dict[str, Any]:
    out = {
        "name": name,
        "type": type_,
        "multiValued": kw.pop("multi", False),
        "description": kw.pop("description", name),
        "required": kw.pop("required", False),
        "mutability": kw.pop("mutability", "readWrite"),
        "returned": kw.pop("returned", "default"),
        "uniqueness": kw.pop("uniqueness", "none"),
    }
    if type_ in ("string", "reference"):
        out["caseExact"] = kw.pop("case_exact", False)
    if type_ == "complex":
        out["subAttributes"] = kw.pop("sub", [])
    out.update(kw)
    return out


USER_ATTRIBUTES = [
    _attr("userName", required=True, uniqueness="server", description="Unique sign-in name (the portal's username)."),
    _attr(
        "name",
        "complex",
        sub=[_attr("givenName", description="Given name."), _attr("familyName", description="Family name.")],
        description="The person's name.",
    ),
    _attr("displayName", description="Name shown for the person."),
    _attr(
        "emails",
        "complex",
        multi=True,
        sub=[
            _attr("value", description="Email address."),
            _attr("type", description="work, home or other."),
            _attr("primary", "boolean", description="The primary address (the portal's email)."),
        ],
        description="Email addresses; the primary one (or the first) is the portal's email.",
    ),
    # Required so that nobody "removes" it: a person is active or offboarded, never unassigned. A
    # POST without it creates an active person and a PUT without it leaves it as it is (lenient
    # input, as providers always send it anyway).
    _attr(
        "active",
        "boolean",
        required=True,
        description="False offboards the person: every grant and role membership ends.",
    ),
    _attr(
        "groups",
        "complex",
        multi=True,
        mutability="readOnly",
        sub=[
            _attr("value", mutability="readOnly", description="The group's id."),
            _attr("$ref", "reference", mutability="readOnly", referenceTypes=["Group"], description="The group."),
            _attr("display", mutability="readOnly", description="The group's name."),
        ],
        description="The SCIM groups the person belongs to (change them through /Groups).",
    ),
]

GROUP_ATTRIBUTES = [
    _attr("displayName", required=True, uniqueness="server", description="The group's name, as mappings match it."),
    _attr(
        "members",
        "complex",
        multi=True,
        sub=[
            _attr("value", mutability="immutable", description="A member user's id."),
            _attr("$ref", "reference", mutability="immutable", referenceTypes=["User"], description="The user."),
        ],
        description="Member users (nested groups are not supported).",
    ),
]

# Lower-cased name (top level, or "parent.sub") -> the attribute's spelling in this server.
_TOP = {"externalid": "externalId", "id": "id", "schemas": "schemas", "meta": "meta"}


def _names(attributes: list[dict[str, Any]]) -> dict[str, str]:
    names = dict(_TOP)
    for a in attributes:
        names[a["name"].lower()] = a["name"]
        for sub in a.get("subAttributes", []):
            names[f"{a['name'].lower()}.{sub['name'].lower()}"] = sub["name"]
    return names


NAMES = {"User": _names(USER_ATTRIBUTES), "Group": _names(GROUP_ATTRIBUTES)}
MULTI = {"emails", "groups", "members"}
BOOLEAN = {"active", "emails.primary"}
REQUIRED = {"userName", "active", "displayName"}  # displayName: of a Group (a User's is optional)
CORE_SCHEMA = {"User": USER_SCHEMA, "Group": GROUP_SCHEMA}


def schema_document(kind: str, base: str) -> dict[str, Any]:
    urn = CORE_SCHEMA[kind]
    return {
        "schemas": [SCHEMA_SCHEMA],
        "id": urn,
        "name": kind,
        "description": f"{kind} as this portal stores it",
        "attributes": USER_ATTRIBUTES if kind == "User" else GROUP_ATTRIBUTES,
        "meta": {"resourceType": "Schema", "location": f"{base}/Schemas/{urn}"},
    }


def resource_type_document(kind: str, base: str) -> dict[str, Any]:
    return {
        "schemas": [RT_SCHEMA],
        "id": kind,
        "name": kind,
        "endpoint": f"/{kind}s",
        "description": "People" if kind == "User" else "Identity provider groups (mapped to portal roles)",
        "schema": CORE_SCHEMA[kind],
        "schemaExtensions": [],
        "meta": {"resourceType": "ResourceType", "location": f"{base}/ResourceTypes/{kind}"},
    }


def service_provider_config(base: str) -> dict[str, Any]:
    return {
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://datatracker.ietf.org/doc/html/rfc7644",
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": False},
        "sort": {"supported": False},
        "etag": {"supported": False},
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "Bearer token",
                "description": "A portal API token with the 'scim' scope: Authorization: Bearer gov_...",
                "primary": True,
            }
        ],
        "meta": {"resourceType": "ServiceProviderConfig", "location": f"{base}/ServiceProviderConfig"},
    }
