"""Cluster mode: the write log on NATS JetStream, membership, and what clients see of the members."""
