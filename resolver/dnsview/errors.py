"""The one exception root of the DNS view, carrying the rcode an answer should use.

Name mapping and query checks raise; only :meth:`DnsView.answer` turns an exception into an answer
(or a drop). Imports no asyncio, socket or lmdb.
"""

from __future__ import annotations

from .constants import Rcode


class DnsViewError(Exception):
    """The query or name cannot be served by the DNS view."""

    #: The rcode an answer to the offending query carries.
    rcode: Rcode = Rcode.SERVFAIL

    def __init__(self, message: str | None = None) -> None:
        # The class docstring is the default message, as in dnspython's exceptions.
        super().__init__(message or (type(self).__doc__ or "").strip())


class NotInZone(DnsViewError, ValueError):
    """The name is not at or below the zone of the view."""

    rcode = Rcode.REFUSED


class NotAnIdentifier(DnsViewError, ValueError):
    """The name (or text) does not denote an identifier of this view."""

    rcode = Rcode.NXDOMAIN


class PrefixNodeName(NotAnIdentifier):
    """The name is a node of the prefix tree (or the zone apex): identifiers may lie below it."""

    # NOERROR without an answer (NODATA), never NXDOMAIN: a resolver may conclude from an NXDOMAIN that
    # nothing exists below the name either (RFC 8020), which would hide every identifier under it.
    rcode = Rcode.NOERROR


class MalformedQuery(DnsViewError):
    """The query is not a well-formed DNS message."""

    rcode = Rcode.FORMERR


class NotImplementedQuery(DnsViewError):
    """The query asks for an operation or type this view does not implement."""

    rcode = Rcode.NOTIMP


class RefusedQuery(DnsViewError):
    """The query is outside what this view serves (another class, a zone transfer)."""

    rcode = Rcode.REFUSED


class BadEdnsVersion(DnsViewError):
    """The query's OPT record asks for an EDNS version above 0."""

    rcode = Rcode.BADVERS


class CorruptValues(DnsViewError):
    """The store returned a values tail that does not decode."""

    rcode = Rcode.SERVFAIL
