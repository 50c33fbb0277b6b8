"""A small asynchronous S3 client over httpx, for the calls a resumable multipart upload needs.

Why not a library: `aiobotocore` (botocore) cannot be installed beside the operator's
`kubernetes` client (they pin incompatible `python-dateutil` majors), and `obstore` (Rust's
object_store) uploads in multipart but never hands out the upload's id, nor lists its parts,
so a restarted pod could not continue an upload. These few calls (create, upload part, list
parts, complete, abort, head, get, put, delete, create bucket) are all the recorder needs,
signed with AWS Signature Version 4. Payload hashes are computed by the caller, off the event loop.

`presign_get` makes a presigned GET URL (SigV4 in the query string) with the same signing code;
the operator and the gateway use it too (their image carries this one module, which needs only
httpx and the standard library).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

import httpx

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True, repr=False)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(access_key_id={self.access_key_id!r}, secret_access_key=<redacted>)"


class S3Error(Exception):
    """A request the server refused (`status`, S3 `code`, its message) or could not be made
    (status 0, code the exception's name)."""

    def __init__(self, op: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{op}: {status or 'no answer'} {code}: {message}".strip())
        self.op, self.status, self.code, self.message = op, status, code, message


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    etag: str  # without quotes


@dataclass(frozen=True)
class Head:
    size: int
    etag: str  # without quotes


def quote(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def quote_key(key: str) -> str:
    return "/".join(quote(segment) for segment in key.split("/"))


def multipart_etag(md5_hexes: list[str]) -> str:
    """The ETag S3 gives an object completed from parts with these MD5s."""
    joined = b"".join(bytes.fromhex(h) for h in md5_hexes)
    return f"{hashlib.md5(joined).hexdigest()}-{len(md5_hexes)}"


def _sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signature(secret_access_key: str, day: str, region: str, string_to_sign: str) -> str:
    """SigV4: the signing key for (day, region, s3) applied to `string_to_sign` (hex)."""
    key = _sign(("AWS4" + secret_access_key).encode(), day)
    for part in (region, "s3", "aws4_request"):
        key = _sign(key, part)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def _string_to_sign(amz_date: str, scope: str, canonical_request: str) -> str:
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    return "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, digest])


def object_address(
    endpoint: str, bucket: str, key: str | None, force_path_style: bool
) -> tuple[str, str, str]:
    """(scheme://host, host, canonical path) of `key` in `bucket` (None: the bucket itself)."""
    parsed = urllib.parse.urlsplit(endpoint.rstrip("/"))
    base_path = parsed.path.rstrip("/")
    host = parsed.netloc
    if force_path_style:
        path = f"{base_path}/{quote(bucket)}"
    else:
        host = f"{bucket}.{host}"
        path = base_path
    if key is not None:
        path += "/" + quote_key(key)
    elif not force_path_style:
        path += "/"
    return f"{parsed.scheme}://{host}", host, path or "/"


MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4's longest validity


def presign_get(
    endpoint: str,
    bucket: str,
    key: str,
    credentials: Credentials,
    *,
    region: str = "us-east-1",
    force_path_style: bool = False,
    expires_seconds: int = 3600,
    now: dt.datetime | None = None,
) -> str:
    """A URL anyone holding it can GET the object with, until `expires_seconds` after `now`
    (SigV4 query-string authentication, UNSIGNED-PAYLOAD). Pure: no request is made."""
    if not 1 <= expires_seconds <= MAX_PRESIGN_SECONDS:
        raise ValueError(f"expires_seconds must be 1..{MAX_PRESIGN_SECONDS}")
    now = now or dt.datetime.now(dt.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/{region}/s3/aws4_request"
    base, host, path = object_address(endpoint, bucket, key, force_path_style)
    query = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{credentials.access_key_id}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires_seconds),
        "X-Amz-SignedHeaders": "host",
    }
    if credentials.session_token:
        query["X-Amz-Security-Token"] = credentials.session_token
    canonical_query = "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(query.items()))
    canonical = "\n".join(
        ["GET", path, canonical_query, f"host:{host}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    sig = signature(
        credentials.secret_access_key, day, region, _string_to_sign(amz_date, scope, canonical)
    )
    return f"{base}{path}?{canonical_query}&X-Amz-Signature={sig}"


def _text(node: ET.Element, tag: str) -> str:
    found = node.find(f"{{*}}{tag}")
    if found is None:
        found = node.find(tag)
    return (found.text or "") if found is not None else ""


def _parse_xml(body: bytes) -> ET.Element:
    return ET.fromstring(body)


class S3Client:
    """One bucket on one endpoint. `credentials` is called for every request, so keys read
    from files can change under a running pod."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        credentials: Callable[[], Credentials],
        *,
        region: str = "us-east-1",
        force_path_style: bool = False,
        timeout: float = 60.0,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.region = region
        self.force_path_style = force_path_style
        self.credentials = credentials
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0))

    async def aclose(self) -> None:
        await self._http.aclose()

    def _url(self, key: str | None, query: dict[str, str]) -> tuple[str, str, str]:
        """(url, canonical path, canonical query) for `key` (None: the bucket itself)."""
        base, _, path = object_address(self.endpoint, self.bucket, key, self.force_path_style)
        canonical_query = "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(query.items()))
        url = f"{base}{path}" + (f"?{canonical_query}" if query else "")
        return url, path, canonical_query

    async def request(
        self,
        op: str,
        method: str,
        key: str | None,
        *,
        query: dict[str, str] | None = None,
        body: bytes = b"",
        payload_sha256: str | None = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        query = query or {}
        url, canonical_path, canonical_query = self._url(key, query)
        creds = self.credentials()
        now = dt.datetime.now(dt.UTC)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        payload = payload_sha256 or hashlib.sha256(body).hexdigest()
        signed = {
            "host": httpx.URL(url).netloc.decode(),
            "x-amz-content-sha256": payload,
            "x-amz-date": amz_date,
            **{k.lower(): v.strip() for k, v in (headers or {}).items()},
        }
        if creds.session_token:
            signed["x-amz-security-token"] = creds.session_token
        names = sorted(signed)
        canonical = "\n".join(
            [
                method,
                canonical_path,
                canonical_query,
                "".join(f"{n}:{signed[n]}\n" for n in names),
                ";".join(names),
                payload,
            ]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        sig = signature(
            creds.secret_access_key, day, self.region, _string_to_sign(amz_date, scope, canonical)
        )
        signed["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={creds.access_key_id}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={sig}"
        )
        try:
            resp = await self._http.request(method, url, content=body, headers=signed)
        except httpx.HTTPError as exc:
            raise S3Error(op, 0, type(exc).__name__, str(exc) or repr(exc)) from exc
        if resp.status_code not in ok:
            code, message = f"HTTP{resp.status_code}", resp.reason_phrase
            if resp.content:
                try:
                    root = _parse_xml(resp.content)
                    code = _text(root, "Code") or code
                    message = _text(root, "Message") or message
                except ET.ParseError:
                    message = resp.text[:200]
            raise S3Error(op, resp.status_code, code, message)
        return resp

    # -- the calls -----------------------------------------------------------------------------

    async def create_bucket(self) -> None:
        await self.request("CreateBucket", "PUT", None, ok=(200, 409))

    async def create_multipart_upload(self, key: str, content_type: str) -> str:
        resp = await self.request(
            "CreateMultipartUpload",
            "POST",
            key,
            query={"uploads": ""},
            headers={"content-type": content_type},
        )
        upload_id = _text(_parse_xml(resp.content), "UploadId")
        if not upload_id:
            raise S3Error("CreateMultipartUpload", resp.status_code, "NoUploadId", resp.text[:200])
        return upload_id

    async def upload_part(
        self, key: str, upload_id: str, number: int, data: bytes, md5_hex: str, sha256_hex: str
    ) -> str:
        """Upload one part; the server checks it against Content-MD5 and the signed SHA-256.
        Returns its ETag (quotes removed)."""
        resp = await self.request(
            "UploadPart",
            "PUT",
            key,
            query={"partNumber": str(number), "uploadId": upload_id},
            body=data,
            payload_sha256=sha256_hex,
            headers={"content-md5": base64.b64encode(bytes.fromhex(md5_hex)).decode()},
        )
        return resp.headers.get("etag", "").strip('"')

    async def list_parts(self, key: str, upload_id: str) -> list[Part]:
        parts: list[Part] = []
        marker = "0"
        while True:
            resp = await self.request(
                "ListParts",
                "GET",
                key,
                query={"uploadId": upload_id, "part-number-marker": marker},
            )
            root = _parse_xml(resp.content)
            for node in root.findall("{*}Part") or root.findall("Part"):
                parts.append(
                    Part(
                        int(_text(node, "PartNumber")),
                        int(_text(node, "Size")),
                        _text(node, "ETag").strip('"'),
                    )
                )
            if _text(root, "IsTruncated").lower() != "true":
                return parts
            marker = _text(root, "NextPartNumberMarker") or str(parts[-1].number)

    async def complete_multipart_upload(self, key: str, upload_id: str, parts: list[Part]) -> str:
        body = "<CompleteMultipartUpload>" + "".join(
            f"<Part><PartNumber>{p.number}</PartNumber><ETag>&quot;{p.etag}&quot;</ETag></Part>"
            for p in parts
        )
        body += "</CompleteMultipartUpload>"
        resp = await self.request(
            "CompleteMultipartUpload",
            "POST",
            key,
            query={"uploadId": upload_id},
            body=body.encode(),
            headers={"content-type": "application/xml"},
        )
        root = _parse_xml(resp.content)  # a 200 can still carry an error
        if root.tag.endswith("Error"):
            raise S3Error(
                "CompleteMultipartUpload", 200, _text(root, "Code"), _text(root, "Message")
            )
        return _text(root, "ETag").strip('"')

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        await self.request(
            "AbortMultipartUpload", "DELETE", key, query={"uploadId": upload_id}, ok=(204, 200)
        )

    async def delete_object(self, key: str) -> None:
        await self.request("DeleteObject", "DELETE", key, ok=(204, 200))

    async def head_object(self, key: str) -> Head | None:
        try:
            resp = await self.request("HeadObject", "HEAD", key)
        except S3Error as exc:
            if exc.status == 404:
                return None
            raise
        return Head(int(resp.headers["content-length"]), resp.headers.get("etag", "").strip('"'))

    async def get_object(self, key: str) -> bytes:
        return (await self.request("GetObject", "GET", key)).content

    async def put_object(self, key: str, data: bytes, content_type: str) -> str:
        resp = await self.request(
            "PutObject",
            "PUT",
            key,
            body=data,
            headers={
                "content-type": content_type,
                "content-md5": base64.b64encode(hashlib.md5(data).digest()).decode(),
            },
        )
        return resp.headers.get("etag", "").strip('"')
