"""The load generator's parts, one job each (the entry point is bench/loadgen.py):

spec.py        what to run (LoadSpec, DatasetSpec), its limits and checks
popularity.py  which identifiers are asked for: uniform or Zipf ranks over the data set
protocols.py   requests out, answers in: Handle UDP/TCP, DNS, HTTP; code names and what counts as an error
requests.py    the pre-encoded, seeded pool of requests a process sends
meter.py       one process's counts, latencies, warm-up, timeline, progress and stop condition
datagram.py    the hot loop over UDP sockets (Handle UDP, DNS)
stream.py      the hot loop over TCP connections (Handle TCP, HTTP)
report.py      merging processes into one result, percentiles, the text table
plot.py        the PNG: answers/s over time and the latency distribution

Nothing here imports the server (resolver.server) or the store.
"""
