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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from botocore.utils import normalize_url_path

from sagequeue.domain.errors import AuthFailure, SignatureError
from sagequeue.domain.validation import wire_int

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_CLOCK_SKEW_SECONDS = 15 * 60
MAX_PRESIGN_EXPIRES_SECONDS = 7 * 24 * 3600

_NO_DATE_MESSAGE = (
    "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
)
_PRESIGN_PARAMETERS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)
# S3 requires every x-amz-* header to be signed, except this one (it carries the
# payload hash, which the signature covers anyway).
_S3_UNSIGNED_ALLOWED = frozenset(["x-amz-content-sha256"])

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
    expires: int = 0  # presigned only: X-Amz-Expires


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
    if missing:
        problems = [f"Authorization header requires '{n}' parameter." for n in missing]
        if amz_date is None:
            problems.append(_NO_DATE_MESSAGE)
        raise SignatureError(
            AuthFailure.INCOMPLETE, " ".join(problems) + f" Authorization={authorization}"
        )
    if amz_date is None:
        raise SignatureError(
            AuthFailure.MISSING_DATE, f"{_NO_DATE_MESSAGE} Authorization={authorization}"
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
    missing = [n for n in _PRESIGN_PARAMETERS if n not in query]
    if missing:
        raise _query_error(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, "
            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
            "and X-Amz-Expires parameters."
        )
    if query["X-Amz-Algorithm"] != ALGORITHM:
        raise _query_error(f'X-Amz-Algorithm only supports "{ALGORITHM}"')
    try:
        expires = wire_int(query["X-Amz-Expires"], signed=True)
    except ValueError:
        raise _query_error("X-Amz-Expires should be a number") from None
    if expires < 0:
        raise _query_error("X-Amz-Expires must be non-negative")
    if expires > MAX_PRESIGN_EXPIRES_SECONDS:
        raise _query_error(
            "X-Amz-Expires must be less than a week (in seconds); that is, the given "
            f"X-Amz-Expires must be less than {MAX_PRESIGN_EXPIRES_SECONDS} seconds"
        )
    credential = query["X-Amz-Credential"]
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
        raise _query_error(
            "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
            'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
        )
    return SignedParts(
        access_key=parts[0],
        date=parts[1],
        region=parts[2],
        service=parts[3],
        signed_headers=tuple(query["X-Amz-SignedHeaders"].split(";")),
        signature=query["X-Amz-Signature"],
        amz_date=query["X-Amz-Date"],
        presigned=True,
        expires=expires,
    )


def _query_error(message: str) -> SignatureError:
    error = SignatureError(AuthFailure.QUERY_MALFORMED, message)
    error.presigned = True
    return error


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
    """Verifies requests against a set of access key pairs, for one region (when
    ``region`` is given, a credential scope naming another region is refused)."""

    def __init__(
        self,
        keys: Mapping[str, str],
        *,
        region: str | None = None,
        max_skew_seconds: int = MAX_CLOCK_SKEW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = dict(keys)
        self._region = region
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

    def check_scope(self, parts: SignedParts) -> None:
        """Everything that can be checked without the body: the key is known, the
        request time is acceptable (presigned: dated within the skew, not expired), the
        credential scope names this region, and Host is signed. Raises SignatureError."""
        if parts.access_key not in self._keys:
            raise SignatureError(
                AuthFailure.UNKNOWN_KEY, "The security token included in the request is invalid."
            )
        signed_at = _parse_amz_date(parts.amz_date)
        now = self._clock()
        if parts.presigned:
            self._check_presigned_time(parts, signed_at, now)
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
            raise SignatureError(
                AuthFailure.SKEWED,
                message,
                extra={
                    "RequestTime": parts.amz_date,
                    "ServerTime": _iso8601(now),
                    "MaxAllowedSkewMilliseconds": str(self._max_skew * 1000),
                },
            )
        if self._region is not None and parts.region != self._region:
            if parts.presigned:
                s3_message = (
                    f"Error parsing the X-Amz-Credential parameter; the region "
                    f"'{parts.region}' is wrong; expecting '{self._region}'"
                )
            else:
                s3_message = (
                    f"The authorization header is malformed; the region '{parts.region}' "
                    f"is wrong; expecting '{self._region}'"
                )
            error = SignatureError(
                AuthFailure.WRONG_REGION,
                f"Credential should be scoped to a valid region, not '{parts.region}'. ",
                extra={"Region": self._region},
            )
            error.s3_message = s3_message
            error.presigned = parts.presigned
            raise error
        if "host" not in parts.signed_headers:
            raise SignatureError(
                AuthFailure.INCOMPLETE,
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            )

    def _check_presigned_time(self, parts: SignedParts, signed_at: float, now: float) -> None:
        expires_at = signed_at + parts.expires
        if signed_at > now + self._max_skew:
            raise SignatureError(
                AuthFailure.NOT_YET_VALID,
                f"Signature not yet current: {parts.amz_date} is still later than "
                f"{_format_amz_date(now + self._max_skew)} ({_format_amz_date(now)} + 15 min.)",
                extra={
                    "X-Amz-Date": parts.amz_date,
                    "Expires": _iso8601(expires_at),
                    "ServerTime": _iso8601(now),
                },
            )
        if now > expires_at or parts.expires == 0:
            raise SignatureError(
                AuthFailure.EXPIRED,
                f"Signature expired: {parts.amz_date} is now earlier than "
                f"{_format_amz_date(now - parts.expires)} "
                f"({_format_amz_date(now)} - {parts.expires} sec.)",
                extra={
                    "X-Amz-Expires": str(parts.expires),
                    "Expires": _iso8601(expires_at),
                    "ServerTime": _iso8601(now),
                },
            )

    def verify(
        self,
        parts: SignedParts,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        payload_hash: str,
        *,
        scope_checked: bool = False,
    ) -> AuthContext:
        """Check the signature; raises SignatureError, returns who signed.
        ``scope_checked``: the caller already ran ``check_scope`` on these parts."""
        if not scope_checked:
            self.check_scope(parts)
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
        if parts.service == "s3":
            _check_s3_headers_signed(parts, headers)
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


def _check_s3_headers_signed(parts: SignedParts, headers: Mapping[str, str]) -> None:
    """S3 refuses a request carrying an x-amz-* header that the signature does not
    cover: such a header could change what a signed request does (x-amz-copy-source
    turns a PutObject into a copy)."""
    signed = parts.signed_headers
    unsigned = [
        name
        for name in headers
        if name.startswith("x-amz-") and name not in signed and name not in _S3_UNSIGNED_ALLOWED
    ]
    if unsigned:
        raise SignatureError(
            AuthFailure.HEADERS_NOT_SIGNED,
            "There were headers present in the request which were not signed",
            extra={"HeadersNotSigned": ", ".join(unsigned)},
        )


def _iso8601(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
