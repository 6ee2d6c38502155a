"""The plain-resolution fast path gives exactly the general path's answer, and declines everything else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.handle.constants import OpCode, OpFlag, ResponseCode
from resolver.handle.fastpath import encode_plain_answer, read_plain_resolution
from resolver.handle.message import (
    ResolutionRequest,
    decode_request,
    decode_resolution_request,
    encode_request,
    encode_resolution_request,
    encode_resolution_response,
)
from tests.vectors import VECTORS

TAIL = b"\x00\x00\x00\x01" + bytes.fromhex(
    "000000016500000000000151800e0000000355524c00000003616263" + "00000000"
)
EXPIRATION = 1_800_000_000


def general_answer(data: bytes, authoritative: bool = False) -> bytes:
    request = decode_request(data)
    query = decode_resolution_request(request.body)
    return encode_resolution_response(request, query.handle, TAIL, EXPIRATION, authoritative=authoritative)


@pytest.mark.parametrize(
    "name",
    [
        "resolve_request_plain",
        "client_national_sdk_resolve",
        "client_id_pointer_resolve",
        "resolve_request_prefix",
        "resolve_request_delegated",
    ],
)
@pytest.mark.parametrize("authoritative", [False, True])
def test_plain_vectors_take_the_fast_path_with_the_same_answer(name, authoritative):
    plain = read_plain_resolution(VECTORS[name])
    assert plain is not None
    fast = encode_plain_answer(plain, ResponseCode.SUCCESS, TAIL, EXPIRATION, authoritative)
    assert fast == general_answer(VECTORS[name], authoritative)
    assert bool(fast[28] & 0x80) == authoritative  # AT, the top bit of the op flags


@pytest.mark.parametrize(
    "name",
    [
        "resolve_request_filters",
        "resolve_request_rd",
        "resolve_request_utf8",
        "get_site_info_request",
        "client_national_sdk_get_site_info",
    ],
)
def test_other_requests_decline_the_fast_path(name):
    assert read_plain_resolution(VECTORS[name]) is None


@settings(max_examples=200, deadline=None)
@given(
    handle=st.binary(min_size=0, max_size=80).filter(bytes.isascii),
    flags=st.sampled_from(
        [0, int(OpFlag.PO), int(OpFlag.REC | OpFlag.CA | OpFlag.PO), 0x19000000, int(OpFlag.RD),
         int(OpFlag.AT), int(OpFlag.AT | OpFlag.KC | OpFlag.PO)]
    ),  # fmt: skip
    authoritative=st.booleans(),
    version=st.sampled_from([(2, 1), (2, 3), (2, 10), (2, 11), (3, 0)]),
    suggested=st.sampled_from([(0, 0), (2, 3), (2, 10), (2, 12)]),
    ids=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    credential=st.sampled_from([b"", b"\x01\x02"]),
)
def test_fast_and_general_paths_agree(handle, flags, version, suggested, ids, credential, authoritative):
    data = encode_request(
        OpCode.RESOLUTION, encode_resolution_request(ResolutionRequest(handle)), request_id=ids[1],
        session_id=ids[0], expiration=EXPIRATION, op_flags=flags, version=version, suggested_version=suggested,
        credential=credential,
    )  # fmt: skip
    plain = read_plain_resolution(data)
    if flags & OpFlag.RD or credential:
        assert plain is None
        return
    assert plain is not None and plain.handle == handle
    fast = encode_plain_answer(plain, ResponseCode.SUCCESS, TAIL, EXPIRATION, authoritative)
    assert fast == general_answer(data, authoritative)


@given(st.binary(max_size=120))
@settings(max_examples=300, deadline=None)
def test_garbage_never_passes_for_a_plain_request_unless_it_is_one(data):
    plain = read_plain_resolution(data)
    if plain is not None:
        decode_request(data)  # whatever the fast path accepts, the general decoder accepts too
