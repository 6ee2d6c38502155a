"""Security log upload (日志上传): security-relevant events of the node, queued on disk and sent to the regional
situational-awareness platform as RFC 5424 syslog messages with JSON content.

    config.py    SecurityLogConfig: collector, transport, TLS files, queue directory and bounds
    events.py    event kinds and SecurityEvents, the API the rest of the node calls (appends to the queue only)
    queue.py     SecurityQueue: the bounded, disk-backed, multi-process queue (an LMDB environment of its own)
    syslog.py    RFC 5424 messages, RFC 6587 octet-counting frames, TCP / TLS (RFC 5425) / UDP (RFC 5426) senders
    relp.py      RELP without I/O: frames, responses, ClientSession (numbering, window, acknowledgements)
    relp_sender.py  RelpSender: a RELP session over TCP or TLS, the transport with application-level acks
    exporter.py  Exporter: drains the queue to the collector in order, at least once

Nothing here is imported by the hot path of resolution except events.py, which never does network I/O.
"""
