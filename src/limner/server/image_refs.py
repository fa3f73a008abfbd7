"""A JSON edit's `{image_url}` / `{file_id}` references -> the uploads they name.

Data URLs always work. A `file_id` is read from the Files API's store. An http(s) URL is
fetched only from a host the operator lists (`image_url_hosts`, none by default), with no
redirects, a size cap and a deadline, so a client can never make the server a proxy into
its own network.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from limner.errors import InvalidRequest, NotFound
from limner.input_images import Upload
from limner.protocol.images import ImageRef
from limner.store.files import FileStore

DATA_URL_MAX = 20_971_520
"""The spec's longest `image_url` (characters)."""
FETCH_TIMEOUT_S = 10.0
_DATA_URL = re.compile(r"data:([\w.+/-]*)((?:;[\w=.+-]+)*?)(;base64)?,(.*)", re.DOTALL)


async def resolve(refs: Sequence[ImageRef], param: str, files: FileStore,
                  hosts: Sequence[str], max_bytes: int, owner: str = "") -> list[Upload]:
    """Every reference's bytes, in order; `param` names the field in errors (`images[1]`)."""
    uploads = []
    field = "image" if param == "images" else "mask"
    for index, ref in enumerate(refs):
        name = f"{param}[{index}]" if param == "images" else param
        uploads.append(await resolve_one(ref, name, field, files, hosts, max_bytes, owner))
    return uploads


async def resolve_one(ref: ImageRef, name: str, field: str, files: FileStore,
                      hosts: Sequence[str], max_bytes: int, owner: str = "") -> Upload:
    """One reference's bytes as an upload of `field`; `name` is its path in errors, and a
    `file_id` is looked up among `owner`'s files only."""
    if (ref.image_url is None) == (ref.file_id is None):
        raise InvalidRequest(
            f"Invalid '{name}': provide exactly one of 'image_url' or 'file_id'.",
            param=name, code="invalid_value")
    if ref.file_id is not None:
        try:
            return Upload(field, files.get_bytes(ref.file_id, owner))
        except NotFound as exc:
            raise InvalidRequest(f"Invalid '{name}.file_id': no file '{ref.file_id}' exists.",
                                 param=f"{name}.file_id", code="invalid_value") from exc
    url = ref.image_url
    assert url is not None
    if len(url) > DATA_URL_MAX:
        raise InvalidRequest(
            f"Invalid '{name}.image_url': string too long. Expected a string with maximum "
            f"length {DATA_URL_MAX}, but got a string with length {len(url)} instead.",
            param=f"{name}.image_url", code="string_above_max_length")
    if url[:5].lower() == "data:":
        return _data_url(url, f"{name}.image_url", field)
    return await _fetch(url, f"{name}.image_url", field, hosts, max_bytes)


def _data_url(url: str, param: str, field: str) -> Upload:
    match = _DATA_URL.fullmatch(url)
    if match is None or match.group(3) is None:
        raise InvalidRequest(
            f"Invalid '{param}': expected a base64 data URL "
            "('data:image/png;base64,...') or an http(s) URL.", param=param,
            code="invalid_image_url")
    try:
        data = base64.b64decode(match.group(4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"Invalid '{param}': the data URL's base64 is not valid.",
                             param=param, code="invalid_image_url") from exc
    return Upload(field, data, match.group(1) or "application/octet-stream")


async def _fetch(url: str, param: str, field: str, hosts: Sequence[str],
                 max_bytes: int) -> Upload:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(
            f"Invalid '{param}': expected a data URL or an http(s) URL.", param=param,
            code="invalid_image_url")
    if parts.hostname.lower() not in {host.lower() for host in hosts} or parts.username:
        raise InvalidRequest(
            f"Invalid '{param}': this server does not fetch images from "
            f"'{parts.hostname}'. Send the image as a data URL or a file_id.", param=param,
            code="image_url_not_allowed")
    client = httpx.AsyncClient(follow_redirects=False, timeout=FETCH_TIMEOUT_S,
                               trust_env=False)
    try:
        async with client, client.stream("GET", url) as response:
            if response.status_code != 200:
                raise InvalidRequest(
                    f"Invalid '{param}': fetching the image answered {response.status_code} "
                    "(redirects are not followed).", param=param,
                    code="image_url_unreachable")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise InvalidRequest(
                        f"Invalid '{param}': the image is larger than {max_bytes:,} bytes.",
                        param=param, code="image_too_large")
                chunks.append(chunk)
            content_type = response.headers.get("content-type", "")
    except httpx.HTTPError as exc:
        raise InvalidRequest(f"Invalid '{param}': the image could not be fetched ({exc}).",
                             param=param, code="image_url_unreachable") from exc
    return Upload(field, b"".join(chunks), content_type or "application/octet-stream")
