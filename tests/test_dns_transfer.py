"""Zone transfers and NOTIFY of the DNS view: AXFR and IXFR (RFC 1995) to `dns_transfer_allow` over TCP,
NOTIFY (RFC 1996) to `dns_notify`, the SOA serial at the write-log position, and the zone journal they are
built from. A real `idnode serve` on 127.0.0.1 answers dnspython; writes go through `idnode register`.
Knot as a real secondary: tests/test_knot_secondary.py."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import replace
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.versioned
import dns.xfr
import dns.zone
import pytest

from resolver.config import ServeConfig, notify_target
from resolver.dnsview.names import NameMap
from resolver.dnsview.transfer import (
    MAX_TRANSFER_MESSAGE_BYTES,
    TransferAcl,
    ZoneTransfers,
    position_of,
    serial_of,
)
from resolver.dnsview.view import DnsView
from resolver.handle.values import HandleValue
from resolver.server.dns import DnsNotifier, DnsTcpProtocol
from storage import zonejournal
from storage.enterprises import add_prefix, set_prefix_enabled
from storage.store import Store
from storage.writes import delete_identifier, put_identifier
from storage.zonesnapshot import ZoneSnapshot
from tests.conftest import copy_demo_store
from tests.servers import free_port, idnode, running_node

ZONE = "id.test."
ORIGIN = dns.name.from_text(ZONE)
TIMEOUT_S = 5.0  #: one transfer or query on loopback; far above its real time
NOTIFY_WAIT_S = 10.0  #: the node polls its position every 0.2 s; far above that, no NOTIFY is coming
A = "88.100.1/DNS-A"
B = "88.100.1/DNS-B"


# --- helpers --------------------------------------------------------------------------------------------------
def record(handle: str, *values: tuple[int, str, str]) -> dict:
    return {"handle": handle, "values": [{"index": i, "type": t, "data": d} for i, t, d in values]}


def register(node, tmp_path: Path, *records: dict) -> None:
    """Write through the node's own path (`idnode register`), as an operator would."""
    path = tmp_path / f"records-{time.monotonic_ns()}.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    done = idnode("register", "--data", str(node.data), str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def soa_serial(port: int) -> int:
    answer = dns.query.udp(dns.message.make_query(ZONE, "SOA"), "127.0.0.1", port=port, timeout=TIMEOUT_S)
    return answer.answer[0][0].serial


def zone_position(data: Path) -> int:
    with Store(data, readonly=True) as store, ZoneSnapshot(store) as snapshot:
        return snapshot.position


def transfer(port: int, rdtype: str, serial: int | None = None, source: str = "127.0.0.1"):
    """(rcode, answer RRs in order, message sizes) of a transfer, read off the TCP stream message by message.
    The stream ends (RFC 1995 §4, RFC 5936 §2.2) at the second SOA of the zone's serial in the AXFR form, the
    third in the condensed IXFR form, or after a lone SOA (an IXFR from the current serial)."""
    query = dns.message.make_query(ZONE, rdtype)
    if serial is not None:
        query.authority.append(
            dns.rrset.from_text(ZONE, 0, "IN", "SOA", f"ns1.{ZONE} hostmaster.{ZONE} {serial} 0 0 0 0")
        )
    rrs: list[tuple[str, int, int, str]] = []
    sizes = []
    with socket.create_connection(("127.0.0.1", port), TIMEOUT_S, source_address=(source, 0)) as sock:
        dns.query.send_tcp(sock, query, time.time() + TIMEOUT_S)
        while True:
            wire, _ = _receive(sock)
            sizes.append(len(wire))
            message = dns.message.from_wire(wire, one_rr_per_rrset=True)
            if message.rcode() != dns.rcode.NOERROR:
                return message.rcode(), [], sizes
            for rrset in message.answer:
                for rdata in rrset:
                    rrs.append((rrset.name.to_text(), rrset.rdtype, rrset.ttl, rdata.to_text()))
            if _complete(rrs) or (rdtype == "IXFR" and len(rrs) == 1):  # a lone SOA: already up to date
                return dns.rcode.NOERROR, rrs, sizes


def _receive(sock: socket.socket) -> tuple[bytes, float]:
    head = _read_exactly(sock, 2)
    return _read_exactly(sock, int.from_bytes(head, "big")), time.time()


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "the node closed the connection in the middle of a transfer"
        data += chunk
    return data


def _complete(rrs: list) -> bool:
    if not rrs or rrs[0][1] != dns.rdatatype.SOA:
        return False
    first = rrs[0][3]
    closing = sum(1 for rr in rrs if rr[1] == dns.rdatatype.SOA and rr[3] == first)
    incremental = len(rrs) > 1 and rrs[1][1] == dns.rdatatype.SOA
    return closing >= (3 if incremental else 2)


def soa_serial_of(rr: tuple) -> int:
    return int(rr[3].split()[2])


def without_soa(rrs: list) -> set:
    return {rr for rr in rrs if rr[1] != dns.rdatatype.SOA}


# --- a node with transfers, NOTIFY to a socket of the test -------------------------------------------------------
@pytest.fixture(scope="module")
def secondary():
    """The test's stand-in for a secondary: a UDP socket the node sends its NOTIFYs to."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory, demo_store_dir, secondary):
    data = copy_demo_store(demo_store_dir, tmp_path_factory.mktemp("xfr"))
    dns_port = free_port()
    extra = ("--dns-port", str(dns_port), "--dns-transfer-allow", "127.0.0.1",
             "--dns-notify", f"127.0.0.1:{secondary.getsockname()[1]}")  # fmt: skip
    with running_node(data, workers=2, extra=extra) as running:
        running.data = data
        yield running


def test_the_soa_serial_is_the_position_of_the_last_zone_change_plus_one(node, tmp_path):
    assert soa_serial(node.dns_port) == zone_position(node.data) + 1
    before = soa_serial(node.dns_port)
    register(node, tmp_path, record("88.100.1/SERIAL", (1, "EMAIL", "s@x")))
    assert soa_serial(node.dns_port) == zone_position(node.data) + 1 > before


def test_axfr_carries_every_record_of_export_zone_in_messages_of_at_most_64_kib(node, tmp_path):
    rcode, rrs, sizes = transfer(node.dns_port, "AXFR")
    assert rcode == dns.rcode.NOERROR
    assert len(sizes) > 1 and max(sizes) <= MAX_TRANSFER_MESSAGE_BYTES  # streamed, many records a message
    assert rrs[0][1] == rrs[-1][1] == dns.rdatatype.SOA
    assert soa_serial_of(rrs[0]) == soa_serial(node.dns_port)
    exported = idnode("export-zone", "--data", str(node.data), "--zone", ZONE)
    assert exported.returncode == 0, exported.stderr
    zone = dns.zone.from_text(exported.stdout, ORIGIN, relativize=False)
    expected = {
        (name.to_text(), rdataset.rdtype, rdataset.ttl, rdata.to_text())
        for name, rdataset in zone.iterate_rdatasets()
        for rdata in rdataset
        if rdataset.rdtype != dns.rdatatype.SOA
    }
    assert without_soa(rrs) == expected  # the same identifiers and rdata as the exported zone: one rule
    assert len(expected) > 2000


@pytest.mark.parametrize("rdtype", ["AXFR", "IXFR"])
def test_a_peer_not_allowed_is_refused(node, rdtype):
    rcode, rrs, _ = transfer(node.dns_port, rdtype, serial=1 if rdtype == "IXFR" else None, source="127.0.0.2")
    assert rcode == dns.rcode.REFUSED and rrs == []


def test_transfers_over_udp_stay_refused(node):
    answer = dns.query.udp(dns.message.make_query(ZONE, "AXFR"), "127.0.0.1", port=node.dns_port,
                           timeout=TIMEOUT_S)  # fmt: skip
    assert answer.rcode() == dns.rcode.REFUSED


def test_ixfr_carries_only_the_changed_records(node, tmp_path):
    register(node, tmp_path, record(A, (1, "URL", "https://a.example/1"), (2, "EMAIL", "a@x")))
    old = soa_serial(node.dns_port)
    before = dns.versioned.Zone(ORIGIN)
    dns.query.inbound_xfr("127.0.0.1", before, port=node.dns_port, timeout=TIMEOUT_S)

    register(node, tmp_path, record(A, (1, "URL", "https://a.example/2"), (2, "EMAIL", "a@x")),
             record(B, (1, "EMAIL", "b@x")))  # fmt: skip
    new = soa_serial(node.dns_port)
    rcode, rrs, _ = transfer(node.dns_port, "IXFR", serial=old)
    assert rcode == dns.rcode.NOERROR
    soas = [i for i, rr in enumerate(rrs) if rr[1] == dns.rdatatype.SOA]
    assert [soa_serial_of(rrs[i]) for i in soas] == [new, old, new, new]
    deleted, added = set(rrs[soas[1] + 1 : soas[2]]), set(rrs[soas[2] + 1 : soas[3]])
    a, b = "dns-a._.1.100.88.id.test.", "dns-b._.1.100.88.id.test."
    assert deleted == {
        (a, dns.rdatatype.TXT, 86400, '"1 URL https://a.example/1"'),
        (a, dns.rdatatype.URI, 86400, '1 1 "https://a.example/1"'),
    }
    assert added == {
        (a, dns.rdatatype.TXT, 86400, '"1 URL https://a.example/2"'),
        (a, dns.rdatatype.URI, 86400, '1 1 "https://a.example/2"'),
        (b, dns.rdatatype.TXT, 86400, '"1 EMAIL b@x"'),
    }  # "2 EMAIL a@x" did not change: in neither

    # Applied to the zone as it was, the difference gives the zone as it is.
    query, _ = dns.xfr.make_query(before)
    assert query.question[0].rdtype == dns.rdatatype.IXFR
    dns.query.inbound_xfr("127.0.0.1", before, query, port=node.dns_port, timeout=TIMEOUT_S)
    after = dns.versioned.Zone(ORIGIN)
    dns.query.inbound_xfr("127.0.0.1", after, port=node.dns_port, timeout=TIMEOUT_S)
    assert before == after


def test_ixfr_at_the_current_serial_is_the_soa_alone(node):
    serial = soa_serial(node.dns_port)
    rcode, rrs, sizes = transfer(node.dns_port, "IXFR", serial=serial)
    assert rcode == dns.rcode.NOERROR and len(rrs) == 1 and len(sizes) == 1
    assert soa_serial_of(rrs[0]) == serial


def test_ixfr_across_a_bulk_load_or_from_an_unknown_serial_sends_the_whole_zone(node, tmp_path):
    old = soa_serial(node.dns_port)
    path = tmp_path / "bulk.ndjson"
    path.write_text(json.dumps(record("88.100.1/BULK-1", (1, "EMAIL", "bulk@x"))) + "\n")
    loaded = idnode("load", "--data", str(node.data), str(path))
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    _, full, _ = transfer(node.dns_port, "AXFR")
    for serial in (old, soa_serial(node.dns_port) + 10):  # across the load; ahead of ours (not our serial)
        rcode, rrs, _ = transfer(node.dns_port, "IXFR", serial=serial)
        assert rcode == dns.rcode.NOERROR
        assert rrs[1][1] != dns.rdatatype.SOA  # the AXFR form: SOA, the zone, SOA
        assert without_soa(rrs) == without_soa(full)
        assert ("bulk-1._.1.100.88.id.test.", dns.rdatatype.TXT, 86400, '"1 EMAIL bulk@x"') in rrs


def test_a_change_sends_a_notify_with_the_new_serial(node, secondary, tmp_path):
    secondary.settimeout(0)
    try:  # NOTIFYs of earlier writes (and the one at start) are not this test's
        while True:
            secondary.recv(65535)
    except BlockingIOError:
        pass
    register(node, tmp_path, record("88.100.1/NOTIFIED", (1, "EMAIL", "n@x")))
    serial = soa_serial(node.dns_port)
    secondary.settimeout(NOTIFY_WAIT_S)
    while True:
        wire, peer = secondary.recvfrom(65535)
        notify = dns.message.from_wire(wire)
        assert notify.opcode() == dns.opcode.NOTIFY and notify.flags & dns.flags.AA
        assert notify.question[0].name == ORIGIN and notify.question[0].rdtype == dns.rdatatype.SOA
        if notify.answer[0][0].serial == serial:
            break
    secondary.sendto(dns.message.make_response(notify).to_wire(), peer)  # acknowledged: no retry


# --- the serial ---------------------------------------------------------------------------------------------
def test_serials_follow_positions_and_wrap_per_rfc_1982():
    assert serial_of(0) == 1 and serial_of(41) == 42
    assert serial_of((1 << 32) - 1) == 0  # wraps
    assert position_of(42, 41) == 41 and position_of(40, 41) == 39
    assert position_of(5, (1 << 32) + 10) == (1 << 32) + 4  # across the wrap
    assert position_of(50, 41) is None  # ahead of ours
    assert position_of(0, 41) is None  # before position 0


def test_negative_answers_carry_the_new_serial_after_it_moves():
    view = DnsView(ZONE, {}.get)
    query = dns.message.make_query("nope._.1.100.88.id.test.", "TXT").to_wire()
    for _ in range(2):  # the second is replayed from the memo
        assert dns.message.from_wire(view.answer(query)).authority[0][0].serial == 1
    view.set_serial(7)
    assert dns.message.from_wire(view.answer(query)).authority[0][0].serial == 7


# --- settings -----------------------------------------------------------------------------------------------
def test_transfer_and_notify_settings_are_checked(tmp_path):
    assert notify_target("192.0.2.7") == ("192.0.2.7", 53)
    assert notify_target("192.0.2.7:5300") == ("192.0.2.7", 5300)
    assert notify_target("[2001:db8::7]:5300") == ("2001:db8::7", 5300)
    assert notify_target("2001:db8::7") == ("2001:db8::7", 53)
    for bad in ("ns1.example", "192.0.2.7:0", "[2001:db8::7", "192.0.2.7:x"):
        with pytest.raises(ValueError, match="dns_notify"):
            notify_target(bad)
    with pytest.raises(ValueError, match="dns_transfer_allow"):
        ServeConfig(tmp_path, dns_transfer_allow=["secondary.example"])
    acl = TransferAcl(["192.0.2.0/24", "::1"])
    assert acl.allows("192.0.2.9") and acl.allows("::ffff:192.0.2.9") and acl.allows("::1")
    assert not acl.allows("198.51.100.1") and not TransferAcl().allows("127.0.0.1")


# --- the journal --------------------------------------------------------------------------------------------
def url(n: int) -> list[HandleValue]:
    return [HandleValue(1, "URL", b"https://x.example/%d" % n)]


def test_the_journal_notes_each_change_with_the_record_before_it(store):
    add_prefix(store, "88.100.7", "Brakes Ltd")
    put_identifier(store, "88.100.7/A", url(1))
    first, raw1 = store.applied_position(), store.get("88.100.7/A")
    put_identifier(store, "88.100.7/A", url(2))
    raw2 = store.get("88.100.7/A")
    delete_identifier(store, "88.100.7/A")
    with store.env.begin() as txn:
        notes = list(zonejournal.notes_after(store, txn, first))
        assert zonejournal.covers(store, txn, first)
    assert [(n.position, n.key) for n in notes] == [(first + 1, b"88.100.7/A"), (first + 2, b"88.100.7/A")]
    assert [n.old_raw for n in notes] == [raw1, raw2]
    # Trimmed with the log's retention: an IXFR from before the floor is no longer possible.
    store.write(lambda txn: zonejournal.trim(store, txn, first + 2))
    with store.env.begin() as txn:
        assert [n.position for n in zonejournal.notes_after(store, txn, 0)] == [first + 2]
        assert not zonejournal.covers(store, txn, first) and zonejournal.covers(store, txn, first + 1)


def test_disabling_a_prefix_with_identifiers_is_a_bulk_note_over_its_keys(store):
    add_prefix(store, "88.100.7", "Brakes Ltd")
    add_prefix(store, "88.100.8", "Empty Ltd")
    put_identifier(store, "88.100.7/A", url(1))
    before = store.applied_position()
    set_prefix_enabled(store, "88.100.8", False)  # no identifiers: the zone does not change, nor its serial
    with store.env.begin() as txn:
        assert zonejournal.zone_position(store, txn) == before < store.applied_position(txn)
    set_prefix_enabled(store, "88.100.7", False)
    with store.env.begin() as txn:
        notes = list(zonejournal.notes_after(store, txn, before))
        assert zonejournal.zone_position(store, txn) == before + 2 == store.applied_position(txn)
    assert [(type(n).__name__, n.position) for n in notes] == [("Bulk", before + 2)]
    assert notes[0].first_key == b"88.100.7/"


def test_an_ixfr_over_a_disabled_prefix_sends_the_whole_zone(store):
    add_prefix(store, "88.100.7", "Brakes Ltd")
    put_identifier(store, "88.100.7/A", url(1))
    old = store.applied_position()
    set_prefix_enabled(store, "88.100.7", False)
    transfers = transfers_of(store)
    query = ixfr_query(serial_of(old))
    rrs = [rr for wire in transfers.messages(query, "127.0.0.1") for rr in parse(wire).answer]
    assert [rrset.rdtype for rrset in rrs] == [dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.SOA]


def transfers_of(store: Store, allowed=("127.0.0.1",)) -> ZoneTransfers:
    view = DnsView(ZONE, {}.get)
    return ZoneTransfers(view.names, view.soa, view.ns, lambda: ZoneSnapshot(store), TransferAcl(allowed),
                         time.time)  # fmt: skip


def ixfr_query(serial: int) -> bytes:
    query = dns.message.make_query(ZONE, "IXFR")
    query.authority.append(
        dns.rrset.from_text(ZONE, 0, "IN", "SOA", f"ns1.{ZONE} hostmaster.{ZONE} {serial} 0 0 0 0")
    )
    return query.to_wire()


def parse(wire: bytes) -> dns.message.Message:
    return dns.message.from_wire(wire, one_rr_per_rrset=True, origin=ORIGIN)


# --- streaming ----------------------------------------------------------------------------------------------
class PushBackTransport:
    """A transport that takes `window` bytes, then pushes back (pause_writing) until `drain()`."""

    def __init__(self, window: int):
        self.window = window
        self.written = bytearray()
        self.unread = 0
        self.paused = False
        self.reading = True
        self.protocol: DnsTcpProtocol | None = None

    def write(self, data: bytes) -> None:
        self.written += data
        self.unread += len(data)
        if self.unread > self.window and not self.paused:
            self.paused = True
            self.protocol.pause_writing()

    def drain(self) -> None:
        self.unread = 0
        if self.paused:
            self.paused = False
            self.protocol.resume_writing()

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


WINDOW_BYTES = 16_384  #: what the fake peer takes before it pushes back: a fraction of the demo zone


def framed(message: bytes) -> bytes:
    return len(message).to_bytes(2, "big") + message


def messages_of(stream: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(stream):
        n = int.from_bytes(stream[pos : pos + 2], "big")
        out.append(stream[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def test_a_transfer_is_written_only_as_fast_as_the_peer_reads_and_answers_keep_their_order(demo_store_copy):
    async def run() -> tuple[PushBackTransport, int, int]:
        with Store(demo_store_copy) as store:
            transfers = transfers_of(store)
            view = DnsView(ZONE, {}.get)
            protocol = DnsTcpProtocol(view, lambda: None, 60.0, transfers=transfers)
            transport = PushBackTransport(WINDOW_BYTES)
            transport.protocol = protocol
            protocol.connection_made(transport)
            axfr = dns.message.make_query(ZONE, "AXFR").to_wire()
            soa = dns.message.make_query(ZONE, "SOA")
            protocol.data_received(framed(axfr) + framed(soa.to_wire()))
            for _ in range(5):
                await asyncio.sleep(0)  # turns of the loop: nothing more is written while it pushes back
            held = len(transport.written)
            assert transport.paused and not transport.reading
            while transport.paused or not transport.reading:
                transport.drain()
                await asyncio.sleep(0)
            for _ in range(5):
                await asyncio.sleep(0)
            protocol.connection_lost(None)
            return transport, held, soa.id

    transport, held, soa_id = asyncio.run(run())
    assert held <= WINDOW_BYTES + MAX_TRANSFER_MESSAGE_BYTES + 2  # the window, and the message that crossed it
    messages = [parse(m) for m in messages_of(bytes(transport.written))]
    assert len(transport.written) > 4 * held  # the rest came as the peer read
    assert messages[-1].id == soa_id and messages[-1].answer[0].rdtype == dns.rdatatype.SOA  # after the transfer
    transferred = [rr for m in messages[:-1] for rr in m.answer]
    assert transferred[0].rdtype == transferred[-1].rdtype == dns.rdatatype.SOA
    assert sum(1 for rr in transferred if rr.rdtype == dns.rdatatype.SOA) == 2


# --- NOTIFY, in process -----------------------------------------------------------------------------------------
def test_the_notifier_retries_until_acknowledged_and_announces_each_new_position():
    async def run() -> list[tuple[int, int]]:
        loop = asyncio.get_running_loop()
        received: asyncio.Queue[tuple[bytes, tuple]] = asyncio.Queue()

        class Secondary(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                received.put_nowait((data, addr))

        transport, _ = await loop.create_datagram_endpoint(Secondary, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        position = [5]
        names = NameMap(ZONE)
        view = DnsView(ZONE, {}.get)
        notifier = DnsNotifier(names, lambda s: replace(view.soa, serial=s), [("127.0.0.1", port)],
                               lambda: position[0], None, poll_s=0.01, retry_s=0.05)  # fmt: skip
        task = asyncio.create_task(notifier.run())
        seen = []
        try:
            for _ in range(2):  # not acknowledged: sent again, same id
                data, _addr = await asyncio.wait_for(received.get(), TIMEOUT_S)
                message = dns.message.from_wire(data)
                seen.append((message.id, message.answer[0][0].serial))
            transport.sendto(dns.message.make_response(message).to_wire(), _addr)
            position[0] = 9
            while message.answer[0][0].serial != serial_of(9):  # skipping a retry already on its way
                data, _addr = await asyncio.wait_for(received.get(), TIMEOUT_S)
                message = dns.message.from_wire(data)
            seen.append((message.id, message.answer[0][0].serial))
        finally:
            task.cancel()
            transport.close()
        return seen

    seen = asyncio.run(run())
    assert seen[0] == seen[1] and seen[0][1] == serial_of(5)
    assert seen[2][1] == serial_of(9) and seen[2][0] != seen[0][0]
