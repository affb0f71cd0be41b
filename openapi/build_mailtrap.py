#!/usr/bin/env python3
"""Builds openapi/mailtrap-api-tokens.json from Mailtrap's API-token reference
page (the OpenAPI fragments in `mailtrap-api-tokens-openapi.md`, one per
operation) and records every change keyward makes to it.

    python3 openapi/build_mailtrap.py ../shared/reference/mailtrap-api-tokens-openapi.md

The fragments are merged as published; then, in `keyward_changes` below:
  1. `nullable: true` (OpenAPI 3.0) becomes `type: [string, "null"]`, its
     meaning in the declared 3.1.
  2. Create and reset take an optional `expires_at` (keyward's expiry rule).
  3. Request bodies refuse unknown fields (`additionalProperties: false`);
     responses list the fields keyward always returns as `required`.
  4. The same operations under `/api/accounts/{account_id}/api_tokens...`.
  5. The statuses keyward also returns are documented: 400 (malformed JSON),
     413 (body too large), 415 (not JSON), 403 on list/get (a token without
     the tokens scope), 422 on delete (the root token, the last token of a
     domain), 503 (loading or overloaded), 404 for an unknown account.
  6. Tokens show keyward's sending limits, `rate_limits` (an extra field,
     always present, empty for an unlimited token); create takes them as an
     optional field.
"""
import copy
import json
import re
import sys

src = open(sys.argv[1]).read()
doc = None
for block in re.findall(r"```json\n(.*?)\n```", src, re.S):
    frag = json.loads(block)
    if doc is None:
        doc = frag
        continue
    for path, ops in frag["paths"].items():
        doc["paths"].setdefault(path, {}).update(ops)
    for section, items in frag["components"].items():
        doc["components"].setdefault(section, {}).update(items)


def keyward_changes(doc):
    comp = doc["components"]
    schemas = comp["schemas"]
    doc["info"] = {
        "title": "keyward: Mailtrap-compatible API tokens",
        "version": "2.0.0",
        "description": "Mailtrap's API-token API (Account Management 2.0.0) as keyward serves it; "
        "built by openapi/build_mailtrap.py from the reference page, changes listed there.",
    }
    doc["servers"] = [{"url": "/", "description": "this keyward's HTTP port"}]
    comp["securitySchemes"]["BearerAuth"]["bearerFormat"] = "kw_ token"
    comp["securitySchemes"]["HeaderAuth"]["description"] = "Pass the API token in the Api-Token header"

    # 1. nullable -> type array
    for s in schemas.values():
        for prop in s.get("properties", {}).values():
            if prop.pop("nullable", False):
                prop["type"] = [prop["type"], "null"]

    # 2. optional expires_at on create and reset
    expires_in = {
        "type": ["string", "null"],
        "format": "date-time",
        "description": "When the token expires (RFC 3339); null or absent: never. "
        "Must be in the future and at most 5 years ahead.",
    }
    schemas["CreateApiTokenRequest"]["properties"]["expires_at"] = expires_in
    schemas["ResetApiTokenRequest"] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"expires_at": expires_in},
    }

    # 3. strict requests, complete responses
    for name in ("CreateApiTokenRequest", "ResourcePermissionInput"):
        schemas[name]["additionalProperties"] = False
    schemas["CreateApiTokenRequest"]["properties"]["name"].update({"minLength": 1})
    for name in ("ApiToken", "ApiTokenWithToken"):
        schemas[name]["required"] = [
            "id", "name", "last_4_digits", "created_by", "expires_at", "resources"
        ] + (["token"] if name == "ApiTokenWithToken" else [])
    schemas["ResourcePermission"]["required"] = ["resource_type", "resource_id", "access_level"]
    for name in ("UnauthenticatedResponse", "NotFoundResponse"):
        schemas[name]["required"] = ["error"]
    schemas["PermissionsDeniedResponse"]["required"] = ["errors"]
    schemas["UnprocessableEntity"]["required"] = ["errors"]
    schemas["ErrorResponse"] = {
        "title": "ErrorResponse",
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "Error message"}},
    }

    # 5. the other statuses
    resp = comp["responses"]
    resp.setdefault("PERMISSION_DENIED", {
        "description": "Returns forbidden error message. Check your permissions.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PermissionsDeniedResponse"}}},
    })
    resp.setdefault("NOT_FOUND", {
        "description": "Returns not found error message",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NotFoundResponse"}}},
    })
    for code, text in (
        ("BAD_REQUEST", "The body is not valid JSON."),
        ("PAYLOAD_TOO_LARGE", "The body is larger than 64 KiB."),
        ("UNSUPPORTED_MEDIA_TYPE", "The body is not sent as application/json."),
        ("UNAVAILABLE", "keyward is loading or overloaded; retry shortly."),
    ):
        resp[code] = {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
        }
    ref = lambda name: {"$ref": f"#/components/responses/{name}"}
    ops = doc["paths"]
    ops["/api/api_tokens/{id}/reset"]["post"]["requestBody"] = {
        "required": False,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ResetApiTokenRequest"}}},
    }
    for path, item in ops.items():
        for method, op in item.items():
            r = op["responses"]
            r["401"] = ref("UNAUTHENTICATED")
            r["403"] = ref("PERMISSION_DENIED")
            r["503"] = ref("UNAVAILABLE")
            if "requestBody" in op:
                r["400"] = ref("BAD_REQUEST")
                r["413"] = ref("PAYLOAD_TOO_LARGE")
                r["415"] = ref("UNSUPPORTED_MEDIA_TYPE")
                r["422"] = ref("UNPROCESSABLE_ENTITY")
            if method == "delete":
                r["422"] = ref("UNPROCESSABLE_ENTITY")

    # 4. account-scoped copies
    comp["parameters"]["account_id"] = {
        "description": "Account ID; a token of another account gets 403.",
        "name": "account_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "format": "int64", "minimum": 1},
    }
    for path in list(ops):
        scoped = "/api/accounts/{account_id}" + path[len("/api"):]
        item = copy.deepcopy(ops[path])
        for op in item.values():
            op["operationId"] += "InAccount"
            op["summary"] += " (account in the path)"
            op["parameters"] = [{"$ref": "#/components/parameters/account_id"}] + op.get("parameters", [])
            op["responses"]["404"] = ref("NOT_FOUND")
        ops[scoped] = item
    comp["parameters"]["api_token_id"]["schema"]["minimum"] = 1

    # 6. sending limits
    schemas["RateLimit"] = RATE_LIMIT
    limits = {
        "type": "array",
        "maxItems": 8,
        "description": "keyward sending limits: each allowed check takes its cost from every limit",
        "items": {"$ref": "#/components/schemas/RateLimit"},
    }
    for name in ("ApiToken", "ApiTokenWithToken"):
        schemas[name]["properties"]["rate_limits"] = limits
        schemas[name]["required"].append("rate_limits")
    schemas["CreateApiTokenRequest"]["properties"]["rate_limits"] = limits


# One sending limit, in both facades' JSON.
RATE_LIMIT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "limit", "period_seconds"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$", "description": "Unique on the token"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000000000000, "description": "Units per period"},
        "period_seconds": {"type": "number", "minimum": 1, "maximum": 2678400,
                           "description": "The period, 1 s .. 31 days (milliseconds as a fraction)"},
    },
}

keyward_changes(doc)
out = "openapi/mailtrap-api-tokens.json"
with open(out, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
print(f"wrote {out}: {len(doc['paths'])} paths")
