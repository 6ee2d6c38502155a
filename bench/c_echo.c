/* The floor of a Handle UDP server on one core: recvmmsg(2) up to 64 datagrams, turn each request into its own
 * "answer" (ResponseCode set to SUCCESS in place, nothing looked up), sendmmsg(2) them back to their sources.
 * Whatever idnode costs above this rate is the price of Python, the store and the codec, not of the kernel's
 * UDP path. Built and run by bench/udp_batch.py (cc -O2); not a server for anything else.
 *
 *     c_echo PORT [BIND]     (BIND defaults to 127.0.0.1; stops on SIGTERM or SIGINT)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64            /* datagrams per recvmmsg, as the idnode batched listener reads */
#define SLOT_BYTES 2048     /* a Handle UDP datagram is at most 512 bytes */
#define RECEIVE_BUFFER (4 << 20) /* as the idnode worker asks for */
#define CODE_AT 24          /* envelope (20) + OpCode (4): the ResponseCode u32 */

static volatile sig_atomic_t stop;
static void on_signal(int signum) { (void)signum; stop = 1; }

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [BIND]\n", argv[0]);
        return 2;
    }
    const char *bind_host = argc > 2 ? argv[2] : "127.0.0.1";
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int size = RECEIVE_BUFFER;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    if (inet_pton(AF_INET, bind_host, &addr.sin_addr) != 1 || bind(fd, (struct sockaddr *)&addr, sizeof(addr))) {
        perror("bind");
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    static char buffers[BATCH][SLOT_BYTES];
    static struct iovec iov[BATCH];
    static struct sockaddr_storage from[BATCH];
    static struct mmsghdr msgs[BATCH];
    printf("ready\n");
    fflush(stdout);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    while (!stop) {
        if (poll(&pfd, 1, 200) <= 0)
            continue;
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = buffers[i];
            iov[i].iov_len = SLOT_BYTES;
            memset(&msgs[i].msg_hdr, 0, sizeof(struct msghdr));
            msgs[i].msg_hdr.msg_name = &from[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            continue;
        for (int i = 0; i < n; i++) {
            iov[i].iov_len = msgs[i].msg_len;
            if (msgs[i].msg_len >= CODE_AT + 4)
                memcpy(buffers[i] + CODE_AT, "\0\0\0\1", 4);
        }
        int sent = 0;
        while (sent < n) {
            int k = sendmmsg(fd, msgs + sent, (unsigned int)(n - sent), 0);
            if (k < 0) {
                if (errno == EINTR)
                    continue;
                break; /* a lost answer is counted by the generator */
            }
            sent += k;
        }
    }
    close(fd);
    return 0;
}
