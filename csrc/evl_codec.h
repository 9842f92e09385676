/* csrc/evl_codec.h
 *
 * The frame codec's C interface.  This file is both the cffi cdef (so it holds
 * declarations only: no includes, no macros) and the header evl_codec.c
 * includes after <stdint.h> and <stddef.h>.
 *
 * A frame is: channel (u16 big-endian) | length (u32 big-endian) | payload.
 * Every function takes a buffer as (pointer, length) plus absolute offsets into
 * it, never writes outside what it was given, allocates nothing, and reports
 * through its integer return value; bad arguments give -1 (or -2 where -1
 * already means "not found").
 */

/* Scans buf[start:end] for up to max_frames complete frames.  Each of chans,
 * lens and offs must hold max_frames entries.  For frame i it
 * stores the channel in chans[i], the payload length in lens[i] and the
 * absolute offset of the first payload byte in offs[i].  *pos_out receives the
 * offset just past the last frame stored (start if none).  *need_out receives
 * 0 when scanning stopped because max_frames frames were stored or nothing is
 * left, n > 0 when the bytes at *pos_out are an incomplete frame that will
 * occupy n bytes in all (6 while its header is incomplete), and -1 when the
 * header at *pos_out has a length of 0 or above max_len.  Returns the number
 * of frames stored, or -1 for bad arguments (then nothing is written). */
long evl_scan_frames(const uint8_t *buf, size_t len, size_t start, size_t end,
                     uint32_t max_len, uint16_t *chans, uint32_t *lens,
                     size_t *offs, size_t max_frames, size_t *pos_out,
                     int64_t *need_out);

/* Why evl_scan_batch() stopped where it did. */
enum evl_stop {
    EVL_STOP_END = 0,   /* no complete frame at *pos_out (see *need_out) */
    EVL_STOP_LIMIT = 1, /* max_frames frames were stored */
    EVL_STOP_LARGE = 2, /* the frame at *pos_out is a large one */
    EVL_STOP_BAD = 3    /* the header at *pos_out has a bad length */
};

/* The scan behind a Pipe's batch read.  Scans buf[start:end] for up to
 * max_frames complete frames whose payload is shorter than `large` bytes, so
 * that the reader can copy all of them out in one piece.  For frame i it
 * stores the channel in chans[i] and the offsets of its first and one past
 * its last payload byte, relative to start, in starts[i] and ends[i]; each of
 * chans, starts and ends must hold max_frames entries.  *pos_out receives the
 * absolute offset just past the last frame stored (start if none), *stop_out
 * why the scan stopped there, and *need_out:
 *   EVL_STOP_END    0 if no bytes are left, else the size in all of the
 *                   incomplete frame at *pos_out (6 while its header is cut);
 *   EVL_STOP_LIMIT  0: max_frames were stored, or the next frame would end
 *                   more than UINT32_MAX bytes after start, which the 32-bit
 *                   relative offsets cannot express;
 *   EVL_STOP_LARGE  the size in all of the frame at *pos_out, whose payload
 *                   is `large` bytes or more, whether complete or not;
 *   EVL_STOP_BAD    -1: its length is 0 or above max_len.
 * Returns the number of frames stored, or -1 for bad arguments (then
 * nothing is written). */
long evl_scan_batch(const uint8_t *buf, size_t len, size_t start, size_t end,
                    uint32_t max_len, uint32_t large, uint16_t *chans,
                    uint32_t *starts, uint32_t *ends, size_t max_frames,
                    size_t *pos_out, int64_t *need_out, int *stop_out);

/* Returns the absolute offset of the first occurrence of delim[0:dlen] that
 * lies entirely inside buf[start:end], -1 if there is none, or -2 for bad
 * arguments (including an empty delimiter). */
long evl_find_delim(const uint8_t *buf, size_t len, size_t start, size_t end,
                    const uint8_t *delim, size_t dlen);

/* Writes the 6-byte header for (chan, len) to dst[0:6].  Returns 6, or -1 if
 * cap < 6 (then nothing is written). */
int evl_encode_header(uint8_t *dst, size_t cap, uint16_t chan, uint32_t len);

/* Reads the header at buf[pos:pos+6] into *chan_out and *len_out.  Returns 6,
 * or -1 if fewer than 6 bytes are available at pos. */
int evl_decode_header(const uint8_t *buf, size_t len, size_t pos,
                      uint16_t *chan_out, uint32_t *len_out);

/* Builds n frames on one channel into dst[0:cap].  The payloads lie back to
 * back in src[0:src_len], payload i being lens[i] bytes long.  Returns the
 * number of bytes written (6 * n + src_len), or -1 if a length is 0, the
 * lengths do not add up to src_len, or dst is too small (then nothing is
 * written). */
long evl_encode_frames(uint8_t *dst, size_t cap, uint16_t chan,
                       const uint8_t *src, size_t src_len,
                       const uint32_t *lens, size_t n);

/* RESP, the Redis protocol: the scan behind evloop.resp.RespParser's fast
 * path.  A request is an array of bulk strings, "*<n>\r\n" then n times
 * "$<len>\r\n<len bytes>\r\n"; counts are plain decimals (an optional '-',
 * 1 to 18 digits, no leading zero) on a line of at most 32 bytes counting
 * its '*' or '$' and its CRLF. */

/* Why evl_resp_scan() stopped where it did. */
enum evl_resp_stop {
    EVL_RESP_END = 0,    /* nothing is left at *pos_out, or an incomplete command */
    EVL_RESP_LIMIT = 1,  /* max_cmds stored, or the next command's arguments do
                          * not fit what is left of max_args or of the 32-bit
                          * offsets */
    EVL_RESP_INLINE = 2, /* the command at *pos_out does not start with '*' */
    EVL_RESP_LARGE = 3,  /* the command at *pos_out has a bulk of `large` bytes
                          * or more (its header is valid; its body may not be
                          * here yet) */
    EVL_RESP_ERROR = 4   /* the command at *pos_out breaks a rule (*err_out) */
};

/* Which rule a command broke, for EVL_RESP_ERROR; Redis' message for each. */
enum evl_resp_error {
    EVL_RESP_E_NONE = 0,
    EVL_RESP_E_MBULK_LINE = 1, /* "too big mbulk count string" */
    EVL_RESP_E_MBULK_LEN = 2,  /* "invalid multibulk length" */
    EVL_RESP_E_DOLLAR = 3,     /* "expected '$', got '<byte at *at_out>'" */
    EVL_RESP_E_BULK_LINE = 4,  /* "too big bulk count string" */
    EVL_RESP_E_BULK_LEN = 5,   /* "invalid bulk length" */
    EVL_RESP_E_CRLF = 6        /* "expected CRLF after a bulk string" */
};

/* Scans buf[start:end] for whole multibulk commands, up to max_cmds commands
 * holding up to max_args arguments in all.  For command i it stores its
 * argument count in argcs[i]; its arguments follow those of the commands
 * before it in offs and lens, as the offset of the first byte relative to
 * start and the length.  argcs must hold max_cmds entries, offs and lens
 * max_args (at most UINT32_MAX).  An empty command ("*0", "*-1", any count
 * below 1) is skipped, as Redis skips it.  Checks are made in the order
 * Redis makes them, so an error is found at the same byte whether or not
 * the rest of its command has arrived; a bulk length must be at most
 * max_bulk_len, a count at most max_multibulk_len.  *pos_out receives the
 * absolute offset just past the last command stored or skipped (start if
 * none), *stop_out why the scan stopped there (enum evl_resp_stop),
 * *err_out the rule broken (enum evl_resp_error; EVL_RESP_E_NONE unless
 * EVL_RESP_ERROR) and *at_out the absolute offset of the offending line or
 * byte (*pos_out unless EVL_RESP_ERROR).  Returns the number of commands
 * stored, or -1 for bad arguments (then nothing is written). */
long evl_resp_scan(const uint8_t *buf, size_t len, size_t start, size_t end,
                   uint64_t max_bulk_len, uint64_t max_multibulk_len,
                   uint64_t large, uint32_t *argcs, size_t max_cmds,
                   uint32_t *offs, uint32_t *lens, size_t max_args,
                   size_t *pos_out, int *stop_out, int *err_out,
                   size_t *at_out);
