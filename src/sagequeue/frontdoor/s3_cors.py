"""Bucket CORS for the S3 API: the CORSConfiguration document, and how a request from a
browser page on another origin is matched against its rules (S3's evaluation: the first
rule whose origin, method and requested headers all match wins)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

from sagequeue.domain.errors import S3Error
from sagequeue.stores.objects import CorsRule

CORS_METHODS = ("GET", "PUT", "HEAD", "POST", "DELETE")
MAX_RULES = 100


def _invalid(message: str) -> S3Error:
    return S3Error(message, code="InvalidRequest", status=400)


def _malformed() -> S3Error:
    return S3Error(
        "The XML you provided was not well-formed or did not validate against our published schema",
        code="MalformedXML",
        status=400,
    )


def parse_cors_configuration(root: ET.Element) -> list[CorsRule]:
    """A CORSConfiguration element (namespaces already dropped) as rules."""
    if root.tag != "CORSConfiguration":
        raise _malformed()
    rules: list[CorsRule] = []
    for element in root.findall("CORSRule"):
        methods = [(m.text or "").strip() for m in element.findall("AllowedMethod")]
        origins = [(o.text or "").strip() for o in element.findall("AllowedOrigin")]
        if not methods or not origins:
            raise _malformed()
        for method in methods:
            if method not in CORS_METHODS:
                raise _invalid(
                    "Found unsupported HTTP method in CORS config. Unsupported method is " + method
                )
        for origin in origins:
            if origin.count("*") > 1:
                raise _invalid(f'AllowedOrigin "{origin}" can not have more than one wildcard.')
        allowed_headers = [(h.text or "").strip() for h in element.findall("AllowedHeader")]
        for header in allowed_headers:
            if header.count("*") > 1:
                raise _invalid(f'AllowedHeader "{header}" can not have more than one wildcard.')
        max_age_text = element.findtext("MaxAgeSeconds")
        max_age: int | None = None
        if max_age_text is not None:
            if not max_age_text.strip().isdigit():
                raise _malformed()
            max_age = int(max_age_text.strip())
        rule_id = element.findtext("ID")
        if rule_id is not None and len(rule_id) > 255:
            raise _invalid("The ID of a CORS rule can be at most 255 characters long.")
        rules.append(
            CorsRule(
                allowed_methods=methods,
                allowed_origins=origins,
                allowed_headers=allowed_headers,
                expose_headers=[(h.text or "").strip() for h in element.findall("ExposeHeader")],
                max_age_seconds=max_age,
                id=rule_id,
            )
        )
    if not rules:
        raise _malformed()
    if len(rules) > MAX_RULES:
        raise _invalid(f"The CORS configuration can have at most {MAX_RULES} rules.")
    return rules


def render_cors_configuration(rules: list[CorsRule]) -> str:
    """The inner XML of a CORSConfiguration document."""
    out: list[str] = []
    for rule in rules:
        parts = ["<CORSRule>"]
        if rule.id is not None:
            parts.append(f"<ID>{escape(rule.id)}</ID>")
        parts += [f"<AllowedHeader>{escape(h)}</AllowedHeader>" for h in rule.allowed_headers]
        parts += [f"<AllowedMethod>{escape(m)}</AllowedMethod>" for m in rule.allowed_methods]
        parts += [f"<AllowedOrigin>{escape(o)}</AllowedOrigin>" for o in rule.allowed_origins]
        parts += [f"<ExposeHeader>{escape(h)}</ExposeHeader>" for h in rule.expose_headers]
        if rule.max_age_seconds is not None:
            parts.append(f"<MaxAgeSeconds>{rule.max_age_seconds}</MaxAgeSeconds>")
        parts.append("</CORSRule>")
        out.append("".join(parts))
    return "".join(out)


def _wildcard_match(pattern: str, value: str) -> bool:
    """A pattern with at most one ``*`` standing for any run of characters."""
    if "*" not in pattern:
        return pattern == value
    prefix, _, suffix = pattern.partition("*")
    return (
        len(value) >= len(prefix) + len(suffix)
        and value.startswith(prefix)
        and value.endswith(suffix)
    )


def requested_headers(header: str | None) -> list[str]:
    """Access-Control-Request-Headers as lower-case names."""
    return [h.strip().lower() for h in (header or "").split(",") if h.strip()]


def matching_rule(
    rules: list[CorsRule], origin: str, method: str, headers: list[str]
) -> tuple[CorsRule, str] | None:
    """The first rule allowing this origin, method and request headers, with the origin
    pattern that matched."""
    for rule in rules:
        if method not in rule.allowed_methods:
            continue
        pattern = next((p for p in rule.allowed_origins if _wildcard_match(p, origin)), None)
        if pattern is None:
            continue
        allowed = [h.lower() for h in rule.allowed_headers]
        if all(any(_wildcard_match(a, h) for a in allowed) for h in headers):
            return rule, pattern
    return None


def cors_headers(
    rule: CorsRule,
    origin: str,
    pattern: str,
    *,
    preflight_headers: list[str] | None = None,
) -> list[tuple[str, str]]:
    """The Access-Control-* headers S3 sends for a matching rule (a preflight also
    lists the request headers it allows)."""
    headers = [
        ("access-control-allow-origin", "*" if pattern == "*" else origin),
        ("access-control-allow-methods", ", ".join(rule.allowed_methods)),
    ]
    if pattern != "*":
        headers.append(("access-control-allow-credentials", "true"))
    if preflight_headers:
        headers.append(("access-control-allow-headers", ", ".join(preflight_headers)))
    if rule.expose_headers:
        headers.append(("access-control-expose-headers", ", ".join(rule.expose_headers)))
    if rule.max_age_seconds is not None:
        headers.append(("access-control-max-age", str(rule.max_age_seconds)))
    headers.append(
        ("vary", "Origin, Access-Control-Request-Headers, Access-Control-Request-Method")
    )
    return headers


def forbidden(method: str, resource_type: str, reason: str) -> S3Error:
    return S3Error(
        f"CORSResponse: {reason}",
        code="AccessForbidden",
        status=403,
        extra={"Method": method, "ResourceType": resource_type},
    )


NOT_ALLOWED = (
    "This CORS request is not allowed. This is usually because the evalution of Origin, "
    "request method / Access-Control-Request-Method or Access-Control-Request-Headers are "
    "not whitelisted by the resource's CORS spec."
)
NOT_ENABLED = "CORS is not enabled for this bucket."
