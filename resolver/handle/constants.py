"""Wire constants and limits of the Handle protocol (RFC 3651/3652 as deployed at version 2.10).

Section references (``§``) point into the Handle protocol description (handle-protocol.md). Pure data: imports no asyncio,
socket or lmdb.
"""

from enum import IntEnum, IntFlag


class OpCode(IntEnum):
    """Operation codes of the message header (§ Op codes)."""

    RESERVED = 0  #: § Op codes: never sent
    RESOLUTION = 1  #: § Op codes, § OC_RESOLUTION
    GET_SITE_INFO = 2  #: § Op codes; the body of the answer is one HS_SITE record
    CREATE_HANDLE = 100  #: § Op codes
    DELETE_HANDLE = 101  #: § Op codes
    ADD_VALUE = 102  #: § Op codes
    REMOVE_VALUE = 103  #: § Op codes
    MODIFY_VALUE = 104  #: § Op codes
    LIST_HANDLES = 105  #: § Op codes
    RESPONSE_TO_CHALLENGE = 200  #: § Op codes
    VERIFY_CHALLENGE = 201  #: § Op codes
    HOME_NA = 300  #: § Op codes
    UNHOME_NA = 301  #: § Op codes
    LIST_HOMED_NAS = 302  #: § Op codes
    SESSION_SETUP = 400  #: § Op codes (sessions)
    SESSION_TERMINATE = 401  #: § Op codes (sessions)
    SESSION_EXCHANGEKEY = 402  #: § Op codes (sessions)
    GET_NEXT_TXN_ID = 1000  #: § Op codes (replication), names as in the reference implementation
    RETRIEVE_TXN_LOG = 1001  #: § Op codes (replication)
    DUMP_HANDLES = 1002  #: § Op codes (replication)
    BACKUP_SERVER = 1003  #: § Op codes (replication)
    LOGIN = 2000  #: § Op codes: national-system addition
    LOGIN_ID_SYSTEM = 2001  #: § Op codes: national-system addition (id-pointer, ID-SDK)


class ResponseCode(IntEnum):
    """Response codes of the message header (§ Response codes); 0 marks a request."""

    RESERVED = 0  #: § Message header: "0 in requests"
    SUCCESS = 1  #: § Response codes
    ERROR = 2  #: § Response codes
    SERVER_TOO_BUSY = 3  #: § Response codes
    PROTOCOL_ERROR = 4  #: § Response codes
    OPERATION_NOT_SUPPORTED = 5  #: § Response codes
    RECURSION_COUNT_TOO_HIGH = 6  #: § Response codes
    SERVER_BACKUP = 7  #: § Response codes
    HANDLE_NOT_FOUND = 100  #: § Response codes, § OC_RESOLUTION
    HANDLE_ALREADY_EXISTS = 101  #: § Response codes
    INVALID_HANDLE = 102  #: § Response codes
    VALUES_NOT_FOUND = 200  #: § Response codes, § OC_RESOLUTION
    VALUE_ALREADY_EXISTS = 201  #: § Response codes
    INVALID_VALUE = 202  #: § Response codes
    OUT_OF_DATE_SITE_INFO = 300  #: § Response codes
    SERVER_NOT_RESP = 301  #: § Response codes (unknown to ID-SDK 2.0.3)
    SERVICE_REFERRAL = 302  #: § Response codes; body = referral handle + values
    PREFIX_REFERRAL = 303  #: § Response codes
    INVALID_ADMIN = 400  #: § Response codes
    INSUFFICIENT_PERMISSIONS = 401  #: § Response codes
    AUTHENTICATION_NEEDED = 402  #: § Response codes (challenge)
    AUTHENTICATION_FAILED = 403  #: § Response codes
    INVALID_CREDENTIAL = 404  #: § Response codes
    AUTHEN_TIMEOUT = 405  #: § Response codes
    AUTHEN_ERROR = 406  #: § Response codes
    NATIONAL_407 = 407  #: § Response codes: national-system addition, meaning undocumented
    NATIONAL_408 = 408  #: § Response codes: national-system addition, meaning undocumented
    SESSION_TIMEOUT = 500  #: § Response codes (session errors), names as in the reference
    SESSION_FAILED = 501  #: § Response codes (session errors)
    INVALID_SESSION_KEY = 502  #: § Response codes (session errors)
    NEED_RSAKEY_FOR_SESSIONEXCHANGE = 503  #: § Response codes (session errors)
    INVALID_SESSIONSETUP_REQUEST = 504  #: § Response codes (session errors)
    SESSION_MESSAGE_REJECTED = 505  #: § Response codes (session errors)
    NATIONAL_3001 = 3001  #: § Response codes: national-system addition, meaning undocumented


class OpFlag(IntFlag):
    """Bits of the header's OpFlag field (§ Message header). Responses copy the request's flags."""

    NONE = 0
    AT = 0x8000_0000  #: § Message header: authoritative
    CT = 0x4000_0000  #: § Message header: certified
    ENC = 0x2000_0000  #: § Message header: encrypted
    REC = 0x1000_0000  #: § Message header: recursive
    CA = 0x0800_0000  #: § Message header: cache authentication
    CN = 0x0400_0000  #: § Message header: continuous
    KC = 0x0200_0000  #: § Message header: keep connection
    PO = 0x0100_0000  #: § Message header: public only
    RD = 0x0080_0000  #: § Message header: return request digest (§ OC_RESOLUTION)
    OVERWRITE = 0x0040_0000  #: § Message header: overwrite when exists
    MINT = 0x0020_0000  #: § Message header: mint new suffix
    DONT_REFER = 0x0010_0000  #: § Message header: do not refer
    SDK_TRUSTED_QUERY = 0x0000_0002  #: § What the national SDKs do: ID-SDK "trusted query", ignored
    SDK_TRUSTED_RESULT = 0x0000_0001  #: § What the national SDKs do: ID-SDK "trusted result", ignored


class EnvelopeFlag(IntFlag):
    """High bits of envelope byte 2 (§ Message envelope); the low 2 bits hold the suggested major."""

    NONE = 0
    CP = 0x80  #: § Message envelope: compressed
    EC = 0x40  #: § Message envelope: encrypted
    TC = 0x20  #: § Message envelope: truncated


#: § Message envelope: the low 2 bits of byte 2 carry the suggested major version, not flags.
ENVELOPE_SUGGESTED_MAJOR_MASK = 0x03


class Permission(IntFlag):
    """Permission bits of a handle value (§ Handle value)."""

    NONE = 0
    ADMIN_READ = 0x08  #: § Handle value
    ADMIN_WRITE = 0x04  #: § Handle value
    PUBLIC_READ = 0x02  #: § Handle value
    PUBLIC_WRITE = 0x01  #: § Handle value


class AdminPermission(IntFlag):
    """The 12 permission bits of an HS_ADMIN value (§ Value JSON `admin`, RFC 3651 §3.2.2)."""

    NONE = 0
    ADD_HANDLE = 0x0001  #: RFC 3651 §3.2.2
    DELETE_HANDLE = 0x0002  #: RFC 3651 §3.2.2
    ADD_NA = 0x0004  #: RFC 3651 §3.2.2 (add derived prefix)
    DELETE_NA = 0x0008  #: RFC 3651 §3.2.2 (delete derived prefix)
    MODIFY_VALUE = 0x0010  #: RFC 3651 §3.2.2
    REMOVE_VALUE = 0x0020  #: RFC 3651 §3.2.2
    ADD_VALUE = 0x0040  #: RFC 3651 §3.2.2
    MODIFY_ADMIN = 0x0080  #: RFC 3651 §3.2.2
    REMOVE_ADMIN = 0x0100  #: RFC 3651 §3.2.2
    ADD_ADMIN = 0x0200  #: RFC 3651 §3.2.2
    READ_VALUE = 0x0400  #: RFC 3651 §3.2.2 (authorized read)
    LIST_HANDLES = 0x0800  #: RFC 3651 §3.2.2


class TtlType(IntEnum):
    """How a value's ttl is read (§ Handle value)."""

    RELATIVE = 0  #: § Handle value: seconds to cache
    ABSOLUTE = 1  #: § Handle value: Unix time of expiry


class HashType(IntEnum):
    """Hash type byte in front of a request digest (§ OC_RESOLUTION, RD)."""

    MD5 = 1  #: § OC_RESOLUTION: 16-byte digest, before 2.1
    SHA1 = 2  #: § OC_RESOLUTION: 20-byte digest, 2.1 to 2.6
    SHA256 = 3  #: § OC_RESOLUTION: 32-byte digest, 2.7 and later


class HashOption(IntEnum):
    """Which part of a handle picks the server of a multi-server site (§ HS_SITE data)."""

    BY_PREFIX = 0  #: § HS_SITE data
    BY_SUFFIX = 1  #: § HS_SITE data
    BY_HANDLE = 2  #: § HS_SITE data (whole handle)


#: Default value permissions: admin read+write, public read (§ Value JSON `1110`).
DEFAULT_PERMISSIONS = Permission.ADMIN_READ | Permission.ADMIN_WRITE | Permission.PUBLIC_READ

# --- sizes fixed by the wire format -------------------------------------------------------------
ENVELOPE_BYTES = 20  # § Message envelope: fixed size
HEADER_BYTES = 24  # § Message header: fixed size
VALUE_FIXED_BYTES = 14  # § Handle value: index, timestamp, ttlType, ttl, permissions
SITE_ADDRESS_BYTES = 16  # § HS_SITE data: IPv6-sized slot, IPv4 right-aligned
IPV4_PREFIX_BYTES = SITE_ADDRESS_BYTES - 4  # § HS_SITE data: zero bytes in front of an IPv4 address

# --- limits --------------------------------------------------------------------------------------
MAX_MESSAGE_BYTES = 262_144  # § Message envelope: reference server limit on MessageLength
MAX_HANDLE_BYTES = 2048  # § Names and prefixes: maximum encoded handle length
MAX_REQUEST_INDEXES = 1024  # bounds per-request filter work; real clients send a handful of indexes
MAX_REQUEST_TYPES = 1024  # bounds per-request filter work; real clients send a handful of types
UDP_DATAGRAM_BYTES = 512  # § Transports: largest datagram either side sends
UDP_CHUNK_PAYLOAD_BYTES = UDP_DATAGRAM_BYTES - ENVELOPE_BYTES  # § Transports: 492-byte pieces
UDP_MAX_PENDING_MESSAGES = 1024  # chunked UDP messages being reassembled at once; oldest evicted first
UDP_MAX_BUFFERED_BYTES = 8 * 1024 * 1024  # total bytes held for reassembly, so a flood costs bounded RAM
UDP_REASSEMBLY_TIMEOUT_S = 5.0  # a chunked message not complete by then is dropped (clients resend)

#: The version this node speaks and suggests (§ Message envelope).
SERVER_VERSION = (2, 10)
#: Versions from which the request digest uses SHA-256 resp. SHA-1 (§ OC_RESOLUTION, RD).
SHA256_DIGEST_SINCE = (2, 7)
SHA1_DIGEST_SINCE = (2, 1)
#: The header's SiteInfoSerial when the sender does not know it (§ Message header).
UNKNOWN_SITE_SERIAL = 0xFFFF
