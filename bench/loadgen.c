/*
 * loadgen.c -- the load generator of servekit's bench/, and the trivial echo
 * server its ceiling is measured against.  Compiled at bench time with the
 * machine's `cc` (see bench/generator.py); plain C99 + Linux epoll, no deps.
 *
 *   loadgen serve tcp|udp HOST
 *       Echo server (one thread, epoll).  Prints "READY HOST PORT" and serves
 *       until its standard input reaches EOF (the harness closes it).
 *
 *   loadgen run conn|keepalive|idle|udp HOST PORT [options]
 *       -c N   active connections (udp: sockets), each closed-loop
 *       -d S   duration in seconds of the measured phase
 *       -n N   stop after N completed requests (a bound, not a target)
 *       -i N   idle connections held open (idle mode)
 *       -t MS  per-request timeout in milliseconds
 *       -s N   request size in bytes, newline included
 *       -T S   time allowed to open the idle connections
 *       -S N   spread TCP clients over source addresses 127.0.0.1 .. 127.0.0.N
 *       Prints "idle-ready OPEN SECONDS" (idle mode, once the idle
 *       connections are held) and finally one line "result {json}".
 *
 * Why C and one thread: the servers under test are Python processes that use
 * about one core; a single epoll thread in C leaves them the other core and
 * still reaches several times their rate (the harness prints that ceiling in
 * every run).  Every request is closed-loop (a connection sends its next line
 * only after the previous echo came back), so latency is a round trip.
 *
 * Why several source addresses (-S): the client closes first, so each
 * connection leaves a TIME_WAIT socket holding its 4-tuple.  From one source
 * address to one server port there are ~28,000 ephemeral ports, reusable
 * about a second later (tcp_tw_reuse), which caps the conn workload near
 * 14,000 connections/s whatever the server.  Other 127.0.0.x addresses are
 * loopback too: the traffic still only goes to the server on 127.0.0.1.
 *
 * Why the idle connections each do one round trip before being held: a
 * connection the server has not accepted yet costs it nothing; after the echo
 * we know the server is really holding it (thread, buffers...).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXMSG 4096
#define MAXEVENTS 512

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

/* Never outlive the harness, whatever happens to it. */
static void tie_to_parent(void) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1) exit(3);
}

/* Idle mode holds thousands of sockets: take the hard limit. */
static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int make_addr(const char *host, int port, struct sockaddr_in *sa) {
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* serve: the trivial echo server                                      */
/* ------------------------------------------------------------------ */

struct pending {        /* bytes the echo server could not write at once */
    char *buf;
    size_t len;
};

static int serve(const char *kind, const char *host) {
    int udp = strcmp(kind, "udp") == 0;
    struct sockaddr_in sa;
    if (make_addr(host, 0, &sa) < 0) die("address");
    int lfd = socket(AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK, 0);
    if (lfd < 0) die("socket");
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (!udp && listen(lfd, 1024) < 0) die("listen");
    socklen_t sl = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &sl);

    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.fd = 0;     /* stdin: EOF means stop */
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);

    printf("READY %s %d\n", host, ntohs(sa.sin_port));
    fflush(stdout);

    int cap = 1024;
    struct pending *pend = calloc((size_t)cap, sizeof *pend);
    struct epoll_event events[MAXEVENTS];
    char buf[65536];
    for (;;) {
        int n = epoll_wait(ep, events, MAXEVENTS, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("epoll_wait");
        for (int k = 0; k < n; k++) {
            int fd = events[k].data.fd;
            if (fd == 0) {
                if (read(0, buf, sizeof buf) <= 0) return 0;
                continue;
            }
            if (fd == lfd && udp) {
                for (;;) {
                    struct sockaddr_in from;
                    socklen_t fl = sizeof from;
                    ssize_t r = recvfrom(lfd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
                    if (r < 0) break;
                    sendto(lfd, buf, (size_t)r, 0, (struct sockaddr *)&from, fl);
                }
                continue;
            }
            if (fd == lfd) {
                for (;;) {
                    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (c < 0) break;
                    int one = 1;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    if (c >= cap) {
                        int ncap = cap;
                        while (c >= ncap) ncap *= 2;
                        pend = realloc(pend, (size_t)ncap * sizeof *pend);
                        memset(pend + cap, 0, (size_t)(ncap - cap) * sizeof *pend);
                        cap = ncap;
                    }
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            /* A client connection (edge-triggered): flush, then read until EAGAIN. */
            int closed = 0;
            struct pending *p = &pend[fd];
            while (!closed) {
                if (p->len) {
                    ssize_t w = send(fd, p->buf, p->len, MSG_NOSIGNAL);
                    if (w < 0 && errno == EAGAIN) break;
                    if (w < 0) { closed = 1; break; }
                    memmove(p->buf, p->buf + w, p->len - (size_t)w);
                    p->len -= (size_t)w;
                    if (p->len) break;
                }
                ssize_t r = recv(fd, buf, sizeof buf, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN)) { closed = 1; break; }
                if (r < 0) break;
                ssize_t w = send(fd, buf, (size_t)r, MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN) { closed = 1; break; }
                if (w < 0) w = 0;
                if (w < r) {        /* keep the rest for the next EPOLLOUT edge */
                    p->buf = realloc(p->buf, (size_t)(r - w));
                    memcpy(p->buf, buf + w, (size_t)(r - w));
                    p->len = (size_t)(r - w);
                }
                /* A short read drained the socket; what arrives later raises a
                 * new edge.  Saves the EAGAIN read on every echo. */
                if (r < (ssize_t)sizeof buf) break;
            }
            if (closed) {
                free(p->buf);
                p->buf = NULL;
                p->len = 0;
                close(fd);
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* run: the load generator                                             */
/* ------------------------------------------------------------------ */

enum mode { M_CONN, M_KEEP, M_IDLE, M_UDP };
enum state { S_FREE, S_WAIT, S_CONNECTING, S_SENDING, S_READING, S_HELD };

struct conn {
    int fd;
    enum state st;
    int idle;           /* one of the idle connections */
    double start;       /* when the current request began */
    double deadline;    /* timeout of the current step, or backoff end (S_WAIT) */
    size_t sent, got;
    uint32_t seq;       /* udp: sequence number of the outstanding datagram */
};

static struct {
    enum mode mode;
    struct sockaddr_in sa;
    int conc, idle_n, size, sources;
    double duration, timeout, idle_timeout;
    long max_requests;
    int ep;
    struct conn *conns;     /* [0, conc) active, [conc, conc + idle_n) idle */
    char msg[MAXMSG];
    /* results */
    long done, refused, reset, timedout, other, late, idle_lost, setup_failed;
    float *lat;             /* microseconds */
    long lat_len, lat_cap;
    int measuring;          /* requests count only in the measured phase */
    int opening;            /* open_held() is running */
    int draining;           /* measured phase over: finish, then close */
    int idle_open;
} G;

static void record(double us) {
    if (G.lat_len == G.lat_cap) {
        G.lat_cap = G.lat_cap ? G.lat_cap * 2 : 65536;
        G.lat = realloc(G.lat, (size_t)G.lat_cap * sizeof *G.lat);
        if (!G.lat) die("realloc");
    }
    G.lat[G.lat_len++] = (float)us;
}

static void count_error(int err) {
    if (!G.measuring) return;
    if (err == ECONNREFUSED) G.refused++;
    else if (err == ECONNRESET || err == EPIPE || err == ECONNABORTED) G.reset++;
    else if (err == ETIMEDOUT) G.timedout++;
    else G.other++;
}

static void drop(struct conn *c) {
    if (c->fd >= 0) close(c->fd);      /* close() also leaves the epoll set */
    c->fd = -1;
    c->st = S_FREE;
}

/* A failed request: count it and retry a little later, so a dead server
 * gives a bounded error count rather than a busy loop. */
static void fail(struct conn *c, int err) {
    count_error(err);
    if (c->idle && c->st == S_HELD) G.idle_lost++;
    drop(c);
    c->st = S_WAIT;
    c->deadline = now() + 0.01;
}

static void fill_udp(struct conn *c) {
    /* "slot seq" then padding then newline: the reply is matched on it. */
    int slot = (int)(c - G.conns);
    int n = snprintf(G.msg, sizeof G.msg, "%d %u ", slot, c->seq);
    memset(G.msg + n, 'x', (size_t)(G.size - n - 1));
    G.msg[G.size - 1] = '\n';
}

static int send_request(struct conn *c);

static void start(struct conn *c) {
    int udp = G.mode == M_UDP;
    c->fd = socket(AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK, 0);
    if (c->fd < 0) { fail(c, errno); return; }
    if (!udp && G.mode != M_CONN) {     /* one write per connection needs no NODELAY */
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (!udp && G.sources > 1) {
        /* The port is picked at connect() for the whole 4-tuple, not at bind(). */
        static unsigned next_source;
        int one = 1;
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + next_source++ % (unsigned)G.sources);
        if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) {
            /* Not every sandbox lets 127.0.0.x be bound: one source it is. */
            G.sources = 1;
            close(c->fd);
            start(c);
            return;
        }
    }
    c->start = now();
    c->deadline = c->start + G.timeout;
    c->sent = c->got = 0;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
    if (epoll_ctl(G.ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    int r = connect(c->fd, (struct sockaddr *)&G.sa, sizeof G.sa);
    if (r < 0 && errno != EINPROGRESS) { fail(c, errno); return; }
    c->st = r == 0 ? S_SENDING : S_CONNECTING;
    if (c->st == S_SENDING) send_request(c);
}

/* Send (the rest of) the current request; then wait for the echo. */
static int send_request(struct conn *c) {
    if (G.mode == M_UDP) {
        c->seq++;
        fill_udp(c);
        c->start = now();
        c->deadline = c->start + G.timeout;
        if (send(c->fd, G.msg, (size_t)G.size, 0) < 0) { fail(c, errno); return -1; }
        c->st = S_READING;
        return 0;
    }
    while (c->sent < (size_t)G.size) {
        ssize_t w = send(c->fd, G.msg + c->sent, (size_t)G.size - c->sent, MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN) { c->st = S_SENDING; return 0; }
        if (w < 0) { fail(c, errno); return -1; }
        c->sent += (size_t)w;
    }
    c->st = S_READING;
    return 0;
}

static int done_enough(void) {
    return G.max_requests > 0 && G.done >= G.max_requests;
}

/* One echo came back complete. */
static void completed(struct conn *c) {
    double t = now();
    if (G.measuring && !c->idle) {
        G.done++;
        record((t - c->start) * 1e6);
    }
    if (G.draining) {           /* the run is over: close with nothing unread */
        drop(c);
        return;
    }
    if (c->idle || G.opening) { /* held: silent until the measured phase */
        c->st = S_HELD;
        return;
    }
    if (G.mode == M_CONN) {     /* per-request connection: close, reconnect */
        drop(c);
        start(c);
        return;
    }
    c->start = t;
    c->deadline = t + G.timeout;
    c->sent = c->got = 0;
    send_request(c);
}

static void on_event(struct conn *c, uint32_t events) {
    char buf[MAXMSG + 1];
    if (c->st == S_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        if (events & (EPOLLERR | EPOLLHUP)) {   /* else connected: no getsockopt */
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            fail(c, err ? err : ECONNRESET);
            return;
        }
        if (send_request(c) < 0) return;
    }
    if (c->st == S_SENDING) {
        if (send_request(c) < 0) return;
    }
    while (c->st == S_READING || c->st == S_HELD) {
        ssize_t r = recv(c->fd, buf, MAXMSG, 0);
        if (r < 0 && errno == EAGAIN) return;
        if (r < 0) { fail(c, errno); return; }
        if (r == 0) {       /* the server closed the connection */
            if (c->st == S_HELD) G.idle_lost++;
            if (G.measuring && !c->idle) G.reset++;
            drop(c);
            c->st = S_WAIT;
            c->deadline = now() + 0.01;
            return;
        }
        if (c->st == S_HELD) continue;      /* unexpected bytes on an idle one */
        if (G.mode == M_UDP) {
            unsigned slot, seq;
            buf[r] = 0;
            if (sscanf(buf, "%u %u ", &slot, &seq) != 2 || seq != c->seq
                || r != G.size) {
                G.late++;                   /* a reply to a timed-out datagram */
                continue;
            }
            completed(c);   /* sent the next one: nothing more to read now */
            return;
        }
        c->got += (size_t)r;
        if (c->got > (size_t)G.size) { if (G.measuring) G.other++; drop(c); start(c); return; }
        if (c->got == (size_t)G.size) {
            /* Closed loop: nothing more arrives before the next request, and
             * with edge-triggered epoll its echo raises a new edge, so no
             * read-until-EAGAIN (a third of the syscalls of a round trip). */
            completed(c);
            return;
        }
    }
}

/* Timeouts, and restarts of failed slots; the idle ones are scanned only
 * while they are being opened. */
static void scan(double t, int from, int to) {
    for (int k = from; k < to; k++) {
        struct conn *c = &G.conns[k];
        if (c->st == S_WAIT && t >= c->deadline) {
            c->st = S_FREE;
            if (!c->idle) start(c);
        } else if ((c->st == S_CONNECTING || c->st == S_SENDING || c->st == S_READING)
                   && t >= c->deadline) {
            count_error(ETIMEDOUT);
            if (G.mode == M_UDP) {          /* same socket, next datagram */
                send_request(c);
            } else {
                drop(c);
                c->st = S_WAIT;
                c->deadline = t;
            }
        }
    }
}

static void loop_once(int wait_ms) {
    struct epoll_event events[MAXEVENTS];
    int n = epoll_wait(G.ep, events, MAXEVENTS, wait_ms);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int k = 0; k < n; k++) {
        struct conn *c = events[k].data.ptr;
        if (c->fd >= 0) on_event(c, events[k].events);
    }
}

/* This process's CPU seconds (user + system). */
static double cpu_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec)
         + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static double percentile(double q) {
    if (G.lat_len == 0) return 0.0;
    long i = (long)(q * (double)(G.lat_len - 1) + 0.5);
    return G.lat[i];
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Open connections [lo, hi) and hold each after one round trip, at most a
 * few handshakes at a time: a socketserver listens with a backlog of 5, and
 * a burst past it would be dropped SYNs and one-second retransmits, which are
 * the kernel's doing, not the server's cost.  Failures count in setup_failed. */
static double open_held(int lo, int hi) {
    double t0 = now(), end = t0 + G.idle_timeout;
    int next = lo, inflight_max = 4;
    G.opening = 1;
    while (now() < end) {
        int inflight = 0;
        for (int k = lo; k < next; k++) {
            enum state s = G.conns[k].st;
            if (s != S_HELD && s != S_FREE) inflight++;
        }
        if (next == hi && inflight == 0) break;
        while (inflight < inflight_max && next < hi) {
            start(&G.conns[next++]);
            inflight++;
        }
        loop_once(5);
        double t = now();
        for (int k = lo; k < next; k++) {      /* timeouts while opening */
            struct conn *c = &G.conns[k];
            if ((c->st == S_CONNECTING || c->st == S_SENDING || c->st == S_READING)
                && t >= c->deadline) {
                G.setup_failed++;
                drop(c);
            } else if (c->st == S_WAIT) {
                G.setup_failed++;
                c->st = S_FREE;             /* failed: stays closed */
            }
        }
    }
    G.opening = 0;
    return now() - t0;
}

static int run(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: loadgen run MODE HOST PORT [opts]\n"); return 2; }
    const char *m = argv[2];
    G.mode = strcmp(m, "conn") == 0 ? M_CONN : strcmp(m, "keepalive") == 0 ? M_KEEP
           : strcmp(m, "idle") == 0 ? M_IDLE : strcmp(m, "udp") == 0 ? M_UDP : -1;
    if ((int)G.mode < 0) { fprintf(stderr, "unknown mode %s\n", m); return 2; }
    if (make_addr(argv[3], atoi(argv[4]), &G.sa) < 0) { fprintf(stderr, "bad host\n"); return 2; }
    G.conc = 4; G.duration = 1.0; G.timeout = 2.0; G.size = 32; G.idle_timeout = 60.0;
    G.max_requests = 0;
    G.sources = 1;
    int opt;
    optind = 5;
    while ((opt = getopt(argc, argv, "c:d:n:i:t:s:T:S:")) != -1) {
        switch (opt) {
        case 'c': G.conc = atoi(optarg); break;
        case 'd': G.duration = atof(optarg); break;
        case 'n': G.max_requests = atol(optarg); break;
        case 'i': G.idle_n = atoi(optarg); break;
        case 't': G.timeout = atof(optarg) / 1000.0; break;
        case 's': G.size = atoi(optarg); break;
        case 'T': G.idle_timeout = atof(optarg); break;
        case 'S': G.sources = atoi(optarg); break;
        default: return 2;
        }
    }
    if (G.mode != M_IDLE) G.idle_n = 0;
    /* Other source addresses only towards 127.0.0.0/8, where they are loopback. */
    if ((ntohl(G.sa.sin_addr.s_addr) >> 24) != 127 || G.sources > 254) G.sources = 1;
    if (G.size < 16 || G.size > MAXMSG || G.conc < 1) { fprintf(stderr, "bad options\n"); return 2; }
    /* The hard stop: whatever the server does, this process ends. */
    alarm((unsigned)(G.duration + G.idle_timeout + 30));
    raise_nofile();
    memset(G.msg, 'x', (size_t)G.size);
    G.msg[G.size - 1] = '\n';
    G.ep = epoll_create1(0);
    G.conns = calloc((size_t)(G.conc + G.idle_n), sizeof *G.conns);
    for (int k = 0; k < G.conc + G.idle_n; k++) {
        G.conns[k].fd = -1;
        G.conns[k].idle = k >= G.conc;
    }

    if (G.mode == M_IDLE) {
        double took = open_held(G.conc, G.conc + G.idle_n);
        for (int k = G.conc; k < G.conc + G.idle_n; k++) G.idle_open += G.conns[k].st == S_HELD;
        printf("idle-ready %d %.6f\n", G.idle_open, took);
        fflush(stdout);
    }
    /* Long-lived connections are opened before the clock starts. */
    if (G.mode == M_KEEP || G.mode == M_IDLE) open_held(0, G.conc);
    G.measuring = 1;
    double cpu0 = cpu_now();
    double t0 = now(), end = t0 + G.duration, last_scan = t0;
    for (int k = 0; k < G.conc; k++) {
        struct conn *c = &G.conns[k];
        if (c->st == S_HELD) {
            c->start = now();
            c->deadline = c->start + G.timeout;
            c->sent = c->got = 0;
            send_request(c);
        } else {
            drop(c);
            start(c);
        }
    }
    for (;;) {
        double t = now();
        if (t >= end || done_enough()) break;
        int ms = (int)((end - t) * 1000.0);
        loop_once(ms < 5 ? (ms < 0 ? 0 : ms) : 5);
        t = now();
        if (t - last_scan >= 0.002) {
            scan(t, 0, G.conc);
            last_scan = t;
        }
    }
    double elapsed = now() - t0;
    double cpu = cpu_now() - cpu0;
    G.measuring = 0;
    /* Let outstanding echoes come back before closing: a socket closed with
     * unread data sends a reset, which the server would log as its error. */
    G.draining = 1;
    double drain_end = now() + (G.timeout < 1.0 ? G.timeout : 1.0);
    while (now() < drain_end) {
        int outstanding = 0;
        for (int k = 0; k < G.conc; k++) {
            enum state s = G.conns[k].st;
            outstanding += s == S_CONNECTING || s == S_SENDING || s == S_READING;
        }
        if (!outstanding) break;
        loop_once(5);
    }
    int held = 0;
    for (int k = G.conc; k < G.conc + G.idle_n; k++) held += G.conns[k].st == S_HELD;
    for (int k = 0; k < G.conc + G.idle_n; k++) drop(&G.conns[k]);

    qsort(G.lat, (size_t)G.lat_len, sizeof *G.lat, cmp_float);
    printf("result {\"mode\": \"%s\", \"requests\": %ld, \"elapsed\": %.6f, "
           "\"refused\": %ld, \"reset\": %ld, \"timeout\": %ld, \"other\": %ld, "
           "\"late\": %ld, \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, "
           "\"max_us\": %.1f, \"idle_open\": %d, \"idle_held\": %d, \"idle_lost\": %ld, "
           "\"setup_failed\": %ld, \"cpu_s\": %.6f}\n",
           m, G.done, elapsed, G.refused, G.reset, G.timedout, G.other, G.late,
           percentile(0.50), percentile(0.90), percentile(0.99),
           G.lat_len ? (double)G.lat[G.lat_len - 1] : 0.0,
           G.idle_open, held, G.idle_lost, G.setup_failed, cpu);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    tie_to_parent();
    if (argc >= 4 && strcmp(argv[1], "serve") == 0) return serve(argv[2], argv[3]);
    if (argc >= 2 && strcmp(argv[1], "run") == 0) return run(argc, argv);
    fprintf(stderr, "usage: loadgen serve tcp|udp HOST | loadgen run MODE HOST PORT [opts]\n");
    return 2;
}
