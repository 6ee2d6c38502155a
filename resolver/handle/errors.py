"""The one exception root of the Handle codec, carrying the response code an answer should use.

Codecs raise; only the server boundary turns an exception into an answer (or a drop, for
:class:`EnvelopeError`). Imports no asyncio, socket or lmdb.
"""

from __future__ import annotations

from .constants import ResponseCode


class HandleProtocolError(Exception):
    """The message does not follow the Handle protocol."""

    #: The response code an answer to the offending request carries.
    response_code: ResponseCode = ResponseCode.PROTOCOL_ERROR

    def __init__(self, message: str | None = None, response_code: ResponseCode | None = None) -> None:
        # The class docstring is the default message, as in dnspython's exceptions.
        super().__init__(message or (type(self).__doc__ or "").strip())
        if response_code is not None:
            self.response_code = response_code

    @property
    def message(self) -> str:
        return str(self)


class EnvelopeError(HandleProtocolError):
    """The message envelope cannot be read; the message is dropped, never answered."""


class UnexpectedResponseError(EnvelopeError):
    """A response arrived where a request was expected."""

    # Dropped like an unreadable envelope: answering it could bounce errors between two servers.


class InvalidHandleError(HandleProtocolError):
    """The handle is too long or not valid UTF-8."""

    response_code = ResponseCode.INVALID_HANDLE


class InvalidValueError(HandleProtocolError):
    """A handle value, or the data of a typed value (HS_ADMIN, HS_SITE), is malformed."""

    response_code = ResponseCode.INVALID_VALUE


class UnsupportedOperationError(HandleProtocolError):
    """The operation or message feature is not supported by this node."""

    response_code = ResponseCode.OPERATION_NOT_SUPPORTED
