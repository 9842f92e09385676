/* bench/ceiling.c
 *
 * The physical ceiling for evloop's frame format on this machine: what plain
 * blocking C gets through an AF_UNIX SOCK_STREAM socketpair between two
 * processes, with no event loop and no interpreter. The benchmark harness
 * (bench/evlbench/ceiling.py) compiles it with `cc -O2` and runs it:
 *
 *   bench_ceiling throughput SIZE SECONDS
 *       The child writes frames of SIZE payload bytes for SECONDS, from a
 *       buffer of whole frames built once and written in big writes, then
 *       closes its end. The parent reads in big chunks, walks and checks every
 *       header (channel 1, length SIZE), counts frames and payload bytes, and
 *       times from the first byte read to EOF.
 *
 *   bench_ceiling rtt COUNT [SIZE]
 *       COUNT sequential round trips of one frame (SIZE payload bytes,
 *       default 64): the parent writes it and reads the exact echo, the child
 *       reads header then payload and writes the frame back.
 *
 * Either prints one JSON line on stdout. The socketpair keeps the kernel's
 * default buffer sizes, like every system in the benchmark.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HEADER_SIZE 6
#define CHANNEL 1
#define CHUNK (1u << 20)

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void put_header(uint8_t *p, uint32_t len)
{
    p[0] = 0;
    p[1] = CHANNEL;
    p[2] = (uint8_t)(len >> 24);
    p[3] = (uint8_t)(len >> 16);
    p[4] = (uint8_t)(len >> 8);
    p[5] = (uint8_t)len;
}

static uint16_t get_chan(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get_len(const uint8_t *p)
{
    return ((uint32_t)p[2] << 24) | ((uint32_t)p[3] << 16) | ((uint32_t)p[4] << 8) | p[5];
}

/* A fixed pseudo-random payload; its exact bytes do not matter here. */
static void fill_payload(uint8_t *p, size_t n)
{
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

static void write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Returns 1 when all n bytes were read, 0 on EOF before the first byte. EOF
 * in the middle is an error. */
static int read_all(int fd, uint8_t *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("read");
        }
        if (r == 0) {
            if (got == 0)
                return 0;
            fprintf(stderr, "bench_ceiling: EOF inside a frame\n");
            exit(3);
        }
        got += (size_t)r;
    }
    return 1;
}

static void send_frames(int fd, uint32_t size, double seconds)
{
    size_t frame = HEADER_SIZE + (size_t)size;
    size_t count = CHUNK / frame ? CHUNK / frame : 1;
    size_t len = count * frame;
    uint8_t *buf = malloc(len);
    if (buf == NULL)
        die("malloc");
    for (size_t i = 0; i < count; i++) {
        put_header(buf + i * frame, size);
        fill_payload(buf + i * frame + HEADER_SIZE, size);
    }
    uint64_t deadline = now_ns() + (uint64_t)(seconds * 1e9);
    do
        write_all(fd, buf, len);
    while (now_ns() < deadline);
    free(buf);
}

static int receive_frames(int fd, uint32_t size)
{
    uint8_t *buf = malloc(CHUNK);
    uint8_t head[HEADER_SIZE];
    size_t head_len = 0;      /* bytes of a header cut by the end of a read */
    uint64_t payload_left = 0; /* bytes of the current payload still to come */
    int in_payload = 0;
    uint64_t frames = 0, bytes = 0, t0 = 0;
    if (buf == NULL)
        die("malloc");
    for (;;) {
        ssize_t r = read(fd, buf, CHUNK);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("read");
        }
        if (r == 0)
            break;
        if (t0 == 0)
            t0 = now_ns();
        const uint8_t *p = buf, *end = buf + r;
        while (p < end) {
            if (in_payload) {
                size_t avail = (size_t)(end - p);
                size_t take = payload_left < avail ? (size_t)payload_left : avail;
                p += take;
                payload_left -= take;
                if (payload_left == 0) {
                    in_payload = 0;
                    frames++;
                    bytes += size;
                }
                continue;
            }
            const uint8_t *h;
            if (head_len == 0 && end - p >= HEADER_SIZE) {
                h = p;
                p += HEADER_SIZE;
            } else {
                while (head_len < HEADER_SIZE && p < end)
                    head[head_len++] = *p++;
                if (head_len < HEADER_SIZE)
                    break;
                head_len = 0;
                h = head;
            }
            if (get_chan(h) != CHANNEL || get_len(h) != size) {
                fprintf(stderr, "bench_ceiling: bad header: channel %u, length %u\n",
                        get_chan(h), get_len(h));
                return 3;
            }
            payload_left = size;
            in_payload = 1;
            if (size == 0) {
                in_payload = 0;
                frames++;
            }
        }
    }
    uint64_t t1 = now_ns();
    free(buf);
    if (in_payload || head_len) {
        fprintf(stderr, "bench_ceiling: EOF inside a frame\n");
        return 3;
    }
    if (frames == 0) {
        fprintf(stderr, "bench_ceiling: sender closed without sending\n");
        return 3;
    }
    printf("{\"mode\": \"throughput\", \"size\": %u, \"frames\": %llu, \"bytes\": %llu, "
           "\"seconds\": %.9f}\n",
           size, (unsigned long long)frames, (unsigned long long)bytes, (t1 - t0) / 1e9);
    return 0;
}

static void echo(int fd)
{
    uint8_t head[HEADER_SIZE];
    uint8_t *frame = NULL;
    size_t cap = 0;
    while (read_all(fd, head, HEADER_SIZE)) {
        size_t len = get_len(head);
        if (HEADER_SIZE + len > cap) {
            cap = HEADER_SIZE + len;
            frame = realloc(frame, cap);
            if (frame == NULL)
                die("realloc");
        }
        memcpy(frame, head, HEADER_SIZE);
        if (len && !read_all(fd, frame + HEADER_SIZE, len)) {
            fprintf(stderr, "bench_ceiling: EOF inside a frame\n");
            exit(3);
        }
        write_all(fd, frame, HEADER_SIZE + len);
    }
    free(frame);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int ping(int fd, long count, uint32_t size)
{
    size_t len = HEADER_SIZE + (size_t)size;
    uint8_t *request = malloc(len), *reply = malloc(len);
    uint64_t *samples = malloc(sizeof(uint64_t) * (size_t)count);
    if (request == NULL || reply == NULL || samples == NULL)
        die("malloc");
    put_header(request, size);
    fill_payload(request + HEADER_SIZE, size);
    /* The same warm-up as the Python systems: a tenth, between 1 and 1000. */
    long warmup = count / 10 < 1 ? 1 : (count / 10 > 1000 ? 1000 : count / 10);
    uint64_t start = 0;
    for (long i = 0; i < warmup + count; i++) {
        if (i == warmup)
            start = now_ns();
        uint64_t t = now_ns();
        write_all(fd, request, len);
        if (!read_all(fd, reply, len)) {
            fprintf(stderr, "bench_ceiling: echo closed early\n");
            return 3;
        }
        if (i >= warmup)
            samples[i - warmup] = now_ns() - t;
        if (memcmp(request, reply, len) != 0) {
            fprintf(stderr, "bench_ceiling: echo differs from request\n");
            return 3;
        }
    }
    uint64_t seconds_ns = now_ns() - start;
    double sum = 0;
    for (long i = 0; i < count; i++)
        sum += (double)samples[i];
    qsort(samples, (size_t)count, sizeof(uint64_t), cmp_u64);
    /* Nearest rank: the smallest sample with 99% of them at or below it. */
    long rank = (count * 99 + 99) / 100;
    printf("{\"mode\": \"rtt\", \"count\": %ld, \"seconds\": %.9f, \"mean_us\": %.3f, "
           "\"p99_us\": %.3f}\n",
           count, seconds_ns / 1e9, sum / (double)count / 1e3, samples[rank - 1] / 1e3);
    free(request);
    free(reply);
    free(samples);
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_ceiling throughput SIZE SECONDS\n"
                    "       bench_ceiling rtt COUNT [SIZE]\n");
    return 64;
}

int main(int argc, char **argv)
{
    int throughput;
    if (argc == 4 && strcmp(argv[1], "throughput") == 0)
        throughput = 1;
    else if ((argc == 3 || argc == 4) && strcmp(argv[1], "rtt") == 0)
        throughput = 0;
    else
        return usage();
    long a = strtol(argv[2], NULL, 10);
    if (a < (throughput ? 0 : 1) || a > UINT32_MAX)
        return usage();

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        die("socketpair");
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        close(sv[0]);
        if (throughput)
            send_frames(sv[1], (uint32_t)a, strtod(argv[3], NULL));
        else
            echo(sv[1]);
        close(sv[1]);
        _exit(0);
    }
    close(sv[1]);
    int rc;
    if (throughput)
        rc = receive_frames(sv[0], (uint32_t)a);
    else
        rc = ping(sv[0], a, argc == 4 ? (uint32_t)strtol(argv[3], NULL, 10) : 64);
    close(sv[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            die("waitpid");
    }
    if (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        fprintf(stderr, "bench_ceiling: child failed (status %d)\n", status);
        rc = 4;
    }
    return rc;
}
