/* csrc/evl_codec.c
 *
 * The frame codec: channel (u16 BE) | length (u32 BE) | payload.
 *
 * This file is deliberately small and dumb.  It works on (pointer, length)
 * pairs with absolute offsets, returns integers, never allocates and never
 * reads or writes outside the ranges it was handed.  Objects, exceptions and
 * memory management stay in Python (evloop/codec.py), and evloop/_pycodec.py
 * is its line-for-line twin, so any behaviour here must match it exactly.
 *
 * It is compiled twice: into the cffi extension evloop._codec (where Python.h
 * has already been included) and on its own into csrc/test_codec.c's driver.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem() is a GNU extension in glibc. */
#endif
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "evl_codec.h"

/* The header is the channel (2 bytes) followed by the length (4 bytes). */
#define EVL__HEADER_SIZE 6u

/* Reads a big-endian u16 from p; the caller has checked that 2 bytes exist. */
static uint16_t evl__get_u16(const uint8_t *p)
{
    return (uint16_t)(((uint16_t)p[0] << 8) | (uint16_t)p[1]);
}

/* Reads a big-endian u32 from p; the caller has checked that 4 bytes exist. */
static uint32_t evl__get_u32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* Writes the 6-byte header to p; the caller has checked that 6 bytes fit. */
static void evl__put_header(uint8_t *p, uint16_t chan, uint32_t len)
{
    p[0] = (uint8_t)(chan >> 8);
    p[1] = (uint8_t)chan;
    p[2] = (uint8_t)(len >> 24);
    p[3] = (uint8_t)(len >> 16);
    p[4] = (uint8_t)(len >> 8);
    p[5] = (uint8_t)len;
}

/* The checks both scans make of their buffer and limits.  A NULL buffer is
 * only acceptable when it is empty, since an empty Python buffer may
 * legitimately hand us no pointer at all; the result is a count in a long,
 * so max_frames must not overflow one. */
static int evl__scan_args_ok(const uint8_t *buf, size_t len, size_t start,
                             size_t end, uint32_t max_len, size_t max_frames)
{
    return !((buf == NULL && len != 0) || start > end || end > len ||
             max_len == 0 || max_frames > (size_t)LONG_MAX);
}

long evl_scan_frames(const uint8_t *buf, size_t len, size_t start, size_t end,
                     uint32_t max_len, uint16_t *chans, uint32_t *lens,
                     size_t *offs, size_t max_frames, size_t *pos_out,
                     int64_t *need_out)
{
    size_t pos = start;
    size_t count = 0;
    int64_t need = 0;

    if (!evl__scan_args_ok(buf, len, start, end, max_len, max_frames) ||
        pos_out == NULL || need_out == NULL ||
        (max_frames != 0 && (chans == NULL || lens == NULL || offs == NULL)))
        return -1;

    while (count < max_frames) {
        size_t avail = end - pos;
        uint32_t flen;

        if (avail == 0)
            break;
        if (avail < EVL__HEADER_SIZE) {
            need = (int64_t)EVL__HEADER_SIZE;
            break;
        }
        flen = evl__get_u32(buf + pos + 2);
        if (flen == 0 || flen > max_len) {
            need = -1;
            break;
        }
        /* Comparing against avail - 6 rather than computing 6 + flen keeps
         * this correct even where size_t is only 32 bits wide. */
        if ((uint64_t)flen > (uint64_t)(avail - EVL__HEADER_SIZE)) {
            need = (int64_t)EVL__HEADER_SIZE + (int64_t)flen;
            break;
        }
        chans[count] = evl__get_u16(buf + pos);
        lens[count] = flen;
        offs[count] = pos + EVL__HEADER_SIZE;
        pos += EVL__HEADER_SIZE + (size_t)flen;
        count++;
    }

    *pos_out = pos;
    *need_out = need;
    return (long)count;
}

long evl_scan_batch(const uint8_t *buf, size_t len, size_t start, size_t end,
                    uint32_t max_len, uint32_t large, uint16_t *chans,
                    uint32_t *starts, uint32_t *ends, size_t max_frames,
                    size_t *pos_out, int64_t *need_out, int *stop_out)
{
    size_t pos = start;
    size_t count = 0;
    int64_t need = 0;
    int stop = EVL_STOP_LIMIT;

    if (!evl__scan_args_ok(buf, len, start, end, max_len, max_frames) ||
        pos_out == NULL || need_out == NULL || stop_out == NULL ||
        (max_frames != 0 && (chans == NULL || starts == NULL || ends == NULL)))
        return -1;

    while (count < max_frames) {
        size_t avail = end - pos;
        uint32_t flen;

        if (avail < EVL__HEADER_SIZE) {
            stop = EVL_STOP_END;
            need = avail == 0 ? 0 : (int64_t)EVL__HEADER_SIZE;
            break;
        }
        flen = evl__get_u32(buf + pos + 2);
        if (flen == 0 || flen > max_len) {
            stop = EVL_STOP_BAD;
            need = -1;
            break;
        }
        if (flen >= large) {
            stop = EVL_STOP_LARGE;
            need = (int64_t)EVL__HEADER_SIZE + (int64_t)flen;
            break;
        }
        if ((uint64_t)flen > (uint64_t)(avail - EVL__HEADER_SIZE)) {
            stop = EVL_STOP_END;
            need = (int64_t)EVL__HEADER_SIZE + (int64_t)flen;
            break;
        }
        /* The frame ends at pos + 6 + flen; relative to start that must fit
         * the 32-bit offsets.  pos - start is at most UINT32_MAX here, since
         * every stored frame was checked the same way. */
        if ((uint64_t)(pos - start) + EVL__HEADER_SIZE + flen > (uint64_t)UINT32_MAX)
            break;
        chans[count] = evl__get_u16(buf + pos);
        starts[count] = (uint32_t)(pos - start) + EVL__HEADER_SIZE;
        pos += EVL__HEADER_SIZE + (size_t)flen;
        ends[count] = (uint32_t)(pos - start);
        count++;
    }

    *pos_out = pos;
    *need_out = need;
    *stop_out = stop;
    return (long)count;
}

long evl_find_delim(const uint8_t *buf, size_t len, size_t start, size_t end,
                    const uint8_t *delim, size_t dlen)
{
    const uint8_t *hit;

    if ((buf == NULL && len != 0) || start > end || end > len)
        return -2;
    if (delim == NULL || dlen == 0)
        return -2;
    if (end > (size_t)LONG_MAX)
        return -2;
    /* A delimiter longer than the range cannot occur in it; this also keeps
     * memchr() and memmem() away from a NULL buffer. */
    if (dlen > end - start)
        return -1;

    if (dlen == 1)
        hit = memchr(buf + start, delim[0], end - start);
    else
        hit = memmem(buf + start, end - start, delim, dlen);
    if (hit == NULL)
        return -1;
    return (long)(hit - buf);
}

int evl_encode_header(uint8_t *dst, size_t cap, uint16_t chan, uint32_t len)
{
    if (dst == NULL || cap < EVL__HEADER_SIZE)
        return -1;
    evl__put_header(dst, chan, len);
    return (int)EVL__HEADER_SIZE;
}

int evl_decode_header(const uint8_t *buf, size_t len, size_t pos,
                      uint16_t *chan_out, uint32_t *len_out)
{
    if (buf == NULL || chan_out == NULL || len_out == NULL)
        return -1;
    if (pos > len || len - pos < EVL__HEADER_SIZE)
        return -1;
    *chan_out = evl__get_u16(buf + pos);
    *len_out = evl__get_u32(buf + pos + 2);
    return (int)EVL__HEADER_SIZE;
}

long evl_encode_frames(uint8_t *dst, size_t cap, uint16_t chan,
                       const uint8_t *src, size_t src_len,
                       const uint32_t *lens, size_t n)
{
    size_t i;
    size_t sum = 0;
    size_t total;
    size_t in = 0;
    size_t out = 0;

    if ((dst == NULL && cap != 0) || (src == NULL && src_len != 0))
        return -1;
    if (lens == NULL && n != 0)
        return -1;
    /* Everything is checked before the first byte is written, so a failed
     * call leaves dst untouched. */
    for (i = 0; i < n; i++) {
        if (lens[i] == 0 || (size_t)lens[i] > src_len - sum)
            return -1;
        sum += (size_t)lens[i];
    }
    if (sum != src_len)
        return -1;
    if (n > (SIZE_MAX - src_len) / EVL__HEADER_SIZE)
        return -1;
    total = EVL__HEADER_SIZE * n + src_len;
    if (total > cap || total > (size_t)LONG_MAX)
        return -1;

    for (i = 0; i < n; i++) {
        evl__put_header(dst + out, chan, lens[i]);
        out += EVL__HEADER_SIZE;
        memcpy(dst + out, src + in, (size_t)lens[i]);
        out += (size_t)lens[i];
        in += (size_t)lens[i];
    }
    return (long)out;
}

/* RESP: a count line is at most this long, counting its '*' or '$' and its
 * CRLF ("*1048576\r\n" is 10); a longer one is garbage, not a slow client. */
#define EVL__RESP_LINE_MAX 32u
/* At most 18 digits, so a count always fits an int64_t. */
#define EVL__RESP_DIGITS_MAX 18u

/* Finds the CRLF ending the count line at buf[p], which must lie wholly in
 * buf[p:min(p + 32, end)].  Returns its offset, or end if there is none. */
static size_t evl__resp_line_end(const uint8_t *buf, size_t p, size_t end)
{
    size_t stop = end - p > EVL__RESP_LINE_MAX ? p + EVL__RESP_LINE_MAX : end;
    size_t i;

    for (i = p; i + 1 < stop; i++)
        if (buf[i] == '\r' && buf[i + 1] == '\n')
            return i;
    return end;
}

/* Parses buf[p:q] as Redis' string2ll does: an optional '-', then 1 to 18
 * digits without a leading zero ("0" itself is fine, "-0" is not).  Returns
 * 1 and stores the value, or 0 if the text is not such a number. */
static int evl__resp_count(const uint8_t *buf, size_t p, size_t q, int64_t *out)
{
    int neg = p < q && buf[p] == '-';
    int64_t v = 0;
    size_t i;

    if (neg)
        p++;
    if (q - p == 0 || q - p > EVL__RESP_DIGITS_MAX)
        return 0;
    if (buf[p] == '0' && (q - p != 1 || neg))
        return 0;
    for (i = p; i < q; i++) {
        if (buf[i] < '0' || buf[i] > '9')
            return 0;
        v = v * 10 + (int64_t)(buf[i] - '0'); /* < 10^18: no overflow */
    }
    *out = neg ? -v : v;
    return 1;
}

/* Reads the count line at buf[p], whose '*' or '$' the caller has checked.
 * Returns 1 with the count in *value and the offset past its CRLF in *next;
 * 0 if its CRLF has not arrived yet; -1 if it is longer than 32 bytes, CRLF
 * included; -2 if the count is not a plain decimal. */
static int evl__resp_header(const uint8_t *buf, size_t p, size_t end,
                            size_t *next, int64_t *value)
{
    size_t i = evl__resp_line_end(buf, p, end);

    if (i == end)
        return end - p >= EVL__RESP_LINE_MAX ? -1 : 0;
    if (!evl__resp_count(buf, p + 1, i, value))
        return -2;
    *next = i + 2;
    return 1;
}

long evl_resp_scan(const uint8_t *buf, size_t len, size_t start, size_t end,
                   uint64_t max_bulk_len, uint64_t max_multibulk_len,
                   uint64_t large, uint32_t *argcs, size_t max_cmds,
                   uint32_t *offs, uint32_t *lens, size_t max_args,
                   size_t *pos_out, int *stop_out, int *err_out,
                   size_t *at_out)
{
    size_t cmd = start; /* where the command being scanned begins */
    size_t at = start;  /* where the line or byte being checked begins */
    size_t ncmds = 0;
    size_t nargs = 0;
    int stop = EVL_RESP_END;
    int err = EVL_RESP_E_NONE;

    if ((buf == NULL && len != 0) || start > end || end > len ||
        max_cmds > (size_t)LONG_MAX || max_args > (size_t)UINT32_MAX ||
        pos_out == NULL || stop_out == NULL || err_out == NULL ||
        at_out == NULL || (max_cmds != 0 && argcs == NULL) ||
        (max_args != 0 && (offs == NULL || lens == NULL)))
        return -1;

    /* Every way out of this loop leaves stop at EVL_RESP_END (incomplete)
     * unless it says otherwise, and err set when a rule was broken. */
    for (;;) {
        size_t p = cmd;
        int64_t count;
        int64_t k;
        int r;

        if (p == end)
            break;
        if (ncmds == max_cmds) {
            stop = EVL_RESP_LIMIT;
            break;
        }
        if (buf[p] != '*') {
            stop = EVL_RESP_INLINE;
            break;
        }
        at = p;
        r = evl__resp_header(buf, p, end, &p, &count);
        if (r != 1) {
            err = r == -1   ? EVL_RESP_E_MBULK_LINE
                  : r == -2 ? EVL_RESP_E_MBULK_LEN
                            : EVL_RESP_E_NONE;
            break;
        }
        if (count <= 0) {
            cmd = p; /* An empty command: skipped, as Redis does. */
            continue;
        }
        if ((uint64_t)count > max_multibulk_len) {
            err = EVL_RESP_E_MBULK_LEN;
            break;
        }
        if ((uint64_t)count > (uint64_t)(max_args - nargs)) {
            stop = EVL_RESP_LIMIT;
            break;
        }
        for (k = 0; k < count; k++) {
            int64_t blen;
            size_t n;

            if (p == end)
                goto done;
            at = p;
            if (buf[p] != '$') {
                err = EVL_RESP_E_DOLLAR;
                goto done;
            }
            r = evl__resp_header(buf, p, end, &p, &blen);
            if (r != 1 || blen < 0 || (uint64_t)blen > max_bulk_len) {
                err = r == 0 ? EVL_RESP_E_NONE
                      : r == -1 ? EVL_RESP_E_BULK_LINE
                                : EVL_RESP_E_BULK_LEN;
                goto done;
            }
            if ((uint64_t)blen >= large) {
                stop = EVL_RESP_LARGE;
                goto done;
            }
            /* Comparing blen with what is left, rather than computing
             * p + blen + 2, cannot overflow. */
            if ((uint64_t)blen > (uint64_t)(end - p) ||
                (uint64_t)(end - p) - (uint64_t)blen < 2)
                goto done;
            n = (size_t)blen;
            if (buf[p + n] != '\r' || buf[p + n + 1] != '\n') {
                err = EVL_RESP_E_CRLF;
                at = p + n;
                goto done;
            }
            /* The offsets are 32-bit and relative to start; a command that
             * ends beyond what they express waits for the next call. */
            if ((uint64_t)(p - start) + n > (uint64_t)UINT32_MAX) {
                stop = EVL_RESP_LIMIT;
                goto done;
            }
            offs[nargs + (size_t)k] = (uint32_t)(p - start);
            lens[nargs + (size_t)k] = (uint32_t)n;
            p += n + 2;
        }
        argcs[ncmds++] = (uint32_t)count;
        nargs += (size_t)count;
        cmd = p;
    }
done:
    if (err != EVL_RESP_E_NONE)
        stop = EVL_RESP_ERROR;
    *pos_out = cmd;
    *stop_out = stop;
    *err_out = err;
    *at_out = err == EVL_RESP_E_NONE ? cmd : at;
    return (long)ncmds;
}
