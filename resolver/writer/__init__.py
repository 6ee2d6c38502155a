"""The node's writer: the one process that appends write-log entries and applies them to the store (server.py),
the clients that send it entries (client.py), and their wire format (protocol.py)."""
