"""Sans-IO codec of the Handle protocol (RFC 3651/3652 as deployed at 2.10): bytes in, records out.

Modules, each with one job; none imports asyncio, socket or lmdb:

- ``constants``: op codes, response codes, flags, limits.
- ``errors``: ``HandleProtocolError`` (carries the response code) and its subclasses.
- ``wire``: the bounded ``Reader`` and counted-field writers.
- ``values``: handle values, HS_ADMIN and HS_SITE data.
- ``envelope``: the 20-byte envelope and version negotiation.
- ``message``: whole messages, request/response bodies, answers, request digests.
- ``udp``: 512-byte datagrams and reassembly; ``tcp``: stream framing.
"""
