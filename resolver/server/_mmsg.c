/* Batched datagram I/O for the Handle UDP listener: one recvmmsg(2) reads up to `capacity` datagrams into
 * preallocated buffers, one sendmmsg(2) (or a few, for long chunked answers) sends their answers, each answer
 * addressed with the very sockaddr its request came from (no address is converted back from Python).
 *
 * Only the system calls and the copies live here; what to answer is decided in Python (resolver/server/udp.py),
 * so every answer still goes through the same per-request chain (rate limit, amplification bound, counting,
 * sampling). Linux only; built by setup.py as an optional extension, and resolver/server/udp_batch.py falls
 * back to the event loop's datagram transport when it is missing.
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

/* A UDP payload can be 65,507 bytes over IPv4 (65,527 over IPv6): a slot that holds any of them means a
 * datagram is never truncated, so it reaches the codec exactly as the event loop's transport would deliver it. */
#define SLOT_BYTES 65536
/* sendmmsg takes at most UIO_MAXIOV (1024) messages per call. */
#define MAX_SEND_PER_CALL 1024
/* Caps the datagrams asked for per recvmmsg: 64 slots are 4 MiB of address space (touched only as used). */
#define MAX_CAPACITY 1024

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
} Batch;

static void Batch_dealloc(Batch *self) {
    PyMem_RawFree(self->buffers);
    PyMem_RawFree(self->recv_iov);
    PyMem_RawFree(self->recv_msgs);
    PyMem_RawFree(self->addrs);
    PyMem_RawFree(self->send_msgs);
    PyMem_RawFree(self->send_iov);
    Py_XDECREF(self->last_host_str);
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
    if (!self->buffers || !self->recv_iov || !self->recv_msgs || !self->addrs) {
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
static PyObject *address_tuple(Batch *self, const struct sockaddr_storage *ss, socklen_t len) {
    char text[INET6_ADDRSTRLEN];
    PyObject *host;
    int same;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        const struct sockaddr_in *last = (const struct sockaddr_in *)&self->last_host;
        same = self->last_host_str && self->last_host.ss_family == AF_INET
               && last->sin_addr.s_addr == sin->sin_addr.s_addr;
        if (!same) {
            if (!inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text)))
                return PyErr_SetFromErrno(PyExc_OSError);
            host = PyUnicode_FromString(text);
            if (!host)
                return NULL;
            Py_XSETREF(self->last_host_str, host);
            memcpy(&self->last_host, ss, sizeof(struct sockaddr_in));
        }
        Py_INCREF(self->last_host_str);
        return Py_BuildValue("(Ni)", self->last_host_str, (int)ntohs(sin->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        const struct sockaddr_in6 *last = (const struct sockaddr_in6 *)&self->last_host;
        same = self->last_host_str && self->last_host.ss_family == AF_INET6
               && memcmp(&last->sin6_addr, &sin6->sin6_addr, sizeof(struct in6_addr)) == 0
               && last->sin6_scope_id == sin6->sin6_scope_id;
        if (!same) {
            if (!inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof(text)))
                return PyErr_SetFromErrno(PyExc_OSError);
            host = PyUnicode_FromString(text);
            if (!host)
                return NULL;
            Py_XSETREF(self->last_host_str, host);
            memcpy(&self->last_host, ss, sizeof(struct sockaddr_in6));
        }
        Py_INCREF(self->last_host_str);
        return Py_BuildValue("(NiII)", self->last_host_str, (int)ntohs(sin6->sin6_port),
                             (unsigned int)ntohl(sin6->sin6_flowinfo), (unsigned int)sin6->sin6_scope_id);
    }
    (void)len;
    Py_RETURN_NONE; /* not an IP socket: the caller drops it */
}

PyDoc_STRVAR(Batch_recv_doc,
"recv() -> list[tuple[bytes, tuple]]\n\n"
"Up to `capacity` datagrams waiting on the socket, each with its source address, in arrival order; an empty\n"
"list when none waits. The addresses are kept for the next send().");

static PyObject *Batch_recv(Batch *self, PyObject *Py_UNUSED(ignored)) {
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
    self->received = 0;
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *out = PyList_New(n);
    if (!out)
        return NULL;
    for (int i = 0; i < n; i++) {
        struct mmsghdr *m = &self->recv_msgs[i];
        PyObject *data = PyBytes_FromStringAndSize(self->recv_iov[i].iov_base, (Py_ssize_t)m->msg_len);
        PyObject *addr = data ? address_tuple(self, &self->addrs[i], m->msg_hdr.msg_namelen) : NULL;
        if (!addr) {
            Py_XDECREF(data);
            Py_DECREF(out);
            return NULL;
        }
        PyObject *pair = PyTuple_Pack(2, data, addr);
        Py_DECREF(data);
        Py_DECREF(addr);
        if (!pair) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, pair);
    }
    self->received = (unsigned int)n;
    return out;
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

static int add_datagram(Batch *self, size_t *count, PyObject *datagram, unsigned int slot) {
    if (!PyBytes_Check(datagram)) {
        PyErr_Format(PyExc_TypeError, "an answer datagram must be bytes, not %.100s", Py_TYPE(datagram)->tp_name);
        return -1;
    }
    if (grow_send(self, *count + 1) < 0)
        return -1;
    size_t k = (*count)++;
    self->send_iov[k].iov_base = PyBytes_AS_STRING(datagram);
    self->send_iov[k].iov_len = (size_t)PyBytes_GET_SIZE(datagram);
    struct msghdr *h = &self->send_msgs[k].msg_hdr;
    h->msg_name = &self->addrs[slot];
    h->msg_namelen = self->recv_msgs[slot].msg_hdr.msg_namelen;
    h->msg_iovlen = 1;
    h->msg_control = NULL;
    h->msg_controllen = 0;
    h->msg_flags = 0;
    return 0;
}

PyDoc_STRVAR(Batch_send_doc,
"send(answers) -> int\n\n"
"Send the answers to the datagrams of the last recv(): answers[i] is a list of datagrams (bytes) for the i-th\n"
"request, sent to the address it came from; an empty list (or None) sends nothing. Returns how many datagrams\n"
"were not sent: a full send buffer (EAGAIN) drops the rest of the batch, as the network could; a datagram the\n"
"kernel refuses for its destination is skipped and the others go out.");

static PyObject *Batch_send(Batch *self, PyObject *answers) {
    PyObject *seq = PySequence_Fast(answers, "answers must be a sequence");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if ((size_t)n > self->received) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "%zd answers for %u received datagrams", n, self->received);
        return NULL;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    size_t count = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *answer = items[i];
        if (answer == Py_None)
            continue;
        if (PyList_CheckExact(answer) || PyTuple_CheckExact(answer)) {
            Py_ssize_t m = PySequence_Fast_GET_SIZE(answer);
            PyObject **parts = PySequence_Fast_ITEMS(answer);
            for (Py_ssize_t j = 0; j < m; j++) {
                if (add_datagram(self, &count, parts[j], (unsigned int)i) < 0) {
                    Py_DECREF(seq);
                    return NULL;
                }
            }
        } else if (add_datagram(self, &count, answer, (unsigned int)i) < 0) {
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

static PyObject *Batch_get_capacity(Batch *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLong(self->capacity);
}

static PyMethodDef Batch_methods[] = {
    {"recv", (PyCFunction)Batch_recv, METH_NOARGS, Batch_recv_doc},
    {"send", (PyCFunction)Batch_send, METH_O, Batch_send_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Batch_getset[] = {
    {"unsent", (getter)Batch_get_unsent, NULL, "answer datagrams not sent since creation", NULL},
    {"capacity", (getter)Batch_get_capacity, NULL, "datagrams read per recv()", NULL},
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
    if (PyModule_AddIntConstant(m, "SLOT_BYTES", SLOT_BYTES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
