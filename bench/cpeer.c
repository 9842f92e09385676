/* bench/cpeer.c
 *
 * The C end of the one-sided workloads: a writer fast enough that the
 * receiver under test is the bottleneck, and a reader fast enough that the
 * sender under test is. Plain blocking I/O, no event loop, no interpreter.
 * bench/evlbench/cpeer.py compiles it with `cc -O2` and starts it with the
 * socket ends it is to use passed down as already-open descriptors:
 *
 *   cpeer write SIZE SECONDS ROUNDS BATCH TRICKLE PAUSE_US FD [FD ...]
 *       Writes frames of SIZE payload bytes (channel 1; payload byte j is
 *       (j * 131 + 7) mod 256) to every FD for SECONDS, or for ROUNDS rounds
 *       over the FDs if ROUNDS > 0 and that comes first, then closes them
 *       all. (A round count bounds the work where a deadline cannot: a
 *       receiver with big read buffers lets the writer run far ahead.)
 *       TRICKLE 0 (flood): round-robin over the FDs, BATCH pre-encoded frames
 *       per write() per FD, as fast as the receivers drain them.
 *       TRICKLE k > 0: k frames per FD in one write(), then a sleep of
 *       PAUSE_US microseconds before the next FD, so that at any moment
 *       nearly every connection is idle.
 *       Prints {"frames", "bytes", "writes", "seconds"}: what it wrote.
 *
 *   cpeer read FRAMING SIZE FD
 *       Drains FD in 1 MiB reads until EOF, walking and checking every
 *       header (channel 1, length SIZE), and counts frames and payload bytes,
 *       timed from the first byte to EOF. FRAMING "evl" is the frame format
 *       itself; "mp" expects multiprocessing.connection's 4-byte big-endian
 *       length before each frame, and checks it too.
 *       Prints {"frames", "bytes", "seconds"}.
 *
 * Any error (a bad header, EOF inside a frame, a failed write) is a message
 * on stderr and exit status 3. No socket buffer is resized: every system
 * sees the kernel's defaults.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HEADER_SIZE 6
#define CHANNEL 1
#define CHUNK (1u << 20)

static void fail(const char *what)
{
    perror(what);
    exit(3);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint32_t get_u32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            fail("cpeer: write");
        }
        p += w;
        n -= (size_t)w;
    }
}

/* BATCH frames back to back, each with the same header and payload. */
static uint8_t *encode(uint32_t size, size_t count, size_t *len_out)
{
    size_t frame = HEADER_SIZE + (size_t)size;
    uint8_t *buf = malloc(frame * count);
    if (buf == NULL)
        fail("cpeer: malloc");
    for (size_t i = 0; i < count; i++) {
        uint8_t *p = buf + i * frame;
        p[0] = 0;
        p[1] = CHANNEL;
        p[2] = (uint8_t)(size >> 24);
        p[3] = (uint8_t)(size >> 16);
        p[4] = (uint8_t)(size >> 8);
        p[5] = (uint8_t)size;
        for (uint32_t j = 0; j < size; j++)
            p[HEADER_SIZE + j] = (uint8_t)(j * 131u + 7u);
    }
    *len_out = frame * count;
    return buf;
}

static int do_write(uint32_t size, double seconds, long rounds, long batch, long trickle,
                    long pause_us, int nfds, char **fd_args)
{
    int *fds = malloc(sizeof(int) * (size_t)nfds);
    if (fds == NULL)
        fail("cpeer: malloc");
    for (int i = 0; i < nfds; i++)
        fds[i] = (int)strtol(fd_args[i], NULL, 10);
    long per_write = trickle > 0 ? trickle : batch;
    size_t len;
    uint8_t *buf = encode(size, (size_t)per_write, &len);
    struct timespec pause = {pause_us / 1000000, (pause_us % 1000000) * 1000};
    uint64_t start = now_ns();
    uint64_t deadline = start + (uint64_t)(seconds * 1e9);
    uint64_t writes = 0;
    int done = 0;
    long round = 0;
    while (!done) {
        for (int i = 0; i < nfds; i++) {
            write_all(fds[i], buf, len);
            writes++;
            if (trickle > 0 && pause_us > 0)
                nanosleep(&pause, NULL);
            if (now_ns() >= deadline) {
                /* Finish the round, so every connection got the same number
                 * of writes (give or take the last one). */
                done = 1;
            }
        }
        if (rounds > 0 && ++round >= rounds)
            done = 1;
    }
    uint64_t end = now_ns();
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    uint64_t frames = writes * (uint64_t)per_write;
    printf("{\"frames\": %llu, \"bytes\": %llu, \"writes\": %llu, \"seconds\": %.9f}\n",
           (unsigned long long)frames, (unsigned long long)(frames * size),
           (unsigned long long)writes, (end - start) / 1e9);
    free(buf);
    free(fds);
    return 0;
}

static int do_read(int mp, uint32_t size, int fd)
{
    /* The unit that repeats on the wire: [mp length] header payload. */
    size_t prefix = mp ? 4 : 0;
    size_t unit = prefix + HEADER_SIZE + (size_t)size;
    uint8_t *buf = malloc(CHUNK + unit);
    if (buf == NULL)
        fail("cpeer: malloc");
    size_t have = 0; /* bytes of an unfinished unit kept at the front */
    uint64_t frames = 0, t0 = 0;
    for (;;) {
        ssize_t r = read(fd, buf + have, CHUNK);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            fail("cpeer: read");
        }
        if (r == 0)
            break;
        if (t0 == 0)
            t0 = now_ns();
        size_t end = have + (size_t)r, off = 0;
        /* Check the header of every whole unit; the payload bytes are only
         * counted (their total is checked by the caller). */
        while (end - off >= unit) {
            const uint8_t *h = buf + off;
            if (mp && get_u32(h) != HEADER_SIZE + size) {
                fprintf(stderr, "cpeer: bad message length %u\n", get_u32(h));
                return 3;
            }
            h += prefix;
            if (((h[0] << 8) | h[1]) != CHANNEL || get_u32(h + 2) != size) {
                fprintf(stderr, "cpeer: bad header: channel %u, length %u\n",
                        (unsigned)((h[0] << 8) | h[1]), get_u32(h + 2));
                return 3;
            }
            frames++;
            off += unit;
        }
        have = end - off;
        if (have)
            memmove(buf, buf + off, have);
    }
    uint64_t t1 = now_ns();
    free(buf);
    if (have) {
        fprintf(stderr, "cpeer: EOF inside a frame (%zu bytes left)\n", have);
        return 3;
    }
    if (frames == 0) {
        fprintf(stderr, "cpeer: the sender closed without sending\n");
        return 3;
    }
    printf("{\"frames\": %llu, \"bytes\": %llu, \"seconds\": %.9f}\n", (unsigned long long)frames,
           (unsigned long long)(frames * size), (t1 - t0) / 1e9);
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: cpeer write SIZE SECONDS ROUNDS BATCH TRICKLE PAUSE_US FD [FD ...]\n"
                    "       cpeer read evl|mp SIZE FD\n");
    return 64;
}

int main(int argc, char **argv)
{
    /* A receiver that went away is an EPIPE error here, not a silent death. */
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 9 && strcmp(argv[1], "write") == 0) {
        long size = strtol(argv[2], NULL, 10);
        double seconds = strtod(argv[3], NULL);
        long rounds = strtol(argv[4], NULL, 10);
        long batch = strtol(argv[5], NULL, 10);
        long trickle = strtol(argv[6], NULL, 10);
        long pause_us = strtol(argv[7], NULL, 10);
        if (size < 1 || size > (1L << 30) || !(seconds > 0) || rounds < 0 || batch < 1 ||
            trickle < 0 || pause_us < 0)
            return usage();
        return do_write((uint32_t)size, seconds, rounds, batch, trickle, pause_us, argc - 8,
                        argv + 8);
    }
    if (argc == 5 && strcmp(argv[1], "read") == 0) {
        int mp;
        if (strcmp(argv[2], "evl") == 0)
            mp = 0;
        else if (strcmp(argv[2], "mp") == 0)
            mp = 1;
        else
            return usage();
        long size = strtol(argv[3], NULL, 10);
        if (size < 1 || size > (1L << 30))
            return usage();
        return do_read(mp, (uint32_t)size, (int)strtol(argv[4], NULL, 10));
    }
    return usage();
}
