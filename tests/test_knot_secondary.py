"""Knot DNS (Debian `knot`) as an ordinary secondary of the DNS view: started by the test on loopback ports with
a configuration and storage of its own, it bootstraps the zone by AXFR, is told of a write by NOTIFY, and
fetches the change by IXFR. Skipped, with the reason printed, when knotd is not installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from resolver.handle.values import HandleValue
from storage.enterprises import add_prefix
from storage.store import Store
from storage.writes import put_identifier
from tests.servers import POLL_S, free_port, idnode, running_node, wait_until
from tests.test_dns_transfer import soa_serial, transfer

ZONE = "id.test."
KNOTD = shutil.which("knotd") or next((p for p in ("/usr/sbin/knotd", "/sbin/knotd") if Path(p).exists()), None)
START_TIMEOUT_S = 30.0  #: knotd starts and bootstraps a small zone in well under a second
#: A write reaches the secondary: the node notices its position within 0.2 s and sends NOTIFY, Knot asks for
#: the SOA and then the IXFR, all on loopback. The task asks for the new record within 2 s.
PROPAGATION_S = 2.0
QUERY_TIMEOUT_S = 1.0

pytestmark = [
    pytest.mark.skipif(KNOTD is None, reason="knotd not installed: apt-get install knot (.ci/run installs it)"),
    pytest.mark.slow,
]

KNOT_CONF = """\
server:
    rundir: "{dir}"
    listen: 127.0.0.1@{port}
log:
  - target: stderr
    any: info
database:
    storage: "{dir}/db"
remote:
  - id: idnode
    address: 127.0.0.1@{primary_port}
acl:
  - id: notify-from-idnode
    address: 127.0.0.1
    action: notify
template:
  - id: default
    storage: "{dir}/zones"
    zonefile-sync: -1
    zonefile-load: none
    journal-content: all
zone:
  - domain: {zone}
    master: idnode
    acl: notify-from-idnode
"""


class Knot:
    """knotd in the foreground with a configuration of its own; `log` is what it wrote so far."""

    def __init__(self, port: int, primary_port: int):
        self.dir = Path(tempfile.mkdtemp(prefix="knot-"))  # short: knotd's control socket lives here
        (self.dir / "db").mkdir()
        (self.dir / "zones").mkdir()
        self.port = port
        conf = self.dir / "knot.conf"
        conf.write_text(KNOT_CONF.format(dir=self.dir, port=self.port, primary_port=primary_port, zone=ZONE))
        self.lines: list[str] = []
        self.process = subprocess.Popen([KNOTD, "-c", str(conf)], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def query(self, name: str, rdtype: str) -> dns.message.Message | None:
        try:
            return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=self.port,
                                 timeout=QUERY_TIMEOUT_S)  # fmt: skip
        except (OSError, dns.exception.Timeout):
            return None

    def serial(self) -> int | None:
        answer = self.query(ZONE, "SOA")
        if answer is None or answer.rcode() != dns.rcode.NOERROR or not answer.answer:
            return None
        return answer.answer[0][0].serial

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)
        self.process.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def primary_and_knot(tmp_path_factory):
    data = tmp_path_factory.mktemp("knot-primary") / "store"
    with Store(data, create=True) as store:
        add_prefix(store, "88.100.7", "Brakes Ltd")
        put_identifier(store, "88.100.7/DISC-1", [HandleValue(1, "URL", b"https://brakes.example/disc/1"),
                                                  HandleValue(2, "EMAIL", b"quality@brakes.example")])  # fmt: skip
    dns_port, knot_port = free_port(), free_port()
    extra = ("--dns-port", str(dns_port), "--dns-transfer-allow", "127.0.0.1",
             "--dns-notify", f"127.0.0.1:{knot_port}")  # fmt: skip
    with running_node(data, workers=1, extra=extra) as node:
        node.data = data
        knot = Knot(knot_port, dns_port)
        try:
            serial = soa_serial(dns_port)
            wait_until(lambda: knot.serial() == serial or knot.process.poll() is not None,
                       "Knot bootstrapped the zone", START_TIMEOUT_S)  # fmt: skip
            assert knot.process.poll() is None, knot.log
            yield node, knot
        finally:
            knot.stop()


def test_knot_serves_the_zone_it_transferred(primary_and_knot):
    node, knot = primary_and_knot
    answer = knot.query("disc-1._.7.100.88.id.test.", "TXT")
    assert answer is not None and answer.rcode() == dns.rcode.NOERROR
    assert sorted(b"".join(r.strings) for r in answer.answer[0]) == [
        b"1 URL https://brakes.example/disc/1",
        b"2 EMAIL quality@brakes.example",
    ]
    assert "AXFR, incoming" in knot.log


def test_a_write_reaches_knot_by_notify_and_ixfr(primary_and_knot, tmp_path):
    node, knot = primary_and_knot
    old = soa_serial(node.dns_port)
    at = len(knot.lines)
    records = tmp_path / "write.ndjson"
    records.write_text(
        json.dumps({"handle": "88.100.7/DISC-1", "values": [
            {"index": 1, "type": "URL", "data": "https://brakes.example/disc/1-rev2"},
            {"index": 2, "type": "EMAIL", "data": "quality@brakes.example"}]}) + "\n"
        + json.dumps({"handle": "88.100.7/DISC-2", "values": [
            {"index": 1, "type": "EMAIL", "data": "quality@brakes.example"}]}) + "\n"
    )  # fmt: skip
    done = idnode("register", "--data", str(node.data), str(records))
    assert done.returncode == 0, done.stdout + done.stderr
    new = soa_serial(node.dns_port)
    assert new != old

    def has_new_record() -> bool:
        answer = knot.query("disc-2._.7.100.88.id.test.", "TXT")
        return answer is not None and answer.rcode() == dns.rcode.NOERROR and bool(answer.answer)

    deadline = time.monotonic() + PROPAGATION_S
    while not has_new_record():
        assert time.monotonic() < deadline, f"Knot did not answer the new record within {PROPAGATION_S} s:\n" + (
            "".join(knot.lines[at:]) + node.output[-2000:]
        )
        time.sleep(POLL_S)  # polling a secondary we do not control, with a deadline: it sends no signal
    changed = knot.query("disc-1._.7.100.88.id.test.", "URI")
    assert [r.target for r in changed.answer[0]] == [b"https://brakes.example/disc/1-rev2"]

    since = "".join(knot.lines[at:])
    assert "notify, incoming" in since
    assert "IXFR, incoming" in since and "AXFR, incoming" not in since, since
    assert knot.serial() == new

    # The node's IXFR from the old serial: exactly the changed records, no others.
    rcode, rrs, _ = transfer(node.dns_port, "IXFR", serial=old)
    assert rcode == dns.rcode.NOERROR
    soas = [i for i, rr in enumerate(rrs) if rr[1] == dns.rdatatype.SOA]
    assert len(soas) == 4
    deleted, added = set(rrs[soas[1] + 1 : soas[2]]), set(rrs[soas[2] + 1 : soas[3]])
    one, two = "disc-1._.7.100.88.id.test.", "disc-2._.7.100.88.id.test."
    assert deleted == {
        (one, dns.rdatatype.TXT, 86400, '"1 URL https://brakes.example/disc/1"'),
        (one, dns.rdatatype.URI, 86400, '1 1 "https://brakes.example/disc/1"'),
    }
    assert added == {
        (one, dns.rdatatype.TXT, 86400, '"1 URL https://brakes.example/disc/1-rev2"'),
        (one, dns.rdatatype.URI, 86400, '1 1 "https://brakes.example/disc/1-rev2"'),
        (two, dns.rdatatype.TXT, 86400, '"1 EMAIL quality@brakes.example"'),
    }
