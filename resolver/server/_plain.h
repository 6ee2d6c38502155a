/* Plain resolutions read and answered in C, for the batched Handle UDP listener (_mmsg.c). No Python objects
 * here: only the wire format of one request, the store key of its handle, the layout of a stored record and
 * the bytes of a SUCCESS answer. Each function mirrors a Python one, named beside it, and the batched-UDP tests
 * hold the two to the same bytes (tests/test_udp_batch.py). */
#ifndef IDNODE_PLAIN_H
#define IDNODE_PLAIN_H

#include <stddef.h>
#include <stdint.h>

/* What answers depend on beyond the request, given by Python (resolver/server/udp_batch.py) once. */
typedef struct {
    uint8_t server_major, server_minor; /* resolver.handle.constants.SERVER_VERSION */
    uint16_t site_serial;               /* UNKNOWN_SITE_SERIAL */
    uint32_t max_handle_bytes;          /* MAX_HANDLE_BYTES */
    uint32_t max_answer_bytes;          /* UDP_DATAGRAM_BYTES: longer answers are chunked, by Python */
    uint32_t record_schema;             /* storage.records.SCHEMA_VERSION */
    int case_sensitive;                 /* the store's suffix case rule (storage.keys.handle_key) */
} plain_terms;

/* A plain resolution request (resolver.handle.fastpath.PlainResolution). */
typedef struct {
    const unsigned char *handle;
    uint32_t handle_len;
    uint8_t major, minor; /* the version to answer at */
    uint32_t session_id, request_id, op_flags;
    uint8_t recursion;
} plain_request;

/* A stored record (storage.records.unpack_record): values tail = head + the shared value named by sid. */
typedef struct {
    const unsigned char *head;
    size_t head_len;
    int all_public;
    const unsigned char *sid; /* NULL: the head is the whole tail */
    size_t sid_len;
} plain_record;

#define PLAIN_HEAD_BYTES 48 /* envelope, header, handle length: before the handle, in request and answer */
#define NA_PREFIX "0.NA"    /* storage.keys.NA_PREFIX: the prefix of prefix handles */
#define NA_PREFIX_BYTES (sizeof(NA_PREFIX) - 1)

/* 1 and *out when `data` is one whole plain resolution (read_plain_resolution, and not a chunk); else 0. */
int plain_read(const unsigned char *data, size_t len, const plain_terms *terms, plain_request *out);

/* The store key of the request's handle into `key` (room for handle_len bytes), its prefix's length in
 * *prefix_len (storage.keys.handle_key); 0, or -1 when the handle has no prefix (no '/', or one first). */
int plain_key(const plain_request *r, int case_sensitive, unsigned char *key, size_t *prefix_len);

/* 0 and *out for a record this node reads (schema, three or four fields); -1 for anything else. */
int plain_unpack(const unsigned char *raw, size_t len, uint32_t schema, plain_record *out);

/* The answer's length for a values tail of `tail_len` bytes. */
size_t plain_answer_bytes(const plain_request *r, size_t tail_len);

/* Write the SUCCESS answer (encode_plain_answer, authoritative) with the values tail in two parts. */
void plain_answer(const plain_request *r, const plain_terms *terms, uint32_t expiration,
                  const unsigned char *tail, size_t tail_len, const unsigned char *rest, size_t rest_len,
                  unsigned char *out);

#endif
