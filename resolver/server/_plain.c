/* Plain resolutions read and answered in C (see _plain.h). Every check below has its twin in Python; where
 * they could ever disagree, C says "not plain" and the datagram takes the Python path, never the other way. */
#include "_plain.h"

#include <string.h>

#define OP_RESOLUTION 1u
#define RC_SUCCESS 1u
#define OP_FLAG_AT 0x80000000u
#define OP_FLAGS_GENERAL 0x40800000u /* CT and RD: a signature or a digest, the general path's work */
#define ENVELOPE_UNREADABLE 0xE0u     /* CP, EC, TC */
#define ENVELOPE_BYTES 20u
#define HEADER_END 44u                /* envelope and header: the body starts here */
#define FILTERS_BYTES 8u              /* index count and type count, both zero in a plain request */

static uint32_t get_u32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static unsigned char *put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
    return p + 4;
}

static int all_zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* resolver.handle.fastpath.read_plain_resolution, plus is_chunk (ruled out by MessageLength). */
int plain_read(const unsigned char *data, size_t len, const plain_terms *terms, plain_request *out) {
    if (len < PLAIN_HEAD_BYTES + FILTERS_BYTES)
        return 0;
    uint32_t message_length = get_u32(data + 16), op_code = get_u32(data + 20);
    uint32_t response_code = get_u32(data + 24), op_flags = get_u32(data + 28);
    uint64_t body_length = get_u32(data + 40), handle_length = get_u32(data + 44);
    if (op_code != OP_RESOLUTION || response_code || (data[2] & ENVELOPE_UNREADABLE)
        || (op_flags & OP_FLAGS_GENERAL) || message_length != len - ENVELOPE_BYTES
        || handle_length > terms->max_handle_bytes || body_length < 4 + handle_length + FILTERS_BYTES)
        return 0;
    uint64_t body_end = HEADER_END + body_length;
    if (!(len == body_end || (len == body_end + 4 && all_zero(data + body_end, 4))))
        return 0; /* bytes after the type list are allowed: they are id-pointer's empty credential */
    const unsigned char *handle = data + PLAIN_HEAD_BYTES;
    if (!all_zero(handle + handle_length, FILTERS_BYTES))
        return 0;
    for (uint64_t i = 0; i < handle_length; i++)
        if (handle[i] & 0x80)
            return 0; /* UTF-8 is validated on the general path */
    uint8_t suggested_major = data[2] & 0x03;
    uint8_t major = suggested_major ? suggested_major : data[0];
    uint8_t minor = suggested_major ? data[3] : data[1];
    if (major > terms->server_major || (major == terms->server_major && minor > terms->server_minor)) {
        major = terms->server_major;
        minor = terms->server_minor;
    }
    out->handle = handle;
    out->handle_len = (uint32_t)handle_length;
    out->major = major;
    out->minor = minor;
    out->session_id = get_u32(data + 4);
    out->request_id = get_u32(data + 8);
    out->op_flags = op_flags;
    out->recursion = data[34];
    return 1;
}

static void ascii_upper(const unsigned char *from, size_t n, unsigned char *to) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = from[i];
        to[i] = (c >= 'a' && c <= 'z') ? (unsigned char)(c - 'a' + 'A') : c;
    }
}

/* storage.keys.handle_key */
int plain_key(const plain_request *r, int case_sensitive, unsigned char *key, size_t *prefix_len) {
    const unsigned char *slash = memchr(r->handle, '/', r->handle_len);
    if (slash == NULL || slash == r->handle)
        return -1;
    size_t prefix = (size_t)(slash - r->handle);
    *prefix_len = prefix;
    ascii_upper(r->handle, prefix, key);
    int whole = !case_sensitive || (prefix == NA_PREFIX_BYTES && memcmp(key, NA_PREFIX, prefix) == 0);
    if (whole)
        ascii_upper(r->handle + prefix, r->handle_len - prefix, key + prefix);
    else
        memcpy(key + prefix, r->handle + prefix, r->handle_len - prefix);
    return 0;
}

/* One msgpack bin at *at (bin 8, 16 or 32), moved past. */
static int read_bin(const unsigned char *raw, size_t len, size_t *at, const unsigned char **bin, size_t *n) {
    size_t i = *at, width;
    if (i >= len)
        return -1;
    switch (raw[i]) {
    case 0xc4: width = 1; break;
    case 0xc5: width = 2; break;
    case 0xc6: width = 4; break;
    default: return -1;
    }
    if (len - i - 1 < width)
        return -1;
    size_t size = 0;
    for (size_t k = 0; k < width; k++)
        size = (size << 8) | raw[i + 1 + k];
    i += 1 + width;
    if (len - i < size)
        return -1;
    *bin = raw + i;
    *n = size;
    *at = i + size;
    return 0;
}

/* storage.records.unpack_record: [schema, tail, all_public] or [schema, head, all_public, shared id]. */
int plain_unpack(const unsigned char *raw, size_t len, uint32_t schema, plain_record *out) {
    if (len < 2 || (raw[0] != 0x93 && raw[0] != 0x94) || raw[1] > 0x7f || raw[1] != schema)
        return -1;
    size_t at = 2;
    if (read_bin(raw, len, &at, &out->head, &out->head_len) < 0 || at >= len)
        return -1;
    if (raw[at] != 0xc2 && raw[at] != 0xc3)
        return -1;
    out->all_public = raw[at++] == 0xc3;
    out->sid = NULL;
    out->sid_len = 0;
    if (raw[0] == 0x94 && read_bin(raw, len, &at, &out->sid, &out->sid_len) < 0)
        return -1;
    return at == len ? 0 : -1;
}

size_t plain_answer_bytes(const plain_request *r, size_t tail_len) {
    return PLAIN_HEAD_BYTES + r->handle_len + tail_len + 4;
}

/* resolver.handle.fastpath.encode_plain_answer(request, SUCCESS, tail, expiration, authoritative=True) */
void plain_answer(const plain_request *r, const plain_terms *terms, uint32_t expiration,
                  const unsigned char *tail, size_t tail_len, const unsigned char *rest, size_t rest_len,
                  unsigned char *out) {
    uint32_t body_length = (uint32_t)(4 + r->handle_len + tail_len + rest_len);
    unsigned char *p = out;
    p[0] = r->major;
    p[1] = r->minor;
    p[2] = terms->server_major;
    p[3] = terms->server_minor;
    p = put_u32(p + 4, r->session_id);
    p = put_u32(p, r->request_id);
    p = put_u32(p, 0); /* sequence */
    p = put_u32(p, 24 + body_length + 4);
    p = put_u32(p, OP_RESOLUTION);
    p = put_u32(p, RC_SUCCESS);
    p = put_u32(p, r->op_flags | OP_FLAG_AT);
    p[0] = (unsigned char)(terms->site_serial >> 8);
    p[1] = (unsigned char)terms->site_serial;
    p[2] = r->recursion;
    p[3] = 0;
    p = put_u32(p + 4, expiration);
    p = put_u32(p, body_length);
    p = put_u32(p, r->handle_len);
    memcpy(p, r->handle, r->handle_len);
    p += r->handle_len;
    memcpy(p, tail, tail_len);
    p += tail_len;
    if (rest_len) {
        memcpy(p, rest, rest_len);
        p += rest_len;
    }
    put_u32(p, 0); /* no credential */
}
