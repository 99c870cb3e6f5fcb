"""What the inference service accepts, and the one-line JSON error of every request it refuses.

Images come from an Open Inference Protocol request or a multipart form, within bounds.

A request that breaks any rule is refused whole, with a 4xx status and ``{"error": "<one line>"}``: a line
PC retries or raises an alarm, it never gets half an answer.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

#: An ASGI application and its parts, as Starlette types them.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class BadRequest(Exception):
    """A request the service refuses: its HTTP status and the one line that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())  # one line, whatever the cause held


@dataclass(frozen=True)
class RequestImage:
    """One image of a request: the name it answers to (its file name, or its place) and its encoded bytes."""

    name: str
    content: bytes


def images_from_infer_request(inputs: list[Any], max_images: int) -> list[RequestImage]:
    """The images of an Open Inference Protocol request: one ``BYTES`` input of encoded image files.

    In JSON each element is the file base64-encoded; with the binary data extension, the file's bytes.

    Raises:
        BadRequest: Anything else: no input or several, another datatype, a shape that is not the count of
            its elements, bad base64, too many images, an empty one.
    """
    if len(inputs) != 1:
        raise BadRequest(400, f"expected one input of BYTES (the encoded images), got {len(inputs)} inputs")
    tensor = inputs[0]
    if tensor.datatype != "BYTES":
        raise BadRequest(
            400, f"input {tensor.name!r} is {tensor.datatype}: send BYTES, one encoded image each"
        )
    data = list(tensor.data) if tensor.data is not None else []
    if list(tensor.shape) != [len(data)]:
        raise BadRequest(
            400, f"input {tensor.name!r} has shape {list(tensor.shape)} for {len(data)} elements"
        )
    _check_count(len(data), max_images)
    return [
        RequestImage(f"{tensor.name}[{number}]", _content(item, number)) for number, item in enumerate(data)
    ]


def _content(item: Any, number: int) -> bytes:
    if isinstance(item, bytes):
        content = item
    elif isinstance(item, str):
        try:
            content = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(400, f"image {number}: not valid base64") from None
    else:
        raise BadRequest(400, f"image {number}: expected a base64 string, got {type(item).__name__}")
    if not content:
        raise BadRequest(400, f"image {number}: empty")
    return content


def _check_count(count: int, max_images: int) -> None:
    if count == 0:
        raise BadRequest(400, "no images in the request")
    if count > max_images:
        raise BadRequest(413, f"{count} images in one request, more than the {max_images} allowed")


async def images_from_form(form: Any, max_images: int) -> list[RequestImage]:
    """The files of a ``multipart/form-data`` request, in order (any field name).

    Raises:
        BadRequest: No files, a field that is not a file, too many, an empty one.
    """
    images: list[RequestImage] = []
    for field, value in form.multi_items():
        if isinstance(value, str):
            raise BadRequest(400, f"form field {field!r} is text: send each image as a file")
        _check_count(len(images) + 1, max_images)
        content = await value.read()
        if not content:
            raise BadRequest(400, f"image {value.filename or field!r}: empty")
        images.append(RequestImage(value.filename or f"{field}[{len(images)}]", content))
    _check_count(len(images), max_images)
    return images


class BodyLimit:
    """ASGI middleware: a request body larger than ``max_bytes`` is refused (413) before it is all read."""

    def __init__(self, app: App, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Passes the request on, counting its body's bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _drain(receive)
            await error_response(send, BadRequest(413, self._too_large(int(declared))))
            return
        received = 0

        async def counting() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                await _drain(receive)
                raise BadRequest(413, self._too_large(received))
            return message

        await self.app(scope, counting, send)

    def _too_large(self, size: int) -> str:
        return f"request body of {size} bytes or more, larger than the {self.max_bytes} allowed"


async def _drain(receive: Receive) -> None:
    """Reads the rest of a refused body, dropping it: a client still sending would see a reset, not a 413."""
    message: Message = {"more_body": True}
    while message.get("more_body", False) and message.get("type") != "http.disconnect":
        message = await receive()


async def error_response(send: Send, error: BadRequest) -> None:
    """Sends ``{"error": ...}`` with the error's status, from ASGI middleware."""
    import orjson

    await json_response(send, error.status, orjson.dumps({"error": error.message}))


async def json_response(send: Send, status: int, body: bytes) -> None:
    """Sends a JSON body with its status, from ASGI middleware."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
