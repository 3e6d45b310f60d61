/* The C baseline of examples/bench.rs: a line-echo server on raw edge-triggered epoll, the
 * least a server can do. It frames nothing: each read is echoed up to its last newline, the
 * rest is kept for the next read. Replies the socket will not take wait for EPOLLOUT, and
 * reading pauses until they are out, so memory stays bounded.
 *
 * Build: cc -O2 -o target/release/epoll_echo examples/baselines/epoll_echo.c  (bench does it)
 * Run:   target/release/epoll_echo 127.0.0.1:7100   (prints "echo listening on ADDR")
 */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_LINE (64 * 1024)

struct conn {
    int fd;
    char in[MAX_LINE]; /* the unterminated tail of the last read */
    size_t in_len;
    char *out; /* replies the socket did not take */
    size_t out_len, out_done;
};

static void die(const char *what) { perror(what); exit(1); }

static void drop(struct conn *c) { close(c->fd); free(c->out); free(c); }

/* Writes what is pending; -1 on error, else 1 if all of it went out. */
static int flush(struct conn *c) {
    while (c->out_done < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_done, c->out_len - c->out_done);
        if (n < 0) return errno == EAGAIN ? 0 : -1;
        c->out_done += n;
    }
    c->out_len = c->out_done = 0;
    return 1;
}

/* Reads until EAGAIN or a short read, echoing complete lines; -1 when the client is gone. */
static int serve(struct conn *c) {
    for (;;) {
        if (c->out_len > 0) return 0; /* replies wait: read again after EPOLLOUT */
        size_t room = sizeof c->in - c->in_len;
        if (room == 0) return -1; /* a line too long */
        ssize_t n = read(c->fd, c->in + c->in_len, room);
        if (n == 0) return -1;
        if (n < 0) return errno == EAGAIN ? 0 : -1;
        size_t filled = c->in_len + n, end = filled;
        while (end > 0 && c->in[end - 1] != '\n') end--;
        if (end > 0) {
            ssize_t w = write(c->fd, c->in, end);
            if (w < 0 && errno != EAGAIN) return -1;
            size_t sent = w < 0 ? 0 : (size_t)w;
            if (sent < end) {
                c->out = realloc(c->out, end - sent);
                memcpy(c->out, c->in + sent, end - sent);
                c->out_len = end - sent;
            }
            memmove(c->in, c->in + end, filled - end);
        }
        c->in_len = filled - end;
        if ((size_t)n < room) return 0; /* drained for now: new bytes raise a new edge */
    }
}

int main(int argc, char **argv) {
    const char *spec = argc > 1 ? argv[1] : "127.0.0.1:7100";
    char host[64];
    const char *colon = strrchr(spec, ':');
    if (!colon || colon - spec >= (long)sizeof host) { fprintf(stderr, "usage: %s IP:PORT\n", argv[0]); return 2; }
    memcpy(host, spec, colon - spec);
    host[colon - spec] = 0;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) { fprintf(stderr, "bad address %s\n", spec); return 2; }
    int one = 1, listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(listener, 65535) < 0) die("listen");
    socklen_t len = sizeof addr;
    getsockname(listener, (struct sockaddr *)&addr, &len);
    printf("echo listening on %s:%d\n", host, ntohs(addr.sin_port));
    fflush(stdout);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}, events[1024];
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    for (;;) {
        int ready = epoll_wait(ep, events, 1024, -1);
        for (int i = 0; i < ready; i++) {
            struct conn *c = events[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            int status = 0;
            if (events[i].events & (EPOLLOUT | EPOLLERR)) status = flush(c);
            if (status >= 0 && c->out_len == 0) status = serve(c);
            if (status < 0 || (events[i].events & EPOLLERR)) drop(c);
        }
    }
}
