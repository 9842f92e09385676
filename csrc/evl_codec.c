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
