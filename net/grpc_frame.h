/* SPDX-License-Identifier: Apache-2.0
 *
 * grpc_frame.h — gRPC's length-prefixed messages (grpc/doc/PROTOCOL-HTTP2.md
 * "Length-Prefixed-Message"): 1 byte compressed flag, 4 bytes big-endian
 * length, then the message. A request body arrives in any number of DATA
 * frames, split anywhere; the reader reassembles messages from the chunks,
 * refusing one whose declared length is over its limit as soon as the
 * 5-byte prefix is in (before any of the body is buffered).
 *
 * Pure: no I/O. The fuzz target for the request path drives it.
 */
#ifndef HODEI_NET_GRPC_FRAME_H
#define HODEI_NET_GRPC_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GF_PREFIX_BYTES 5

enum gf_result {
	GF_NEED_MORE = 0,   /* every byte consumed, no message complete */
	GF_MESSAGE = 1,     /* *msg holds one message; call again for the rest */
	GF_E_TOO_BIG = -1,  /* the declared length is over the limit */
	GF_E_NOMEM = -2,
	GF_E_FLAG = -3,     /* a compressed-flag byte other than 0 or 1 */
};

struct gf_reader {
	uint32_t max_len;
	uint8_t prefix[GF_PREFIX_BYTES];
	uint32_t prefix_have;
	uint8_t *buf;           /* the message being filled (malloc) */
	uint32_t len, have;
	uint64_t messages;      /* completed so far */
};

struct gf_message {
	uint8_t *data;          /* malloc'd, owned by the caller (free()); NULL when len 0 */
	uint32_t len;
	bool compressed;
	uint32_t declared_len;  /* for GF_E_TOO_BIG */
};

void gf_reader_init(struct gf_reader *r, uint32_t max_len);
/* Consumes bytes from *data / *len, stopping after one complete message.
 * On an error the reader is unusable (the stream must end). */
enum gf_result gf_reader_feed(struct gf_reader *r, const uint8_t **data, size_t *len,
			      struct gf_message *msg);
/* True when a message has been started but not finished. */
bool gf_reader_partial(const struct gf_reader *r);
void gf_reader_free(struct gf_reader *r);

/* Writes the 5-byte prefix of an uncompressed message of len bytes. */
void gf_prefix(uint8_t out[GF_PREFIX_BYTES], uint32_t len);

#endif
