/* Batched datagram I/O for the Handle UDP listener: one recvmmsg(2) reads up to `capacity` datagrams into
 * preallocated buffers, one sendmmsg(2) (or a few, for long chunked answers) sends their answers, each answer
 * addressed with the very sockaddr its request came from (no address is converted back from Python).
 *
 * serve() also answers, here, the request nearly every client sends: a plain resolution of an identifier of a
 * hosted prefix whose values are all public and fit one datagram (_plain.c has the bytes). It asks Python only
 * what Python owns: the rate limit's verdict (guard.admit, skipped for exempt sources), the store (the read
 * view's get, the shared-value cache) and the served prefixes; it counts into the resolution counter's dict and
 * keeps the sampling countdown. Every other datagram, and the sampled one, is handed back to Python
 * (resolver/server/udp.py) with what was already decided, so each still meets the same chain (rate limit,
 * dispatch, events, amplification bound, counting, sampling). Linux only; built by setup.py as an optional
 * extension, and resolver/server/udp_batch.py falls back to the event loop's datagram transport without it.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "_plain.h"

/* A UDP payload can be 65,507 bytes over IPv4 (65,527 over IPv6): a slot that holds any of them means a
 * datagram is never truncated, so it reaches the codec exactly as the event loop's transport would deliver it. */
#define SLOT_BYTES 65536
/* sendmmsg takes at most UIO_MAXIOV (1024) messages per call. */
#define MAX_SEND_PER_CALL 1024
/* Caps the datagrams asked for per recvmmsg: 64 slots are 4 MiB of address space (touched only as used). */
#define MAX_CAPACITY 1024

/* What serve() already decided about a datagram it hands back to Python (resolver/server/udp.py). */
#define HANDED_SAMPLED 1   /* the sampling countdown chose it: Python times its answer */
#define HANDED_REFUSED 2   /* the rate limit refused it: Python sends the refusal */
#define HANDED_UNDECIDED 4 /* nothing was decided (no IP source, or a Python call failed): the whole chain */

typedef struct {
    PyObject_HEAD
    int fd;
    unsigned int capacity;
    unsigned int received;   /* datagrams read by the last recv(); their addresses answer send() */
    char *buffers;           /* capacity * SLOT_BYTES */
    struct iovec *recv_iov;
    struct mmsghdr *recv_msgs;
    struct sockaddr_storage *addrs;
    struct mmsghdr *send_msgs;   /* grown to the largest answer set seen */
    struct iovec *send_iov;
    size_t send_capacity;
    /* The text of the last IPv4/IPv6 host seen: load from one address arrives in runs, and the str object is
     * then shared instead of formatted again. */
    struct sockaddr_storage last_host;
    PyObject *last_host_str;
    unsigned long long unsent;   /* answers the send buffer refused (EAGAIN) or the kernel rejected */
    /* serve(): set by configure_plain() */
    int plain_ready;
    plain_terms terms;
    PyObject *shared;            /* dict: shared value id -> encoded value (the store's cache) */
    PyObject *exempt;            /* callable(host) -> bool: never rate limited */
    PyObject *admit;             /* callable(host, now) -> bool, or None: no rate limit */
    long sample_every;
    int last_host_exempt;        /* of last_host_str; -1: not asked yet */
    unsigned char *answers;      /* capacity answers of terms.max_answer_bytes, one slot per datagram */
    size_t *answer_len;          /* per slot: the answer serve() wrote, 0: the slot is Python's */
    unsigned char *key;          /* a store key being built (terms.max_handle_bytes) */
    unsigned int handed;         /* slots the next send() takes answers for from Python */
    unsigned long long answered; /* datagrams serve() answered itself, since creation */
} Batch;

static void Batch_dealloc(Batch *self) {
    PyMem_RawFree(self->buffers);
    PyMem_RawFree(self->recv_iov);
    PyMem_RawFree(self->recv_msgs);
    PyMem_RawFree(self->addrs);
    PyMem_RawFree(self->send_msgs);
    PyMem_RawFree(self->send_iov);
    Py_XDECREF(self->last_host_str);
    PyMem_RawFree(self->answers);
    PyMem_RawFree(self->answer_len);
    PyMem_RawFree(self->key);
    Py_XDECREF(self->shared);
    Py_XDECREF(self->exempt);
    Py_XDECREF(self->admit);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Batch_init(Batch *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", "capacity", NULL};
    int fd;
    unsigned int capacity = 64;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|I", kwlist, &fd, &capacity))
        return -1;
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "fd must be an open descriptor");
        return -1;
    }
    if (capacity < 1 || capacity > MAX_CAPACITY) {
        PyErr_Format(PyExc_ValueError, "capacity must be 1..%d", MAX_CAPACITY);
        return -1;
    }
    if (self->buffers != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Batch is already initialised");
        return -1;
    }
    self->fd = fd;
    self->capacity = capacity;
    self->buffers = PyMem_RawMalloc((size_t)capacity * SLOT_BYTES);
    self->recv_iov = PyMem_RawCalloc(capacity, sizeof(struct iovec));
    self->recv_msgs = PyMem_RawCalloc(capacity, sizeof(struct mmsghdr));
    self->addrs = PyMem_RawCalloc(capacity, sizeof(struct sockaddr_storage));
    self->answer_len = PyMem_RawCalloc(capacity, sizeof(size_t));
    if (!self->buffers || !self->recv_iov || !self->recv_msgs || !self->addrs || !self->answer_len) {
        PyErr_NoMemory();
        return -1;
    }
    for (unsigned int i = 0; i < capacity; i++) {
        self->recv_iov[i].iov_base = self->buffers + (size_t)i * SLOT_BYTES;
        self->recv_iov[i].iov_len = SLOT_BYTES;
    }
    return 0;
}

/* The address as the event loop's transport gives it: (host, port) for IPv4, (host, port, flowinfo, scope_id)
 * for IPv6. */
/* The text of a source's IP address, borrowed from the cache of the last one (load from one address arrives
 * in runs); None for a socket that is not IPv4/IPv6; NULL with an exception set. */
static PyObject *host_of(Batch *self, const struct sockaddr_storage *ss) {
    char text[INET6_ADDRSTRLEN];
    const void *address;
    size_t size;
    int same;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        const struct sockaddr_in *last = (const struct sockaddr_in *)&self->last_host;
        same = self->last_host.ss_family == AF_INET && last->sin_addr.s_addr == sin->sin_addr.s_addr;
        address = &sin->sin_addr;
        size = sizeof(struct sockaddr_in);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        const struct sockaddr_in6 *last = (const struct sockaddr_in6 *)&self->last_host;
        same = self->last_host.ss_family == AF_INET6
               && memcmp(&last->sin6_addr, &sin6->sin6_addr, sizeof(struct in6_addr)) == 0
               && last->sin6_scope_id == sin6->sin6_scope_id;
        address = &sin6->sin6_addr;
        size = sizeof(struct sockaddr_in6);
    } else {
        return Py_None; /* not an IP socket */
    }
    if (same && self->last_host_str)
        return self->last_host_str;
    if (!inet_ntop(ss->ss_family, address, text, sizeof(text)))
        return PyErr_SetFromErrno(PyExc_OSError);
    PyObject *host = PyUnicode_FromString(text);
    if (!host)
        return NULL;
    Py_XSETREF(self->last_host_str, host);
    memcpy(&self->last_host, ss, size);
    self->last_host_exempt = -1;
    return host;
}

/* The address as the event loop's transport gives it: (host, port) for IPv4, (host, port, flowinfo, scope_id)
 * for IPv6; None for any other family (the caller drops it). */
static PyObject *address_tuple(Batch *self, const struct sockaddr_storage *ss) {
    PyObject *host = host_of(self, ss);
    if (host == NULL || host == Py_None) {
        Py_XINCREF(host);
        return host;
    }
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        return Py_BuildValue("(Oi)", host, (int)ntohs(sin->sin_port));
    }
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    return Py_BuildValue("(OiII)", host, (int)ntohs(sin6->sin6_port), (unsigned int)ntohl(sin6->sin6_flowinfo),
                         (unsigned int)sin6->sin6_scope_id);
}

/* One recvmmsg into the slots: how many datagrams came (0 when none waits), or -1 with an exception set.
 * Every slot starts as Python's to answer. */
static int receive(Batch *self) {
    unsigned int capacity = self->capacity;
    for (unsigned int i = 0; i < capacity; i++) {
        struct msghdr *h = &self->recv_msgs[i].msg_hdr;
        h->msg_name = &self->addrs[i];
        h->msg_namelen = sizeof(struct sockaddr_storage);
        h->msg_iov = &self->recv_iov[i];
        h->msg_iovlen = 1;
        h->msg_control = NULL;
        h->msg_controllen = 0;
        h->msg_flags = 0;
    }
    int n;
    do {
        n = recvmmsg(self->fd, self->recv_msgs, capacity, MSG_DONTWAIT, NULL);
    } while (n < 0 && errno == EINTR);
    self->received = self->handed = 0;
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    memset(self->answer_len, 0, (size_t)n * sizeof(size_t));
    self->received = self->handed = (unsigned int)n;
    return n;
}

/* (data, address) of slot i, with `flags` appended when flags >= 0. */
static PyObject *datagram_tuple(Batch *self, unsigned int i, int flags) {
    PyObject *data = PyBytes_FromStringAndSize(self->recv_iov[i].iov_base, (Py_ssize_t)self->recv_msgs[i].msg_len);
    if (!data)
        return NULL;
    PyObject *addr = address_tuple(self, &self->addrs[i]);
    if (!addr) {
        Py_DECREF(data);
        return NULL;
    }
    PyObject *out = flags < 0 ? PyTuple_Pack(2, data, addr) : Py_BuildValue("(OOi)", data, addr, flags);
    Py_DECREF(data);
    Py_DECREF(addr);
    return out;
}

PyDoc_STRVAR(Batch_recv_doc,
"recv() -> list[tuple[bytes, tuple]]\n\n"
"Up to `capacity` datagrams waiting on the socket, each with its source address, in arrival order; an empty\n"
"list when none waits. The addresses are kept for the next send(), which takes an answer for each.");

static PyObject *Batch_recv(Batch *self, PyObject *Py_UNUSED(ignored)) {
    int n = receive(self);
    if (n < 0)
        return NULL;
    PyObject *out = PyList_New(n);
    if (!out)
        return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *pair = datagram_tuple(self, (unsigned int)i, -1);
        if (!pair) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, pair);
    }
    return out;
}

PyDoc_STRVAR(Batch_configure_plain_doc,
"configure_plain(*, shared, exempt, admit, sample_every, server_version, site_serial, max_handle_bytes,\n"
"                max_answer_bytes, record_schema, case_sensitive)\n\n"
"What serve() needs to answer plain resolutions itself: the store's shared-value cache (dict), the rate\n"
"limit (`exempt(host)`, `admit(host, now)`; admit None: no limit), the sampling period, and the constants of\n"
"the answers (resolver.handle.constants, storage.records).");

static PyObject *Batch_configure_plain(Batch *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"shared", "exempt", "admit", "sample_every", "server_version", "site_serial",
                             "max_handle_bytes", "max_answer_bytes", "record_schema", "case_sensitive", NULL};
    PyObject *shared, *exempt, *admit;
    long sample_every;
    unsigned char major, minor;
    unsigned short serial;
    unsigned int max_handle, max_answer, schema;
    int case_sensitive;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$O!OOl(bb)HIIIp", kwlist, &PyDict_Type, &shared, &exempt,
                                     &admit, &sample_every, &major, &minor, &serial, &max_handle, &max_answer,
                                     &schema, &case_sensitive))
        return NULL;
    if (sample_every < 1 || max_answer < PLAIN_HEAD_BYTES + 8 || max_answer > SLOT_BYTES || max_handle < 1
        || max_handle > SLOT_BYTES) {
        PyErr_SetString(PyExc_ValueError, "sample_every, max_handle_bytes or max_answer_bytes out of range");
        return NULL;
    }
    unsigned char *answers = PyMem_RawMalloc((size_t)self->capacity * max_answer);
    unsigned char *key = PyMem_RawMalloc(max_handle);
    if (!answers || !key) {
        PyMem_RawFree(answers);
        PyMem_RawFree(key);
        return PyErr_NoMemory();
    }
    PyMem_RawFree(self->answers);
    PyMem_RawFree(self->key);
    self->answers = answers;
    self->key = key;
    Py_INCREF(shared);
    Py_XSETREF(self->shared, shared);
    Py_INCREF(exempt);
    Py_XSETREF(self->exempt, exempt);
    Py_INCREF(admit);
    Py_XSETREF(self->admit, admit);
    self->sample_every = sample_every;
    self->terms = (plain_terms){major, minor, serial, max_handle, max_answer, schema, case_sensitive};
    self->last_host_exempt = -1;
    self->plain_ready = 1;
    Py_RETURN_NONE;
}

/* Whether the rate limit lets slot i's source through: 1 yes, 0 refused, -1 undecided (no IP source, or a
 * Python call failed: the whole chain decides again, and reports). */
static int admitted(Batch *self, unsigned int i, PyObject *now) {
    if (self->admit == Py_None)
        return 1;
    PyObject *host = host_of(self, &self->addrs[i]);
    if (host == NULL || host == Py_None) {
        PyErr_Clear();
        return -1;
    }
    if (self->last_host_exempt < 0) {
        PyObject *verdict = PyObject_CallOneArg(self->exempt, host);
        int exempt = verdict ? PyObject_IsTrue(verdict) : -1;
        Py_XDECREF(verdict);
        if (exempt < 0) {
            PyErr_Clear();
            return -1;
        }
        self->last_host_exempt = exempt;
    }
    if (self->last_host_exempt)
        return 1;
    PyObject *call[2] = {host, now};
    PyObject *verdict = PyObject_Vectorcall(self->admit, call, 2, NULL);
    int yes = verdict ? PyObject_IsTrue(verdict) : -1;
    Py_XDECREF(verdict);
    if (yes < 0)
        PyErr_Clear();
    return yes;
}

/* Answer slot i here if it is a plain resolution this node answers SUCCESS in one datagram, counting it on
 * its prefix: 1 answered, 0 not (Python answers it; nothing was counted), -1 an exception (out of memory). */
static int answer_plain(Batch *self, unsigned int i, PyObject *get, PyObject *served, PyObject *counts,
                        uint32_t expiration) {
    plain_request r;
    size_t prefix_len;
    const unsigned char *data = self->recv_iov[i].iov_base;
    if (!plain_read(data, self->recv_msgs[i].msg_len, &self->terms, &r)
        || plain_key(&r, self->terms.case_sensitive, self->key, &prefix_len) < 0
        || (prefix_len == NA_PREFIX_BYTES && memcmp(self->key, NA_PREFIX, NA_PREFIX_BYTES) == 0)) /* Python's */
        return 0;
    int result = -1;
    PyObject *key = NULL, *raw = NULL;
    PyObject *prefix = PyBytes_FromStringAndSize((const char *)self->key, (Py_ssize_t)prefix_len);
    if (!prefix)
        return -1;
    int hosted = PySet_Contains(served, prefix);
    if (hosted <= 0) {
        result = hosted;
        goto done;
    }
    key = PyBytes_FromStringAndSize((const char *)self->key, (Py_ssize_t)r.handle_len);
    if (!key)
        goto done;
    raw = PyObject_Vectorcall(get, &key, 1, NULL);
    result = 0;
    if (!raw) { /* the same get on the Python path meets the same error and handles it */
        PyErr_Clear();
        goto done;
    }
    plain_record record;
    if (!PyBytes_Check(raw)
        || plain_unpack((const unsigned char *)PyBytes_AS_STRING(raw), (size_t)PyBytes_GET_SIZE(raw),
                        self->terms.record_schema, &record) < 0
        || !record.all_public || record.head_len < 4
        || (record.head[0] | record.head[1] | record.head[2] | record.head[3]) == 0) /* no values */
        goto done;
    const unsigned char *rest = NULL;
    size_t rest_len = 0;
    if (record.sid) {
        PyObject *sid = PyBytes_FromStringAndSize((const char *)record.sid, (Py_ssize_t)record.sid_len);
        PyObject *value = sid ? PyDict_GetItemWithError(self->shared, sid) : NULL; /* borrowed */
        Py_XDECREF(sid);
        if (!value || !PyBytes_Check(value)) { /* not cached yet: the Python path reads it from the store */
            PyErr_Clear();
            goto done;
        }
        rest = (const unsigned char *)PyBytes_AS_STRING(value);
        rest_len = (size_t)PyBytes_GET_SIZE(value);
    }
    size_t size = plain_answer_bytes(&r, record.head_len + rest_len);
    if (size > self->terms.max_answer_bytes)
        goto done; /* chunked, and maybe bounded: Python's */
    PyObject *seen = PyDict_GetItemWithError(counts, prefix); /* borrowed */
    if (!seen && PyErr_Occurred()) {
        result = -1;
        goto done;
    }
    long before = seen ? PyLong_AsLong(seen) : 0;
    PyObject *count = before == -1 && PyErr_Occurred() ? NULL : PyLong_FromLong(before + 1);
    if (!count || PyDict_SetItem(counts, prefix, count) < 0) {
        Py_XDECREF(count);
        result = -1;
        goto done;
    }
    Py_DECREF(count);
    unsigned char *out = self->answers + (size_t)i * self->terms.max_answer_bytes;
    plain_answer(&r, &self->terms, expiration, record.head, record.head_len, rest, rest_len, out);
    self->answer_len[i] = size;
    result = 1;
done:
    Py_XDECREF(raw);
    Py_XDECREF(key);
    Py_DECREF(prefix);
    return result;
}

PyDoc_STRVAR(Batch_serve_doc,
"serve(get, served, counts, expiration, now, tick) -> (tick, answered, handed)\n\n"
"recv(), then answer here every plain resolution of a served prefix (`served`: set of store prefixes) whose\n"
"record (`get(key)`) is all public and fits a datagram, counting each in `counts` (dict prefix -> n); the\n"
"rate limit is asked with `now`, and `tick` is the sampling countdown, returned moved on. `handed`: the\n"
"other datagrams, as (data, address, flags) in arrival order, for Python to answer; send() takes their\n"
"answers. Needs configure_plain().");

static PyObject *Batch_serve(Batch *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "serve(get, served, counts, expiration, now, tick)");
        return NULL;
    }
    if (!self->plain_ready) {
        PyErr_SetString(PyExc_RuntimeError, "serve() before configure_plain()");
        return NULL;
    }
    PyObject *get = args[0], *served = args[1], *counts = args[2], *now = args[4];
    if (!PyAnySet_Check(served) || !PyDict_Check(counts)) {
        PyErr_SetString(PyExc_TypeError, "served must be a set and counts a dict");
        return NULL;
    }
    unsigned long expiration = PyLong_AsUnsignedLong(args[3]);
    long tick = PyLong_AsLong(args[5]);
    if (PyErr_Occurred())
        return NULL;
    int n = receive(self);
    if (n < 0)
        return NULL;
    PyObject *handed = PyList_New(0);
    if (!handed)
        return NULL;
    long answered = 0;
    for (unsigned int i = 0; i < (unsigned int)n; i++) {
        int admit = admitted(self, i, now);
        int flags = admit < 0 ? HANDED_UNDECIDED : admit ? 0 : HANDED_REFUSED;
        if (--tick <= 0) {
            tick = self->sample_every;
            flags |= HANDED_SAMPLED;
        }
        if (!flags) {
            int done = answer_plain(self, i, get, served, counts, (uint32_t)expiration);
            if (done < 0)
                goto fail;
            if (done) {
                answered++;
                continue;
            }
        }
        PyObject *item = datagram_tuple(self, i, flags);
        if (!item || PyList_Append(handed, item) < 0) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
    }
    self->handed = (unsigned int)PyList_GET_SIZE(handed);
    self->answered += (unsigned long long)answered;
    return Py_BuildValue("(llN)", tick, answered, handed);
fail:
    Py_DECREF(handed);
    self->received = self->handed = 0; /* nothing half-answered is sent */
    return NULL;
}

static int grow_send(Batch *self, size_t needed) {
    if (needed <= self->send_capacity)
        return 0;
    size_t size = self->send_capacity ? self->send_capacity : 64;
    while (size < needed)
        size *= 2;
    struct mmsghdr *msgs = PyMem_RawRealloc(self->send_msgs, size * sizeof(struct mmsghdr));
    if (!msgs) {
        PyErr_NoMemory();
        return -1;
    }
    self->send_msgs = msgs;
    struct iovec *iov = PyMem_RawRealloc(self->send_iov, size * sizeof(struct iovec));
    if (!iov) {
        PyErr_NoMemory();
        return -1;
    }
    self->send_iov = iov;
    self->send_capacity = size;
    return 0;
}

static int add_bytes(Batch *self, size_t *count, void *bytes, size_t len, unsigned int slot) {
    if (grow_send(self, *count + 1) < 0)
        return -1;
    size_t k = (*count)++;
    self->send_iov[k].iov_base = bytes;
    self->send_iov[k].iov_len = len;
    struct msghdr *h = &self->send_msgs[k].msg_hdr;
    h->msg_name = &self->addrs[slot];
    h->msg_namelen = self->recv_msgs[slot].msg_hdr.msg_namelen;
    h->msg_iovlen = 1;
    h->msg_control = NULL;
    h->msg_controllen = 0;
    h->msg_flags = 0;
    return 0;
}

static int add_datagram(Batch *self, size_t *count, PyObject *datagram, unsigned int slot) {
    if (!PyBytes_Check(datagram)) {
        PyErr_Format(PyExc_TypeError, "an answer datagram must be bytes, not %.100s", Py_TYPE(datagram)->tp_name);
        return -1;
    }
    return add_bytes(self, count, PyBytes_AS_STRING(datagram), (size_t)PyBytes_GET_SIZE(datagram), slot);
}

/* Slot `slot`'s answer from Python: a list or tuple of datagrams, one datagram, or None. */
static int add_answer(Batch *self, size_t *count, PyObject *answer, unsigned int slot) {
    if (answer == Py_None)
        return 0;
    if (!PyList_CheckExact(answer) && !PyTuple_CheckExact(answer))
        return add_datagram(self, count, answer, slot);
    Py_ssize_t m = PySequence_Fast_GET_SIZE(answer);
    PyObject **parts = PySequence_Fast_ITEMS(answer);
    for (Py_ssize_t j = 0; j < m; j++)
        if (add_datagram(self, count, parts[j], slot) < 0)
            return -1;
    return 0;
}

PyDoc_STRVAR(Batch_send_doc,
"send(answers) -> int\n\n"
"Send the answers of the last recv() or serve(), in arrival order, each to the address its request came from:\n"
"serve()'s own, and answers[k] for the k-th datagram handed to Python (after recv(), every datagram), a list\n"
"of datagrams (bytes); an empty list (or None) sends nothing. Returns how many datagrams were not sent: a full\n"
"send buffer (EAGAIN) drops the rest of the batch, as the network could; a datagram the kernel refuses for its\n"
"destination is skipped and the others go out.");

static PyObject *Batch_send(Batch *self, PyObject *answers) {
    PyObject *seq = PySequence_Fast(answers, "answers must be a sequence");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if ((size_t)n > self->handed) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "%zd answers for %u received datagrams", n, self->handed);
        return NULL;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    size_t count = 0;
    Py_ssize_t next = 0;
    for (unsigned int i = 0; i < self->received; i++) {
        int failed;
        if (self->answer_len[i])
            failed = add_bytes(self, &count, self->answers + (size_t)i * self->terms.max_answer_bytes,
                               self->answer_len[i], i);
        else
            failed = next < n ? add_answer(self, &count, items[next++], i) : 0;
        if (failed < 0) {
            Py_DECREF(seq);
            return NULL;
        }
    }
    for (size_t k = 0; k < count; k++) {
        self->send_msgs[k].msg_hdr.msg_iov = &self->send_iov[k];
        self->send_msgs[k].msg_len = 0;
    }
    size_t done = 0, unsent = 0;
    while (done < count) {
        size_t chunk = count - done;
        if (chunk > MAX_SEND_PER_CALL)
            chunk = MAX_SEND_PER_CALL;
        int sent = sendmmsg(self->fd, self->send_msgs + done, (unsigned int)chunk, MSG_DONTWAIT);
        if (sent > 0) {
            done += (size_t)sent;
            continue;
        }
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
            unsent += count - done;
            break;
        }
        if (sent < 0 && (errno == EBADF || errno == ENOTSOCK)) {
            Py_DECREF(seq);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        /* This destination was refused (EPERM by a firewall, EINVAL for port 0, EHOSTUNREACH...): skip it. */
        unsent++;
        done++;
    }
    Py_DECREF(seq);
    self->unsent += unsent;
    return PyLong_FromSize_t(unsent);
}

static PyObject *Batch_get_unsent(Batch *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->unsent);
}

static PyObject *Batch_get_answered(Batch *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->answered);
}

static PyObject *Batch_get_received(Batch *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLong(self->received);
}

static PyObject *Batch_get_capacity(Batch *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLong(self->capacity);
}

static PyMethodDef Batch_methods[] = {
    {"recv", (PyCFunction)Batch_recv, METH_NOARGS, Batch_recv_doc},
    {"send", (PyCFunction)Batch_send, METH_O, Batch_send_doc},
    {"serve", (PyCFunction)(void (*)(void))Batch_serve, METH_FASTCALL, Batch_serve_doc},
    {"configure_plain", (PyCFunction)(void (*)(void))Batch_configure_plain, METH_VARARGS | METH_KEYWORDS,
     Batch_configure_plain_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Batch_getset[] = {
    {"unsent", (getter)Batch_get_unsent, NULL, "answer datagrams not sent since creation", NULL},
    {"capacity", (getter)Batch_get_capacity, NULL, "datagrams read per recv()", NULL},
    {"answered", (getter)Batch_get_answered, NULL, "datagrams serve() answered itself since creation", NULL},
    {"received", (getter)Batch_get_received, NULL, "datagrams read by the last recv() or serve()", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "resolver.server._mmsg.Batch",
    .tp_basicsize = sizeof(Batch),
    .tp_dealloc = (destructor)Batch_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Batch(fd, capacity=64): recvmmsg/sendmmsg on a non-blocking UDP socket the caller owns.",
    .tp_methods = Batch_methods,
    .tp_getset = Batch_getset,
    .tp_init = (initproc)Batch_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef mmsg_module = {
    PyModuleDef_HEAD_INIT, "_mmsg", "recvmmsg/sendmmsg batches for the Handle UDP listener (Linux).", -1, NULL,
};

PyMODINIT_FUNC PyInit__mmsg(void) {
    if (PyType_Ready(&BatchType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&mmsg_module);
    if (!m)
        return NULL;
    Py_INCREF(&BatchType);
    if (PyModule_AddObject(m, "Batch", (PyObject *)&BatchType) < 0) {
        Py_DECREF(&BatchType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "SLOT_BYTES", SLOT_BYTES) < 0
        || PyModule_AddIntConstant(m, "HANDED_SAMPLED", HANDED_SAMPLED) < 0
        || PyModule_AddIntConstant(m, "HANDED_REFUSED", HANDED_REFUSED) < 0
        || PyModule_AddIntConstant(m, "HANDED_UNDECIDED", HANDED_UNDECIDED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
