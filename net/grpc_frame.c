// SPDX-License-Identifier: Apache-2.0
#include "net/grpc_frame.h"

#include <stdlib.h>
#include <string.h>

void gf_reader_init(struct gf_reader *r, uint32_t max_len)
{
	*r = (struct gf_reader){ .max_len = max_len };
}

void gf_reader_free(struct gf_reader *r)
{
	free(r->buf);
	r->buf = NULL;
}

bool gf_reader_partial(const struct gf_reader *r)
{
	return r->prefix_have > 0;
}

void gf_prefix(uint8_t out[GF_PREFIX_BYTES], uint32_t len)
{
	out[0] = 0;
	out[1] = (uint8_t)(len >> 24);
	out[2] = (uint8_t)(len >> 16);
	out[3] = (uint8_t)(len >> 8);
	out[4] = (uint8_t)len;
}

static void take(const uint8_t **data, size_t *len, size_t n)
{
	*data += n;
	*len -= n;
}

enum gf_result gf_reader_feed(struct gf_reader *r, const uint8_t **data, size_t *len,
			      struct gf_message *msg)
{
	if (r->prefix_have < GF_PREFIX_BYTES) {
		size_t n = GF_PREFIX_BYTES - r->prefix_have;
		if (n > *len)
			n = *len;
		memcpy(r->prefix + r->prefix_have, *data, n);
		r->prefix_have += (uint32_t)n;
		take(data, len, n);
		if (r->prefix_have < GF_PREFIX_BYTES)
			return GF_NEED_MORE;
		if (r->prefix[0] > 1)
			return GF_E_FLAG;
		r->len = (uint32_t)r->prefix[1] << 24 | (uint32_t)r->prefix[2] << 16 |
			 (uint32_t)r->prefix[3] << 8 | r->prefix[4];
		if (r->len > r->max_len) {
			msg->declared_len = r->len;
			return GF_E_TOO_BIG;
		}
		r->have = 0;
		r->buf = NULL;
		if (r->len && !(r->buf = malloc(r->len)))
			return GF_E_NOMEM;
	}
	size_t n = r->len - r->have;
	if (n > *len)
		n = *len;
	if (n) {
		memcpy(r->buf + r->have, *data, n);
		r->have += (uint32_t)n;
		take(data, len, n);
	}
	if (r->have < r->len)
		return GF_NEED_MORE;
	*msg = (struct gf_message){ .data = r->buf, .len = r->len, .compressed = r->prefix[0] == 1,
				    .declared_len = r->len };
	r->buf = NULL;
	r->prefix_have = 0;
	r->messages++;
	return GF_MESSAGE;
}
