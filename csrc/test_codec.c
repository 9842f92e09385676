/* csrc/test_codec.c
 *
 * Standalone test and fuzz driver for evl_codec.c, run by `make sanitize`
 * under AddressSanitizer + UndefinedBehaviorSanitizer and again under
 * valgrind.  It first unit-tests every public function, including boundary
 * and error cases, then feeds random buffers to them and checks each result
 * against a deliberately naive reference and against the invariants the
 * Python wrappers rely on.
 *
 * Every buffer handed to the codec is malloc()ed at exactly the size the
 * codec is told about, so a read or write one byte past it is caught by the
 * sanitizer or valgrind rather than landing in slack space.
 *
 * Usage: test_codec [iterations [seed]].  The seed is printed so that a
 * failing fuzz run can be replayed.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "evl_codec.h"

static unsigned long evl__failures = 0;

/* Records a failed check with its location; the run continues so that one
 * report shows every broken case, and main() exits non-zero at the end. */
#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            evl__failures++;                                                 \
        }                                                                    \
    } while (0)

/* Fuzz failures also print the iteration and seed, then stop the run, since
 * one broken invariant usually repeats thousands of times. */
#define FUZZ_CHECK(cond)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr,                                                  \
                    "%s:%d: fuzz check failed at iteration %lu (seed %lu): " \
                    "%s\n",                                                  \
                    __FILE__, __LINE__, fuzz_iter, fuzz_seed, #cond);        \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

static unsigned long fuzz_iter = 0;
static unsigned long fuzz_seed = 0;

/* A small xorshift64* generator, so runs are reproducible from the seed. */
static uint64_t rng_state = 88172645463325252ull;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

/* Returns a value in [0, n), or 0 when n is 0. */
static uint64_t rng_below(uint64_t n)
{
    return n == 0 ? 0 : rng_next() % n;
}

/* Copies src into a fresh allocation of exactly len bytes (at least one byte
 * is allocated so that the pointer is never NULL for an empty buffer). */
static uint8_t *exact_copy(const void *src, size_t len)
{
    uint8_t *p = malloc(len == 0 ? 1 : len);
    if (p == NULL) {
        perror("malloc");
        exit(2);
    }
    if (len != 0)
        memcpy(p, src, len);
    return p;
}

static void put_header(uint8_t *p, uint16_t chan, uint32_t len)
{
    p[0] = (uint8_t)(chan >> 8);
    p[1] = (uint8_t)chan;
    p[2] = (uint8_t)(len >> 24);
    p[3] = (uint8_t)(len >> 16);
    p[4] = (uint8_t)(len >> 8);
    p[5] = (uint8_t)len;
}

/* The result of one scan, held in fixed arrays big enough for the tests. */
struct scan {
    long n;
    uint16_t chans[64];
    uint32_t lens[64];
    size_t offs[64];
    size_t pos;
    int64_t need;
};

/* Scans data[0:len] (copied to an exact-size allocation) between start and
 * end, storing at most max_frames frames. */
static struct scan scan(const uint8_t *data, size_t len, size_t start,
                        size_t end, uint32_t max_len, size_t max_frames)
{
    struct scan s;
    uint8_t *buf = exact_copy(data, len);

    memset(&s, 0xAB, sizeof s);
    if (max_frames > 64)
        max_frames = 64;
    s.n = evl_scan_frames(buf, len, start, end, max_len, s.chans, s.lens,
                          s.offs, max_frames, &s.pos, &s.need);
    free(buf);
    return s;
}

static void test_scan_basic(void)
{
    /* Two frames, NUL and high-bit bytes in channel and payload, then three
     * bytes of a third header. */
    static const uint8_t data[] = {
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,             /* chan 0, "\0" */
        0xFF, 0xFF, 0x00, 0x00, 0x00, 0x03, 0x80, 0xFF, 0x00, /* chan 65535 */
        0x12, 0x34, 0x00,                                     /* partial */
    };
    struct scan s = scan(data, sizeof data, 0, sizeof data, 64, 10);

    CHECK(s.n == 2);
    CHECK(s.chans[0] == 0 && s.lens[0] == 1 && s.offs[0] == 6);
    CHECK(s.chans[1] == 0xFFFF && s.lens[1] == 3 && s.offs[1] == 13);
    CHECK(s.pos == 16);
    CHECK(s.need == 6);

    /* max_frames stops the scan with need 0 even though more bytes follow. */
    s = scan(data, sizeof data, 0, sizeof data, 64, 1);
    CHECK(s.n == 1 && s.pos == 7 && s.need == 0);

    /* max_frames of 0 returns nothing, pos == start, need 0. */
    s = scan(data, sizeof data, 7, sizeof data, 64, 0);
    CHECK(s.n == 0 && s.pos == 7 && s.need == 0);

    /* Starting at the second frame gives absolute offsets. */
    s = scan(data, sizeof data, 7, 16, 64, 10);
    CHECK(s.n == 1 && s.offs[0] == 13 && s.pos == 16 && s.need == 0);

    /* An empty range, at the start, middle and end of the buffer. */
    s = scan(data, sizeof data, 0, 0, 64, 10);
    CHECK(s.n == 0 && s.pos == 0 && s.need == 0);
    s = scan(data, sizeof data, 7, 7, 64, 10);
    CHECK(s.n == 0 && s.pos == 7 && s.need == 0);
    s = scan(data, sizeof data, sizeof data, sizeof data, 64, 10);
    CHECK(s.n == 0 && s.pos == sizeof data && s.need == 0);

    /* An empty buffer may even come as a NULL pointer. */
    s.n = evl_scan_frames(NULL, 0, 0, 0, 64, s.chans, s.lens, s.offs, 1,
                          &s.pos, &s.need);
    CHECK(s.n == 0 && s.pos == 0 && s.need == 0);
}

static void test_scan_cut_everywhere(void)
{
    /* One frame with a 5-byte payload, cut after every possible byte. */
    uint8_t data[11];
    size_t cut;

    put_header(data, 0x0102, 5);
    memcpy(data + 6, "\x00\x80\xFF\x00\x7F", 5);
    for (cut = 0; cut <= sizeof data; cut++) {
        struct scan s = scan(data, cut, 0, cut, 5, 4);
        if (cut == 0) {
            CHECK(s.n == 0 && s.pos == 0 && s.need == 0);
        } else if (cut < 6) {
            CHECK(s.n == 0 && s.pos == 0 && s.need == 6);
        } else if (cut < sizeof data) {
            CHECK(s.n == 0 && s.pos == 0 && s.need == 11);
        } else {
            CHECK(s.n == 1 && s.pos == 11 && s.need == 0);
            CHECK(s.chans[0] == 0x0102 && s.lens[0] == 5 && s.offs[0] == 6);
        }
    }
}

static void test_scan_lengths(void)
{
    uint8_t hdr[6];
    uint8_t two[13];
    struct scan s;

    /* A length of 0 is invalid whatever max_len is. */
    put_header(hdr, 7, 0);
    s = scan(hdr, 6, 0, 6, 0xFFFFFFFFu, 4);
    CHECK(s.n == 0 && s.pos == 0 && s.need == -1);

    /* A length of exactly max_len is fine, max_len + 1 is not. */
    put_header(hdr, 7, 100);
    s = scan(hdr, 6, 0, 6, 100, 4);
    CHECK(s.n == 0 && s.need == 106);
    s = scan(hdr, 6, 0, 6, 99, 4);
    CHECK(s.n == 0 && s.need == -1);

    /* The largest length, with the largest max_len, is merely incomplete. */
    put_header(hdr, 7, 0xFFFFFFFFu);
    s = scan(hdr, 6, 0, 6, 0xFFFFFFFFu, 4);
    CHECK(s.n == 0 && s.need == (int64_t)6 + 0xFFFFFFFFll);
    s = scan(hdr, 6, 0, 6, 0xFFFFFFFEu, 4);
    CHECK(s.need == -1);

    /* max_len of 1 accepts one-byte payloads only. */
    put_header(two, 1, 1);
    two[6] = 0xEE;
    put_header(two + 7, 2, 0);
    s = scan(two, sizeof two, 0, sizeof two, 1, 4);
    CHECK(s.n == 1 && s.pos == 7 && s.need == -1);

    /* Frames before an invalid header are still returned. */
    put_header(two + 7, 2, 2);
    s = scan(two, sizeof two, 0, sizeof two, 1, 4);
    CHECK(s.n == 1 && s.pos == 7 && s.need == -1);
}

static void test_scan_bad_args(void)
{
    uint8_t buf[8] = {0};
    uint16_t chans[1];
    uint32_t lens[1];
    size_t offs[1];
    size_t pos = 12345;
    int64_t need = 12345;

    CHECK(evl_scan_frames(buf, 8, 5, 4, 10, chans, lens, offs, 1, &pos,
                          &need) == -1);
    CHECK(evl_scan_frames(buf, 8, 0, 9, 10, chans, lens, offs, 1, &pos,
                          &need) == -1);
    CHECK(evl_scan_frames(buf, 8, 9, 9, 10, chans, lens, offs, 1, &pos,
                          &need) == -1);
    CHECK(evl_scan_frames(buf, 8, 0, 8, 0, chans, lens, offs, 1, &pos,
                          &need) == -1);
    CHECK(evl_scan_frames(NULL, 8, 0, 8, 10, chans, lens, offs, 1, &pos,
                          &need) == -1);
    CHECK(evl_scan_frames(buf, 8, 0, 8, 10, NULL, lens, offs, 1, &pos,
                          &need) == -1);
    CHECK(evl_scan_frames(buf, 8, 0, 8, 10, chans, NULL, offs, 1, &pos,
                          &need) == -1);
    CHECK(evl_scan_frames(buf, 8, 0, 8, 10, chans, lens, NULL, 1, &pos,
                          &need) == -1);
    CHECK(evl_scan_frames(buf, 8, 0, 8, 10, chans, lens, offs, 1, NULL,
                          &need) == -1);
    CHECK(evl_scan_frames(buf, 8, 0, 8, 10, chans, lens, offs, 1, &pos,
                          NULL) == -1);
    /* Rejected calls write nothing. */
    CHECK(pos == 12345 && need == 12345);
    /* With max_frames of 0 the output arrays are not needed. */
    CHECK(evl_scan_frames(buf, 8, 0, 8, 10, NULL, NULL, NULL, 0, &pos,
                          &need) == 0);
    CHECK(pos == 0 && need == 0);
}

static long find(const char *hay, size_t len, size_t start, size_t end,
                 const char *delim, size_t dlen)
{
    uint8_t *buf = exact_copy(hay, len);
    uint8_t *d = exact_copy(delim, dlen);
    long r = evl_find_delim(buf, len, start, end, d, dlen);

    free(buf);
    free(d);
    return r;
}

static void test_find_delim(void)
{
    static const char hay[] = "ab\r\ncd\0\xFF\r\n";
    size_t n = sizeof hay - 1;

    CHECK(find(hay, n, 0, n, "\r\n", 2) == 2);
    CHECK(find(hay, n, 3, n, "\r\n", 2) == 8);
    CHECK(find(hay, n, 0, n, "\n", 1) == 3);
    CHECK(find(hay, n, 0, n, "\0", 1) == 6);
    CHECK(find(hay, n, 0, n, "\0\xFF", 2) == 6);
    CHECK(find(hay, n, 0, n, "\xFF", 1) == 7);
    CHECK(find(hay, n, 0, n, "x", 1) == -1);
    /* A delimiter straddling end is not inside the range. */
    CHECK(find(hay, n, 0, 3, "\r\n", 2) == -1);
    CHECK(find(hay, n, 0, 4, "\r\n", 2) == 2);
    /* Nor one straddling start. */
    CHECK(find(hay, n, 3, 9, "\r\n", 2) == -1);
    /* Delimiters as long as, and longer than, the range. */
    CHECK(find(hay, n, 2, 4, "\r\n", 2) == 2);
    CHECK(find(hay, n, 2, 3, "\r\n", 2) == -1);
    CHECK(find(hay, n, 0, n, hay, n) == 0);
    CHECK(find(hay, n, 0, n - 1, hay, n) == -1);
    CHECK(find(hay, n, 5, 5, "c", 1) == -1);
    CHECK(find(hay, 0, 0, 0, "c", 1) == -1);
    CHECK(evl_find_delim(NULL, 0, 0, 0, (const uint8_t *)"c", 1) == -1);
    /* Bad arguments. */
    CHECK(find(hay, n, 0, n, "", 0) == -2);
    CHECK(find(hay, n, 4, 3, "c", 1) == -2);
    CHECK(find(hay, n, 0, n + 1, "c", 1) == -2);
    CHECK(evl_find_delim((const uint8_t *)hay, n, 0, n, NULL, 1) == -2);
    CHECK(evl_find_delim(NULL, 1, 0, 1, (const uint8_t *)"c", 1) == -2);
}

static void test_headers(void)
{
    uint8_t *dst = exact_copy("\x11\x11\x11\x11\x11\x11", 6);
    uint8_t *small = exact_copy("\x22\x22\x22\x22\x22", 5);
    uint16_t chan = 0;
    uint32_t len = 0;

    CHECK(evl_encode_header(dst, 6, 0xABCD, 0x01020304u) == 6);
    CHECK(memcmp(dst, "\xAB\xCD\x01\x02\x03\x04", 6) == 0);
    CHECK(evl_decode_header(dst, 6, 0, &chan, &len) == 6);
    CHECK(chan == 0xABCD && len == 0x01020304u);
    CHECK(evl_encode_header(dst, 6, 0xFFFF, 0xFFFFFFFFu) == 6);
    CHECK(memcmp(dst, "\xFF\xFF\xFF\xFF\xFF\xFF", 6) == 0);
    CHECK(evl_encode_header(dst, 6, 0, 0) == 6);
    CHECK(memcmp(dst, "\0\0\0\0\0\0", 6) == 0);
    CHECK(evl_decode_header(dst, 6, 0, &chan, &len) == 6);
    CHECK(chan == 0 && len == 0);
    /* A destination too small is left alone. */
    CHECK(evl_encode_header(small, 5, 1, 1) == -1);
    CHECK(memcmp(small, "\x22\x22\x22\x22\x22", 5) == 0);
    CHECK(evl_encode_header(NULL, 6, 1, 1) == -1);
    /* Decoding needs six bytes at pos. */
    CHECK(evl_decode_header(small, 5, 0, &chan, &len) == -1);
    CHECK(evl_decode_header(dst, 6, 1, &chan, &len) == -1);
    CHECK(evl_decode_header(dst, 6, 7, &chan, &len) == -1);
    CHECK(evl_decode_header(dst, 6, (size_t)-1, &chan, &len) == -1);
    CHECK(evl_decode_header(dst, 6, 0, NULL, &len) == -1);
    CHECK(evl_decode_header(dst, 6, 0, &chan, NULL) == -1);
    free(dst);
    free(small);
}

static void test_encode_frames(void)
{
    static const uint8_t src[] = {0x00, 0xFF, 0x80, 0x00, 0x01, 0x02};
    static const uint32_t lens[] = {1, 2, 3};
    static const uint8_t want[] = {
        0x12, 0x34, 0, 0, 0, 1, 0x00,
        0x12, 0x34, 0, 0, 0, 2, 0xFF, 0x80,
        0x12, 0x34, 0, 0, 0, 3, 0x00, 0x01, 0x02,
    };
    static const uint32_t zero_lens[] = {1, 0, 5};
    static const uint32_t short_lens[] = {1, 2, 2};
    static const uint32_t long_lens[] = {1, 2, 4};
    uint8_t *dst = exact_copy(want, sizeof want);
    struct scan s;

    memset(dst, 0x5A, sizeof want);
    CHECK(evl_encode_frames(dst, sizeof want, 0x1234, src, 6, lens, 3) ==
          (long)sizeof want);
    CHECK(memcmp(dst, want, sizeof want) == 0);
    s = scan(dst, sizeof want, 0, sizeof want, 3, 64);
    CHECK(s.n == 3 && s.pos == sizeof want && s.need == 0);

    /* Every failure leaves dst untouched. */
    memset(dst, 0x5A, sizeof want);
    CHECK(evl_encode_frames(dst, sizeof want - 1, 0x1234, src, 6, lens, 3) ==
          -1);
    CHECK(evl_encode_frames(dst, sizeof want, 1, src, 6, zero_lens, 3) == -1);
    CHECK(evl_encode_frames(dst, sizeof want, 1, src, 6, short_lens, 3) ==
          -1);
    CHECK(evl_encode_frames(dst, sizeof want, 1, src, 6, long_lens, 3) == -1);
    CHECK(evl_encode_frames(dst, sizeof want, 1, NULL, 6, lens, 3) == -1);
    CHECK(evl_encode_frames(dst, sizeof want, 1, src, 6, NULL, 3) == -1);
    CHECK(evl_encode_frames(NULL, sizeof want, 1, src, 6, lens, 3) == -1);
    for (size_t i = 0; i < sizeof want; i++)
        CHECK(dst[i] == 0x5A);

    /* Nothing to encode is fine, even with no buffers at all. */
    CHECK(evl_encode_frames(NULL, 0, 1, NULL, 0, NULL, 0) == 0);
    free(dst);
}

/* A deliberately naive reference scan, written from the spec. */
static struct scan ref_scan(const uint8_t *buf, size_t start, size_t end,
                            uint32_t max_len, size_t max_frames)
{
    struct scan s;
    size_t pos = start;

    s.n = 0;
    s.need = 0;
    for (;;) {
        uint64_t flen;

        if ((size_t)s.n == max_frames || pos == end)
            break;
        if (end - pos < 6) {
            s.need = 6;
            break;
        }
        flen = ((uint64_t)buf[pos + 2] << 24) | ((uint64_t)buf[pos + 3] << 16) |
               ((uint64_t)buf[pos + 4] << 8) | (uint64_t)buf[pos + 5];
        if (flen == 0 || flen > max_len) {
            s.need = -1;
            break;
        }
        if (pos + 6 + flen > end) {
            s.need = (int64_t)(6 + flen);
            break;
        }
        s.chans[s.n] = (uint16_t)((buf[pos] << 8) | buf[pos + 1]);
        s.lens[s.n] = (uint32_t)flen;
        s.offs[s.n] = pos + 6;
        s.n++;
        pos += 6 + (size_t)flen;
    }
    s.pos = pos;
    return s;
}

/* Fills buf with something scan-worthy: mostly a stream of plausible frames
 * (small lengths, occasionally 0, huge or just above max_len), sometimes pure
 * noise. */
static void fill_random(uint8_t *buf, size_t len, uint32_t max_len)
{
    size_t i = 0;

    if (rng_below(8) == 0) {
        for (i = 0; i < len; i++)
            buf[i] = (uint8_t)rng_next();
        return;
    }
    while (i < len) {
        uint8_t hdr[6];
        uint32_t flen;
        uint64_t pick = rng_below(20);
        size_t k;

        if (pick == 0)
            flen = 0;
        else if (pick == 1)
            flen = 0xFFFFFFFFu;
        else if (pick == 2)
            flen = max_len;
        else if (pick == 3 && max_len < 0xFFFFFFFFu)
            flen = max_len + 1;
        else if (pick == 4)
            flen = (uint32_t)rng_next();
        else
            flen = 1 + (uint32_t)rng_below(24);
        put_header(hdr, (uint16_t)rng_next(), flen);
        for (k = 0; k < 6 && i < len; k++)
            buf[i++] = hdr[k];
        for (k = 0; k < flen && i < len; k++)
            buf[i++] = (uint8_t)rng_next();
    }
}

static uint32_t random_max_len(void)
{
    switch (rng_below(4)) {
    case 0:
        return 1 + (uint32_t)rng_below(8);
    case 1:
        return 1 + (uint32_t)rng_below(64);
    case 2:
        return 0xFFFFFFFFu - (uint32_t)rng_below(2);
    default:
        return 1 + (uint32_t)rng_below(0xFFFFFFFFu);
    }
}

static void fuzz_scan(void)
{
    size_t len = (size_t)rng_below(300);
    uint32_t max_len = random_max_len();
    size_t max_frames = (size_t)rng_below(20);
    uint8_t *buf = malloc(len == 0 ? 1 : len);
    uint16_t *chans = malloc((max_frames == 0 ? 1 : max_frames) * sizeof *chans);
    uint32_t *lens = malloc((max_frames == 0 ? 1 : max_frames) * sizeof *lens);
    size_t *offs = malloc((max_frames == 0 ? 1 : max_frames) * sizeof *offs);
    size_t start, end, pos = 0;
    int64_t need = 0;
    long n;
    struct scan ref;

    if (buf == NULL || chans == NULL || lens == NULL || offs == NULL) {
        perror("malloc");
        exit(2);
    }
    fill_random(buf, len, max_len);
    end = (size_t)rng_below(len + 1);
    start = (size_t)rng_below(end + 1);
    if (rng_below(4) == 0)
        end = len;
    if (rng_below(4) == 0)
        start = 0;

    n = evl_scan_frames(buf, len, start, end, max_len, chans, lens, offs,
                        max_frames, &pos, &need);
    FUZZ_CHECK(n >= 0 && (size_t)n <= max_frames);
    FUZZ_CHECK(start <= pos && pos <= end);
    for (long i = 0; i < n; i++) {
        size_t frame = offs[i] - 6;
        FUZZ_CHECK(offs[i] >= start + 6 && offs[i] <= end);
        FUZZ_CHECK(lens[i] >= 1 && lens[i] <= max_len);
        FUZZ_CHECK(lens[i] <= end - offs[i]);
        /* Frames are contiguous from start to pos. */
        FUZZ_CHECK(frame == (i == 0 ? start : offs[i - 1] + lens[i - 1]));
        FUZZ_CHECK(chans[i] == ((buf[frame] << 8) | buf[frame + 1]));
    }
    FUZZ_CHECK(pos == (n == 0 ? start : offs[n - 1] + lens[n - 1]));
    if (need == 0)
        FUZZ_CHECK((size_t)n == max_frames || pos == end);
    else if (need > 0)
        FUZZ_CHECK((uint64_t)need > end - pos && (size_t)n < max_frames);
    else
        FUZZ_CHECK(need == -1 && end - pos >= 6 && (size_t)n < max_frames);

    ref = ref_scan(buf, start, end, max_len, max_frames);
    FUZZ_CHECK(ref.n == n && ref.pos == pos && ref.need == need);
    for (long i = 0; i < n; i++)
        FUZZ_CHECK(ref.chans[i] == chans[i] && ref.lens[i] == lens[i] &&
                   ref.offs[i] == offs[i]);

    free(buf);
    free(chans);
    free(lens);
    free(offs);
}

static void fuzz_find_delim(void)
{
    size_t len = (size_t)rng_below(200);
    size_t dlen = 1 + (size_t)rng_below(4);
    /* A tiny alphabet makes matches and near-matches common. */
    uint8_t *buf = malloc(len == 0 ? 1 : len);
    uint8_t *delim = malloc(dlen);
    size_t start, end;
    long r, want = -1;

    if (buf == NULL || delim == NULL) {
        perror("malloc");
        exit(2);
    }
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(rng_below(3) == 0 ? 0xFF : rng_below(3));
    for (size_t i = 0; i < dlen; i++)
        delim[i] = (uint8_t)(rng_below(3) == 0 ? 0xFF : rng_below(3));
    end = (size_t)rng_below(len + 1);
    start = (size_t)rng_below(end + 1);

    r = evl_find_delim(buf, len, start, end, delim, dlen);
    for (size_t i = start; i + dlen <= end; i++) {
        if (memcmp(buf + i, delim, dlen) == 0) {
            want = (long)i;
            break;
        }
    }
    FUZZ_CHECK(r == want);
    free(buf);
    free(delim);
}

static void fuzz_encode_frames(void)
{
    size_t n = (size_t)rng_below(10);
    uint32_t lens[10];
    size_t src_len = 0, total, cap;
    uint16_t chan = (uint16_t)rng_next();
    uint8_t *src, *dst;
    long r;
    struct scan s;

    for (size_t i = 0; i < n; i++) {
        lens[i] = (uint32_t)rng_below(30) + (rng_below(10) == 0 ? 0 : 1);
        src_len += lens[i];
    }
    total = 6 * n + src_len;
    /* Sometimes hand over a destination that is too small by a little. */
    cap = total - (rng_below(4) == 0 && total > 0 ? 1 + rng_below(total) : 0);
    src = malloc(src_len == 0 ? 1 : src_len);
    dst = malloc(cap == 0 ? 1 : cap);
    if (src == NULL || dst == NULL) {
        perror("malloc");
        exit(2);
    }
    for (size_t i = 0; i < src_len; i++)
        src[i] = (uint8_t)rng_next();
    memset(dst, 0x5A, cap);

    r = evl_encode_frames(dst, cap, chan, src, src_len, lens, n);
    {
        int has_zero = 0;
        for (size_t i = 0; i < n; i++)
            has_zero |= lens[i] == 0;
        if (has_zero || cap < total) {
            FUZZ_CHECK(r == -1);
            for (size_t i = 0; i < cap; i++)
                FUZZ_CHECK(dst[i] == 0x5A);
        } else {
            size_t in = 0;
            FUZZ_CHECK(r == (long)total);
            s = scan(dst, total, 0, total, 0xFFFFFFFFu, 64);
            FUZZ_CHECK(s.n == (long)n && s.pos == total && s.need == 0);
            for (size_t i = 0; i < n; i++) {
                FUZZ_CHECK(s.chans[i] == chan && s.lens[i] == lens[i]);
                FUZZ_CHECK(memcmp(dst + s.offs[i], src + in, lens[i]) == 0);
                in += lens[i];
            }
        }
    }
    free(src);
    free(dst);
}

/* The batch scan, checked against a naive reading of its spec: frames with
 * payloads below `large`, offsets relative to start, and the stop reason. */
static void fuzz_batch(void)
{
    size_t len = (size_t)rng_below(300);
    uint32_t max_len = random_max_len();
    uint32_t large = rng_below(3) == 0 ? 0xFFFFFFFFu : (uint32_t)rng_below(30);
    size_t max_frames = (size_t)rng_below(20);
    size_t cap = max_frames == 0 ? 1 : max_frames;
    uint8_t *buf = malloc(len == 0 ? 1 : len);
    uint16_t *chans = malloc(cap * sizeof *chans);
    uint32_t *starts = malloc(cap * sizeof *starts);
    uint32_t *ends = malloc(cap * sizeof *ends);
    size_t start, end, pos = 0, p;
    int64_t need = 0, want_need = 0;
    int stop = -1, want_stop = EVL_STOP_LIMIT;
    long n, k = 0;

    if (buf == NULL || chans == NULL || starts == NULL || ends == NULL) {
        perror("malloc");
        exit(2);
    }
    fill_random(buf, len, max_len);
    end = (size_t)rng_below(len + 1);
    start = (size_t)rng_below(end + 1);
    if (rng_below(4) == 0)
        end = len;

    n = evl_scan_batch(buf, len, start, end, max_len, large, chans, starts,
                       ends, max_frames, &pos, &need, &stop);
    FUZZ_CHECK(n >= 0 && (size_t)n <= max_frames);

    for (p = start; (size_t)k < max_frames; k++) {
        uint64_t flen;

        if (end - p < 6) {
            want_stop = EVL_STOP_END;
            want_need = end == p ? 0 : 6;
            break;
        }
        flen = ((uint64_t)buf[p + 2] << 24) | ((uint64_t)buf[p + 3] << 16) |
               ((uint64_t)buf[p + 4] << 8) | (uint64_t)buf[p + 5];
        if (flen == 0 || flen > max_len) {
            want_stop = EVL_STOP_BAD;
            want_need = -1;
            break;
        }
        if (flen >= large) {
            want_stop = EVL_STOP_LARGE;
            want_need = (int64_t)(6 + flen);
            break;
        }
        if (p + 6 + flen > end) {
            want_stop = EVL_STOP_END;
            want_need = (int64_t)(6 + flen);
            break;
        }
        FUZZ_CHECK(k < n && chans[k] == ((buf[p] << 8) | buf[p + 1]));
        FUZZ_CHECK(starts[k] == p - start + 6 && ends[k] == p - start + 6 + flen);
        p += 6 + (size_t)flen;
    }
    FUZZ_CHECK(n == k && pos == p && stop == want_stop && need == want_need);

    free(buf);
    free(chans);
    free(starts);
    free(ends);
}

static void test_batch_bad_args(void)
{
    uint8_t buf[8] = {0};
    uint16_t chans[1];
    uint32_t starts[1], ends[1];
    size_t pos = 77;
    int64_t need = 77;
    int stop = 77;

    CHECK(evl_scan_batch(buf, 8, 5, 4, 10, 10, chans, starts, ends, 1, &pos,
                         &need, &stop) == -1);
    CHECK(evl_scan_batch(buf, 8, 0, 9, 10, 10, chans, starts, ends, 1, &pos,
                         &need, &stop) == -1);
    CHECK(evl_scan_batch(buf, 8, 0, 8, 0, 10, chans, starts, ends, 1, &pos,
                         &need, &stop) == -1);
    CHECK(evl_scan_batch(NULL, 8, 0, 8, 10, 10, chans, starts, ends, 1, &pos,
                         &need, &stop) == -1);
    CHECK(evl_scan_batch(buf, 8, 0, 8, 10, 10, NULL, starts, ends, 1, &pos,
                         &need, &stop) == -1);
    CHECK(evl_scan_batch(buf, 8, 0, 8, 10, 10, chans, starts, ends, 1, &pos,
                         &need, NULL) == -1);
    /* Rejected calls write nothing. */
    CHECK(pos == 77 && need == 77 && stop == 77);
    CHECK(evl_scan_batch(NULL, 0, 0, 0, 10, 10, NULL, NULL, NULL, 0, &pos,
                         &need, &stop) == 0);
    CHECK(pos == 0 && need == 0 && stop == EVL_STOP_LIMIT);
}

/* --- RESP ------------------------------------------------------------------ */

struct resp {
    long n;
    uint32_t argcs[64];
    uint32_t offs[256];
    uint32_t lens[256];
    size_t pos, at;
    int stop, err;
};

/* Scans a private exact-size copy of text[0:len] from start to end. */
static struct resp resp_scan(const char *text, size_t len, size_t start,
                             size_t end, uint64_t max_bulk, uint64_t max_mbulk,
                             uint64_t large, size_t max_cmds, size_t max_args)
{
    struct resp r;
    uint8_t *buf = exact_copy(text, len);

    memset(&r, 0, sizeof r);
    r.n = evl_resp_scan(buf, len, start, end, max_bulk, max_mbulk, large,
                        r.argcs, max_cmds, r.offs, r.lens, max_args, &r.pos,
                        &r.stop, &r.err, &r.at);
    free(buf);
    return r;
}

/* The whole of text, with Redis' default bounds and room for everything. */
static struct resp resp_all(const char *text)
{
    size_t len = strlen(text);
    return resp_scan(text, len, 0, len, 512u << 20, 1u << 20, 65536, 64, 256);
}

static int resp_error(const char *text, int err, size_t at)
{
    struct resp r = resp_all(text);
    return r.n == 0 && r.stop == EVL_RESP_ERROR && r.err == err && r.at == at &&
           r.pos == 0;
}

static void test_resp_basic(void)
{
    static const char two[] = "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPI\0G\r\n";
    size_t len = sizeof two - 1;
    struct resp r = resp_scan(two, len, 0, len, 1000, 1000, 1000, 64, 256);

    CHECK(r.n == 2 && r.argcs[0] == 2 && r.argcs[1] == 1);
    CHECK(r.offs[0] == 8 && r.lens[0] == 3 && r.offs[1] == 17 && r.lens[1] == 1);
    CHECK(r.offs[2] == 28 && r.lens[2] == 4 && memcmp(two + 28, "PI\0G", 4) == 0);
    CHECK(r.pos == len && r.stop == EVL_RESP_END && r.err == EVL_RESP_E_NONE &&
          r.at == len);

    /* Offsets are relative to start; empty commands are skipped. */
    r = resp_scan("xx*0\r\n*-1\r\n*1\r\n$0\r\n\r\n", 21, 2, 21, 9, 9, 9, 4, 4);
    CHECK(r.n == 1 && r.argcs[0] == 1 && r.offs[0] == 17 && r.lens[0] == 0);
    CHECK(r.pos == 21 && r.stop == EVL_RESP_END);
    r = resp_all("*0\r\n*-7\r\n");
    CHECK(r.n == 0 && r.pos == 9 && r.stop == EVL_RESP_END);

    /* Every prefix: the whole commands in it, stopped at the next one. */
    for (size_t cut = 0; cut <= len; cut++) {
        r = resp_scan(two, cut, 0, cut, 1000, 1000, 1000, 64, 256);
        CHECK(r.stop == EVL_RESP_END && r.err == EVL_RESP_E_NONE);
        CHECK(r.n == (cut < 20 ? 0 : cut < len ? 1 : 2));
        CHECK(r.pos == (cut < 20 ? 0 : cut < len ? 20 : len));
    }

    /* Inline, large, limits. */
    r = resp_all("*1\r\n$1\r\na\r\nPING\r\n");
    CHECK(r.n == 1 && r.pos == 11 && r.stop == EVL_RESP_INLINE);
    r = resp_scan("*1\r\n$5\r\nabcde\r\n", 15, 0, 15, 10, 10, 5, 4, 4);
    CHECK(r.n == 0 && r.pos == 0 && r.stop == EVL_RESP_LARGE);
    r = resp_scan("*1\r\n$5\r\nab", 10, 0, 10, 10, 10, 5, 4, 4);
    CHECK(r.n == 0 && r.pos == 0 && r.stop == EVL_RESP_LARGE);
    r = resp_scan("*1\r\n$5\r\nabcde\r\n", 15, 0, 15, 10, 10, 6, 4, 4);
    CHECK(r.n == 1 && r.stop == EVL_RESP_END);
    r = resp_scan("*1\r\n$1\r\na\r\n*1\r\n$1\r\nb\r\n", 22, 0, 22, 9, 9, 9, 1, 4);
    CHECK(r.n == 1 && r.pos == 11 && r.stop == EVL_RESP_LIMIT);
    r = resp_scan("*1\r\n$1\r\na\r\n*2\r\n$1\r\nb\r\n", 22, 0, 22, 9, 9, 9, 4, 2);
    CHECK(r.n == 1 && r.pos == 11 && r.stop == EVL_RESP_LIMIT);
    r = resp_scan("*1\r\n$1\r\na\r\n", 11, 0, 11, 9, 9, 9, 0, 0);
    CHECK(r.n == 0 && r.pos == 0 && r.stop == EVL_RESP_LIMIT);
    r = resp_scan("", 0, 0, 0, 9, 9, 9, 0, 0);
    CHECK(r.n == 0 && r.pos == 0 && r.stop == EVL_RESP_END);
}

static void test_resp_rules(void)
{
    struct resp r;

    CHECK(resp_error("*2\r\n$3\r\nGET\r\n:1\r\n", EVL_RESP_E_DOLLAR, 13));
    CHECK(resp_error("*2\r\n$3\r\nGET\r\n:", EVL_RESP_E_DOLLAR, 13));
    CHECK(resp_error("*x\r\n", EVL_RESP_E_MBULK_LEN, 0));
    CHECK(resp_error("*+1\r\n", EVL_RESP_E_MBULK_LEN, 0));
    CHECK(resp_error("*\r\n", EVL_RESP_E_MBULK_LEN, 0));
    CHECK(resp_error("*-\r\n", EVL_RESP_E_MBULK_LEN, 0));
    CHECK(resp_error("*-0\r\n", EVL_RESP_E_MBULK_LEN, 0));
    CHECK(resp_error("*01\r\n", EVL_RESP_E_MBULK_LEN, 0));
    CHECK(resp_error("*1 \r\n", EVL_RESP_E_MBULK_LEN, 0));
    CHECK(resp_error("*1\r\r\n", EVL_RESP_E_MBULK_LEN, 0));
    CHECK(resp_error("*2000000\r\n", EVL_RESP_E_MBULK_LEN, 0));
    CHECK(resp_error("*1\r\n$-1\r\n", EVL_RESP_E_BULK_LEN, 4));
    CHECK(resp_error("*1\r\n$01\r\nx\r\n", EVL_RESP_E_BULK_LEN, 4));
    CHECK(resp_error("*1\r\n$536870913\r\n", EVL_RESP_E_BULK_LEN, 4));
    CHECK(resp_error("*1\r\n$3\r\nabcXY", EVL_RESP_E_CRLF, 11));
    CHECK(resp_error("*1\r\n$3\r\nabc\rY", EVL_RESP_E_CRLF, 11));
    CHECK(resp_error("*1\r\n$999999999999999999\r\n", EVL_RESP_E_BULK_LEN, 4));
    CHECK(resp_error("*1\r\n$1000000000000000000\r\n", EVL_RESP_E_BULK_LEN, 4));
    CHECK(resp_error("*9223372036854775808\r\n", EVL_RESP_E_MBULK_LEN, 0));
    CHECK(resp_error("*1048577\r\n", EVL_RESP_E_MBULK_LEN, 0));
    /* The commands before an error are returned, stopped at its start. */
    r = resp_all("*1\r\n$1\r\na\r\n*1\r\n$x\r\n");
    CHECK(r.n == 1 && r.pos == 11 && r.stop == EVL_RESP_ERROR &&
          r.err == EVL_RESP_E_BULK_LEN && r.at == 15);

    /* A count line may be 32 bytes long, CRLF included, and no longer. */
    r = resp_all("*00000000000000000000000000001\r\n");
    CHECK(r.stop == EVL_RESP_ERROR && r.err == EVL_RESP_E_MBULK_LEN);
    r = resp_all("*000000000000000000000000000001\r\n");
    CHECK(r.stop == EVL_RESP_ERROR && r.err == EVL_RESP_E_MBULK_LINE && r.at == 0);
    r = resp_all("*000000000000000000000000000000");
    CHECK(r.stop == EVL_RESP_END && r.pos == 0); /* 31 bytes: may still end */
    r = resp_all("*0000000000000000000000000000000");
    CHECK(r.stop == EVL_RESP_ERROR && r.err == EVL_RESP_E_MBULK_LINE);
    r = resp_all("*1\r\n$0000000000000000000000000000000");
    CHECK(r.stop == EVL_RESP_ERROR && r.err == EVL_RESP_E_BULK_LINE && r.at == 4);
    r = resp_all("*1\r\n$000000000000000000000000000000");
    CHECK(r.stop == EVL_RESP_END);

    /* Bounds at their limits: equal passes, one more fails. */
    r = resp_scan("*2\r\n$3\r\nabc\r\n", 13, 0, 13, 3, 2, 4, 4, 4);
    CHECK(r.stop == EVL_RESP_END && r.n == 0 && r.err == EVL_RESP_E_NONE);
    r = resp_scan("*3\r\n", 4, 0, 4, 3, 2, 4, 4, 4);
    CHECK(r.stop == EVL_RESP_ERROR && r.err == EVL_RESP_E_MBULK_LEN);
    r = resp_scan("*1\r\n$4\r\n", 8, 0, 8, 3, 2, 9, 4, 4);
    CHECK(r.stop == EVL_RESP_ERROR && r.err == EVL_RESP_E_BULK_LEN);
    r = resp_scan("*1\r\n$999999999999999999\r\n", 25, 0, 25, UINT64_MAX,
                  UINT64_MAX, UINT64_MAX, 4, 4);
    CHECK(r.stop == EVL_RESP_END && r.err == EVL_RESP_E_NONE);
    r = resp_scan("*1\r\n$999999999999999999\r\n", 25, 0, 25, UINT64_MAX,
                  UINT64_MAX, 0, 4, 4);
    CHECK(r.stop == EVL_RESP_LARGE);
}

static void test_resp_bad_args(void)
{
    uint8_t buf[4] = {'*', '0', '\r', '\n'};
    uint32_t argcs[1], offs[1], lens[1];
    size_t pos = 77, at = 77;
    int stop = 77, err = 77;

    CHECK(evl_resp_scan(buf, 4, 3, 2, 9, 9, 9, argcs, 1, offs, lens, 1, &pos,
                        &stop, &err, &at) == -1);
    CHECK(evl_resp_scan(buf, 4, 0, 5, 9, 9, 9, argcs, 1, offs, lens, 1, &pos,
                        &stop, &err, &at) == -1);
    CHECK(evl_resp_scan(NULL, 4, 0, 4, 9, 9, 9, argcs, 1, offs, lens, 1, &pos,
                        &stop, &err, &at) == -1);
    CHECK(evl_resp_scan(buf, 4, 0, 4, 9, 9, 9, NULL, 1, offs, lens, 1, &pos,
                        &stop, &err, &at) == -1);
    CHECK(evl_resp_scan(buf, 4, 0, 4, 9, 9, 9, argcs, 1, offs, NULL, 1, &pos,
                        &stop, &err, &at) == -1);
    CHECK(evl_resp_scan(buf, 4, 0, 4, 9, 9, 9, argcs, 1, offs, lens,
                        (size_t)UINT32_MAX + 1, &pos, &stop, &err, &at) == -1);
    CHECK(evl_resp_scan(buf, 4, 0, 4, 9, 9, 9, argcs, 1, offs, lens, 1, &pos,
                        &stop, NULL, &at) == -1);
    CHECK(pos == 77 && stop == 77 && err == 77 && at == 77);
    CHECK(evl_resp_scan(NULL, 0, 0, 0, 9, 9, 9, NULL, 0, NULL, NULL, 0, &pos,
                        &stop, &err, &at) == 0);
    CHECK(pos == 0 && stop == EVL_RESP_END && err == EVL_RESP_E_NONE && at == 0);
}

/* Appends a random, mostly valid, RESP request to buf[*n:cap]. */
static void resp_random_command(uint8_t *buf, size_t *n, size_t cap)
{
    char tmp[48];
    size_t argc = (size_t)rng_below(5);
    int k;

    if (rng_below(8) == 0) { /* an inline command or stray bytes */
        k = snprintf(tmp, sizeof tmp, "PING\r\n");
    } else if (rng_below(10) == 0) {
        static const char *counts[] = {"0", "-1", "x", "01", "-0", "",
                                       "1048577", "99999999999999999999"};
        k = snprintf(tmp, sizeof tmp, "*%s\r\n", counts[rng_below(8)]);
    } else {
        k = snprintf(tmp, sizeof tmp, "*%zu\r\n", argc == 0 ? 1 : argc);
    }
    if ((size_t)k > cap - *n)
        return;
    memcpy(buf + *n, tmp, (size_t)k);
    *n += (size_t)k;
    for (size_t a = 0; a < argc; a++) {
        size_t blen = (size_t)rng_below(rng_below(4) == 0 ? 80 : 6);
        k = snprintf(tmp, sizeof tmp, rng_below(30) == 0 ? "$%zu\r" : "$%zu\r\n", blen);
        if ((size_t)k + blen + 2 > cap - *n)
            return;
        memcpy(buf + *n, tmp, (size_t)k);
        *n += (size_t)k;
        for (size_t i = 0; i < blen; i++)
            buf[(*n)++] = (uint8_t)rng_next();
        buf[(*n)++] = rng_below(40) == 0 ? 'X' : '\r';
        buf[(*n)++] = '\n';
    }
}

/* Random request streams, mutated and cut anywhere: the scan never reads
 * outside buf[start:end] (the buffer is allocated at exactly end bytes), every
 * argument it reports is a bulk body framed as the protocol says, and the
 * same scan of a prefix ending at *pos_out gives the same commands. */
static void fuzz_resp(void)
{
    uint8_t tmp[600];
    size_t n = 0, start, end, pos, pos2, at, at2, k = 0, nargs = 0;
    size_t max_cmds = (size_t)rng_below(20), max_args = (size_t)rng_below(40);
    uint64_t large = rng_below(3) == 0 ? UINT64_MAX : rng_below(100);
    uint64_t max_bulk = rng_below(2) ? UINT64_MAX : rng_below(100);
    uint64_t max_mbulk = rng_below(2) ? UINT64_MAX : rng_below(6);
    uint32_t argcs[20], argcs2[20], offs[40], offs2[40], lens[40], lens2[40];
    int stop, stop2, err, err2;
    uint8_t *buf;
    long r, r2;

    while (n < sizeof tmp - 100 && rng_below(6) != 0)
        resp_random_command(tmp, &n, sizeof tmp);
    if (n > 0 && rng_below(3) == 0)
        tmp[rng_below(n)] = (uint8_t)rng_next(); /* one random byte */
    end = (size_t)rng_below(n + 1);
    if (rng_below(3) == 0)
        end = n;
    start = rng_below(4) == 0 ? (size_t)rng_below(end + 1) : 0;
    buf = exact_copy(tmp, end);

    r = evl_resp_scan(buf, end, start, end, max_bulk, max_mbulk, large, argcs,
                      max_cmds, offs, lens, max_args, &pos, &stop, &err, &at);
    FUZZ_CHECK(r >= 0 && (size_t)r <= max_cmds);
    FUZZ_CHECK(start <= pos && pos <= end && stop >= 0 && stop <= EVL_RESP_ERROR);
    FUZZ_CHECK((err != EVL_RESP_E_NONE) == (stop == EVL_RESP_ERROR));
    FUZZ_CHECK(err == EVL_RESP_E_NONE ? at == pos : (at >= pos && at < end));
    FUZZ_CHECK(stop != EVL_RESP_INLINE || (pos < end && buf[pos] != '*'));
    for (long c = 0; c < r; c++) {
        FUZZ_CHECK(argcs[c] >= 1 && argcs[c] <= max_mbulk);
        for (uint32_t a = 0; a < argcs[c]; a++, k++) {
            size_t o = start + offs[k];
            FUZZ_CHECK(k < max_args && lens[k] <= max_bulk && lens[k] < large);
            FUZZ_CHECK(o >= start + 4 && o + lens[k] + 2 <= pos);
            FUZZ_CHECK(buf[o - 2] == '\r' && buf[o - 1] == '\n');
            FUZZ_CHECK(buf[o + lens[k]] == '\r' && buf[o + lens[k] + 1] == '\n');
        }
    }
    nargs = k;
    /* Scanning only up to pos finds the same commands and stops there. */
    r2 = evl_resp_scan(buf, end, start, pos, max_bulk, max_mbulk, large, argcs2,
                       max_cmds, offs2, lens2, max_args, &pos2, &stop2, &err2, &at2);
    FUZZ_CHECK(r2 == r && pos2 == pos && err2 == EVL_RESP_E_NONE);
    FUZZ_CHECK(stop2 == EVL_RESP_END || (stop2 == EVL_RESP_LIMIT && stop == EVL_RESP_LIMIT));
    FUZZ_CHECK(memcmp(argcs, argcs2, (size_t)r * sizeof *argcs) == 0);
    FUZZ_CHECK(memcmp(offs, offs2, nargs * sizeof *offs) == 0);
    FUZZ_CHECK(memcmp(lens, lens2, nargs * sizeof *lens) == 0);
    free(buf);
}

int main(int argc, char **argv)
{
    unsigned long iterations = 200000;

    if (argc > 1)
        iterations = strtoul(argv[1], NULL, 10);
    fuzz_seed = argc > 2 ? strtoul(argv[2], NULL, 10)
                         : (unsigned long)time(NULL);
    rng_state ^= (uint64_t)fuzz_seed * 0x9E3779B97F4A7C15ull;
    if (rng_state == 0)
        rng_state = 1;

    test_scan_basic();
    test_scan_cut_everywhere();
    test_scan_lengths();
    test_scan_bad_args();
    test_find_delim();
    test_headers();
    test_encode_frames();
    test_batch_bad_args();
    test_resp_basic();
    test_resp_rules();
    test_resp_bad_args();
    if (evl__failures != 0) {
        fprintf(stderr, "%lu unit check(s) failed\n", evl__failures);
        return 1;
    }
    printf("unit tests passed\n");

    for (fuzz_iter = 0; fuzz_iter < iterations; fuzz_iter++) {
        fuzz_scan();
        fuzz_batch();
        fuzz_resp();
        if (fuzz_iter % 4 == 0) {
            fuzz_find_delim();
            fuzz_encode_frames();
        }
    }
    printf("fuzzed %lu iterations (seed %lu), all invariants held\n",
           iterations, fuzz_seed);
    return 0;
}
