"""The node over HTTP (aiohttp): Handle.Net-compatible REST resolution and writes, browser redirects, the
native protocol tunnelled as `POST /`, batch registration, the operator's API and statistics.

`app.py` builds the application and starts it on the worker's SO_REUSEPORT sockets; the handlers are split
by concern (resolve, writes, batch, admin, stats) and share `common.py` (errors, limits, JSON) and `auth.py`
(HTTP Basic with the Handle.Net user form). Storage work goes through storage/writes.py and the resolution
service, never through lmdb directly.
"""
