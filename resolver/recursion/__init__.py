"""Recursion to enterprise nodes and their probing.

A prefix served by an enterprise's own node is answered 302 (a referral to its HS_SITE). The national SDKs
do not follow referrals, so for requests that ask for recursion (REC), or for every request when the
operator sets `recursion = "always"`, the worker asks the enterprise node itself and answers with what it
said (resolver/recursion/recursor.py), caching answers within their TTL. Each enterprise node is probed
with GET_SITE_INFO by the node's writer process, once per node, and the results are kept in a small state
file that workers, `idnode prefix list`, /metrics and the acceptance report read (probe.py).

Modules: cache.py (bounded TTL cache), upstream.py (asking an enterprise node: UDP, TCP fallback),
recursor.py (the decision, loop protection, concurrency bounds, single flight), probe.py (probing).
"""
