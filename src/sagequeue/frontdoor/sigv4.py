"""AWS Signature Version 4 verification (header and presigned-query forms).

Pure: no I/O. The caller passes the request parts and the payload hash. This is
on the hot path of every call, so it is written lean: the derived signing key is
cached per (access key, date, region, service), canonical forms are built with
plain string operations, and nothing is parsed twice.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from botocore.utils import normalize_url_path

from sagequeue.domain.errors import AuthFailure, SignatureError

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_CLOCK_SKEW_SECONDS = 15 * 60
MAX_PRESIGN_EXPIRES_SECONDS = 7 * 24 * 3600

_MISMATCH_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


@dataclass(slots=True, frozen=True)
class AuthContext:
    """Who signed a verified request, and what S3 chunk signing needs to go on."""

    access_key: str
    date: str  # YYYYMMDD of the credential scope
    region: str
    service: str
    amz_date: str  # X-Amz-Date, e.g. 20261125T120000Z
    signature: str  # hex; the seed signature of a streaming upload
    signing_key: bytes
    payload_hash: str  # as signed: hex SHA-256, UNSIGNED-PAYLOAD, STREAMING-...
    presigned: bool

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(slots=True, frozen=True)
class SignedParts:
    """What the front door extracted before it has read the body."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str
    presigned: bool
    expires: int | None = None


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    k_date = hmac.new(("AWS4" + secret_key).encode(), date.encode(), hashlib.sha256).digest()
    k_region = hmac.new(k_date, region.encode(), hashlib.sha256).digest()
    k_service = hmac.new(k_region, service.encode(), hashlib.sha256).digest()
    return hmac.new(k_service, b"aws4_request", hashlib.sha256).digest()


# X-Amz-Date -> epoch seconds. Concurrent clients send the same few dates, and strptime
# costs tens of microseconds, so parsed dates are remembered (bounded).
_parsed_dates: dict[str, float] = {}


def _parse_amz_date(amz_date: str) -> float:
    epoch = _parsed_dates.get(amz_date)
    if epoch is not None:
        return epoch
    try:
        # timegm: the date is UTC (mktime would apply the local zone's summer time).
        epoch = float(calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        raise SignatureError(
            AuthFailure.INCOMPLETE,
            f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'. "
            "See http://en.wikipedia.org/wiki/ISO_8601",
        ) from None
    if len(_parsed_dates) > 4096:
        _parsed_dates.clear()
    _parsed_dates[amz_date] = epoch
    return epoch


def _format_amz_date(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def _split_credential(credential: str) -> tuple[str, str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
        raise SignatureError(
            AuthFailure.INCOMPLETE,
            f"Credential should be scoped to a valid region. Got '{credential}'.",
        )
    return parts[0], parts[1], parts[2], parts[3]


def parse_authorization(headers: Mapping[str, str], query: Mapping[str, str]) -> SignedParts:
    """Find the signature in the Authorization header or the presign query.

    ``headers`` has lower-case names; ``query`` maps decoded names to decoded values.
    Raises SignatureError(MISSING) when the request carries no signature at all.
    """
    authorization = headers.get("authorization")
    if authorization is not None:
        return _parse_header_form(authorization, headers)
    if "X-Amz-Signature" in query or "X-Amz-Credential" in query or "X-Amz-Algorithm" in query:
        return _parse_query_form(query)
    raise SignatureError(AuthFailure.MISSING, "Missing Authentication Token")


def _parse_header_form(authorization: str, headers: Mapping[str, str]) -> SignedParts:
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError(
            AuthFailure.INCOMPLETE,
            f"Authorization header requires the {ALGORITHM} algorithm; got '{algorithm}'.",
        )
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            fields[name] = value
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if n not in fields]
    amz_date = headers.get("x-amz-date")
    if missing or amz_date is None:
        problems = [f"Authorization header requires '{n}' parameter." for n in missing]
        if amz_date is None:
            problems.append(
                "Authorization header requires existence of either a 'X-Amz-Date' "
                "or a 'Date' header."
            )
        raise SignatureError(
            AuthFailure.INCOMPLETE, " ".join(problems) + f" Authorization={authorization}"
        )
    access_key, date, region, service = _split_credential(fields["Credential"])
    return SignedParts(
        access_key=access_key,
        date=date,
        region=region,
        service=service,
        signed_headers=tuple(fields["SignedHeaders"].split(";")),
        signature=fields["Signature"],
        amz_date=amz_date,
        presigned=False,
    )


def _parse_query_form(query: Mapping[str, str]) -> SignedParts:
    required = (
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
    )
    missing = [n for n in required if n not in query]
    if missing:
        raise SignatureError(
            AuthFailure.INCOMPLETE,
            "Query-string authentication requires the "
            + ", ".join(missing)
            + " parameter"
            + ("s." if len(missing) > 1 else "."),
        )
    if query["X-Amz-Algorithm"] != ALGORITHM:
        raise SignatureError(
            AuthFailure.INCOMPLETE, f'X-Amz-Algorithm only supports "{ALGORITHM}".'
        )
    expires: int | None = None
    if "X-Amz-Expires" in query:
        try:
            expires = int(query["X-Amz-Expires"])
        except ValueError:
            expires = -1
        if not 0 <= expires <= MAX_PRESIGN_EXPIRES_SECONDS:
            raise SignatureError(
                AuthFailure.INCOMPLETE,
                "X-Amz-Expires must be a number of seconds between 0 and 604800.",
            )
    access_key, date, region, service = _split_credential(query["X-Amz-Credential"])
    return SignedParts(
        access_key=access_key,
        date=date,
        region=region,
        service=service,
        signed_headers=tuple(query["X-Amz-SignedHeaders"].split(";")),
        signature=query["X-Amz-Signature"],
        amz_date=query["X-Amz-Date"],
        presigned=True,
        expires=expires,
    )


def canonical_uri(raw_path: str, service: str) -> str:
    """S3 signs the path as sent; other services sign it normalised and encoded again."""
    if service == "s3":
        return raw_path or "/"
    canonical = _canonical_paths.get(raw_path)
    if canonical is None:
        canonical = quote(normalize_url_path(raw_path), safe="/~")
        if len(_canonical_paths) > 4096:  # bounded: status calls carry many ids
            _canonical_paths.clear()
        _canonical_paths[raw_path] = canonical
    return canonical


# Few distinct paths (one per endpoint) are signed over and over.
_canonical_paths: dict[str, str] = {}


def canonical_query(raw_query: str, drop_signature: bool) -> str:
    if not raw_query:
        return ""
    pairs: list[tuple[str, str]] = []
    for item in raw_query.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        key = quote(unquote(key), safe="-_.~")
        if drop_signature and key == "X-Amz-Signature":
            continue
        pairs.append((key, quote(unquote(value), safe="-_.~")))
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


class SigV4Verifier:
    """Verifies requests against a set of access key pairs."""

    def __init__(
        self,
        keys: Mapping[str, str],
        *,
        max_skew_seconds: int = MAX_CLOCK_SKEW_SECONDS,
        clock=time.time,
    ) -> None:
        self._keys = dict(keys)
        self._max_skew = max_skew_seconds
        self._clock = clock
        self._key_cache: dict[tuple[str, str, str, str], bytes] = {}

    def secret_key(self, access_key: str) -> str | None:
        """The secret of a known access key (S3's legacy SigV2 presigned URLs need it)."""
        return self._keys.get(access_key)

    def _signing_key(self, access_key: str, date: str, region: str, service: str) -> bytes:
        cache_key = (access_key, date, region, service)
        key = self._key_cache.get(cache_key)
        if key is None:
            if len(self._key_cache) > 4096:  # bounded: dates roll over
                self._key_cache.clear()
            key = signing_key(self._keys[access_key], date, region, service)
            self._key_cache[cache_key] = key
        return key

    def verify(
        self,
        parts: SignedParts,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        payload_hash: str,
    ) -> AuthContext:
        """Check the signature; raises SignatureError, returns who signed."""
        if parts.access_key not in self._keys:
            raise SignatureError(
                AuthFailure.UNKNOWN_KEY, "The security token included in the request is invalid."
            )
        signed_at = _parse_amz_date(parts.amz_date)
        now = self._clock()
        if parts.presigned:
            if parts.expires is not None and now > signed_at + parts.expires:
                raise SignatureError(
                    AuthFailure.EXPIRED,
                    f"Signature expired: {parts.amz_date} is now earlier than "
                    f"{_format_amz_date(now)}.",
                )
        elif abs(now - signed_at) > self._max_skew:
            if signed_at < now:
                message = (
                    f"Signature expired: {parts.amz_date} is now earlier than "
                    f"{_format_amz_date(now - self._max_skew)} "
                    f"({_format_amz_date(now)} - 15 min.)"
                )
            else:
                message = (
                    f"Signature not yet current: {parts.amz_date} is still later than "
                    f"{_format_amz_date(now + self._max_skew)} "
                    f"({_format_amz_date(now)} + 15 min.)"
                )
            raise SignatureError(AuthFailure.SKEWED, message)
        if "host" not in parts.signed_headers:
            raise SignatureError(
                AuthFailure.INCOMPLETE,
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            )

        header_lines = []
        for name in parts.signed_headers:
            value = headers.get(name)
            if value is None:
                raise SignatureError(AuthFailure.MISMATCH, _MISMATCH_MESSAGE)
            header_lines.append(f"{name}:{' '.join(value.split())}\n")
        canonical_request = "\n".join(
            (
                method,
                canonical_uri(raw_path, parts.service),
                canonical_query(raw_query, parts.presigned),
                "".join(header_lines),
                ";".join(parts.signed_headers),
                payload_hash,
            )
        )
        scope = f"{parts.date}/{parts.region}/{parts.service}/aws4_request"
        string_to_sign = (
            f"{ALGORITHM}\n{parts.amz_date}\n{scope}\n"
            + hashlib.sha256(canonical_request.encode("utf-8", "surrogateescape")).hexdigest()
        )
        key = self._signing_key(parts.access_key, parts.date, parts.region, parts.service)
        # hmac.new, not hmac.digest: the one-shot form releases the GIL on every call,
        # which hands the event loop's GIL to the store's writer thread once per request.
        expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, parts.signature):
            raise SignatureError(AuthFailure.MISMATCH, _MISMATCH_MESSAGE)
        return AuthContext(
            access_key=parts.access_key,
            date=parts.date,
            region=parts.region,
            service=parts.service,
            amz_date=parts.amz_date,
            signature=parts.signature,
            signing_key=key,
            payload_hash=payload_hash,
            presigned=parts.presigned,
        )
