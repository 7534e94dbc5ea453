/* Internals of the BPE tokenizer shared by the files of src/text: the tokenizer
 * struct, a growable byte pool, hashing, UTF-8 helpers and the builder
 * that every constructor (loaders, trainer) goes through. */
#ifndef TM_TEXT_BPE_INTERNAL_H
#define TM_TEXT_BPE_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "trimodal/text.h"

/* ------------------------------------------------------------ byte pool */

typedef struct {
    char *data;
    size_t len, cap;
} tmx_pool;

/* Appends n bytes (and keeps one spare byte for a NUL); returns the offset
 * or SIZE_MAX when memory runs out. */
size_t tmx_pool_add(tmx_pool *p, const void *s, size_t n);
void tmx_pool_free(tmx_pool *p);

/* A growable int32 vector. */
typedef struct {
    int32_t *v;
    size_t n, cap;
} tmx_ivec;

int tmx_ivec_push(tmx_ivec *v, int32_t x); /* 0 on success, -1 out of memory */
int tmx_ivec_reserve(tmx_ivec *v, size_t n);
void tmx_ivec_free(tmx_ivec *v);

/* ------------------------------------------------------------ hashing */

uint64_t tmx_hash_bytes(const void *p, size_t n);

static inline uint64_t tmx_hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* ------------------------------------------------------------ UTF-8 */

/* Length of the valid UTF-8 character at s[0..n) (1..4), 0 if none:
 * overlong forms, surrogates and code points past U+10FFFF are invalid. */
int tmx_utf8_len(const uint8_t *s, size_t n);
/* Length of the longest valid UTF-8 prefix of s[0..n). */
size_t tmx_utf8_valid_prefix(const uint8_t *s, size_t n);
/* Encodes cp (< 0x110000) into out; returns the byte count. */
int tmx_utf8_put(uint32_t cp, uint8_t *out);
/* Decodes the valid character at s (length from tmx_utf8_len). */
uint32_t tmx_utf8_get(const uint8_t *s, int len);

/* GPT-2's byte <-> character table: the code point standing for byte b,
 * and the byte a code point stands for (-1 if none). */
uint32_t tmx_byte_char(uint8_t b);
int tmx_char_byte(uint32_t cp);
/* Writes the byte-level string of bytes[0..n) (UTF-8, at most 2n bytes). */
size_t tmx_bytes_to_chars(const uint8_t *bytes, size_t n, char *out);

/* Unicode lowercase of one code point as UTF-8 into out (up to 3 code
 * points: U+0130 gives "i" + U+0307); returns the byte count. */
int tmx_lower_utf8(uint32_t cp, uint8_t *out);

/* ------------------------------------------------------------ tokenizer */

enum {
    TMX_TOK_USED = 1,    /* the id has a token */
    TMX_TOK_VOCAB = 2,   /* in the model's vocabulary */
    TMX_TOK_ADDED = 4,   /* matched as a whole string in text (added_tokens) */
    TMX_TOK_SPECIAL = 8, /* skipped by skip_special, matched only with parse_special */
    TMX_TOK_EOW = 16     /* ends with the end-of-word suffix */
};

/* The GPT-2 and CLIP pre-tokenisation patterns as the files spell them;
 * src/text/pretok.c rewrites \s into Unicode White_Space for PCRE2. */
extern const char tmx_gpt2_pattern[];
extern const char tmx_clip_pattern[];

#define TMX_CACHE_SLOTS 4

/* One word -> ids cache, with the PCRE2 match data used alongside it. */
typedef struct {
    pthread_mutex_t lock;
    int ready;
    uint64_t *hash;    /* (cap) 0 = empty */
    uint32_t *entry;   /* (cap) index into key_off.. */
    uint32_t cap, count;
    tmx_pool keys;     /* key bytes */
    tmx_ivec ids;      /* ids of all entries */
    uint32_t *key_off, *key_len, *ids_off, *ids_len; /* (cap/2) per entry */
    pcre2_match_data *md;
} tmx_cache;

struct tm_tokenizer {
    int32_t n_ids; /* 1 + largest id */
    size_t cap_ids;
    tmx_pool strs;          /* vocabulary strings, NUL-terminated */
    tmx_pool bytes;         /* decoded bytes */
    uint32_t *str_off, *str_len, *byte_off, *byte_len; /* (cap_ids) */
    uint8_t *flags;                                    /* (cap_ids) */
    int32_t *str_table; /* open addressing: id or -1 */
    uint32_t str_mask;
    int32_t n_strs;

    /* merges: (a, b) -> (rank, result) */
    uint64_t *mkey; /* UINT64_MAX = empty */
    int32_t *mrank, *mres;
    uint32_t mmask;
    int32_t n_mkeys;
    tmx_ivec merge_a, merge_b; /* by rank, for saving */

    int32_t byte_id[256], byte_eow_id[256];
    int32_t special[TM_SPECIAL_COUNT];
    int bytes_complete; /* all 256 (and eow variants) present */

    /* added tokens, by first byte, longest first */
    tmx_ivec added;          /* ids */
    int32_t added_first[257]; /* CSR offsets into added_by_first */
    int32_t *added_by_first;
    int has_nonspecial_added;

    /* pre-tokenisation and normalisation */
    char *pattern;       /* NULL: the whole piece is one word */
    int keep_gaps;       /* Isolated: text between matches is kept */
    int lowercase, collapse_ws, nfc, add_prefix_space, ignore_merges;
    char *eow;           /* end-of-word suffix or NULL */
    size_t eow_len;
    char *unk_token;     /* model.unk_token as written, or NULL */
    pcre2_code *re;
    int jit;

    tmx_cache cache[TMX_CACHE_SLOTS];
};

/* Builder. A new tokenizer has the GPT-2 pattern and no tokens. */
tm_status tmx_tok_new(tm_tokenizer **out);
/* Gives id the token str (n bytes, valid UTF-8) with flags TMX_TOK_VOCAB
 * and/or TMX_TOK_ADDED, TMX_TOK_SPECIAL. A string already present under
 * another id, or an id already holding another string, is TM_ERR_FORMAT
 * ("where" starts the message). Giving the same pair again merges the
 * flags. */
tm_status tmx_tok_set(tm_tokenizer *t, int32_t id, const char *str, size_t n, int flags,
                      const char *where);
/* Appends the merge (a, b) (vocabulary strings) with the next rank. */
tm_status tmx_tok_add_merge(tm_tokenizer *t, const char *a, size_t an, const char *b, size_t bn,
                            const char *where);
/* Sets the pattern (NULL: none), copying it. */
tm_status tmx_tok_set_pattern(tm_tokenizer *t, const char *pattern);
tm_status tmx_tok_set_eow(tm_tokenizer *t, const char *suffix);
/* Computes the decoded bytes, byte tables and added-token index,
 * compiles the regex. Call once after the tokens and merges. */
tm_status tmx_tok_finish(tm_tokenizer *t, const char *where);
/* Id of a vocabulary string, -1 if none. */
int32_t tmx_tok_find(const tm_tokenizer *t, const char *s, size_t n);
/* Rebuilds the added-token index (after set_special). */
tm_status tmx_tok_index_added(tm_tokenizer *t);

/* Pre-tokenisation: calls fn for every pre-token of text[0..n) (a piece
 * without added tokens). md is match data for t->re (may be NULL when
 * t->re is NULL). fn returns 0 to go on, else a status to stop with. */
typedef tm_status (*tmx_word_fn)(void *ctx, const uint8_t *w, size_t n);
tm_status tmx_pretokenize(const tm_tokenizer *t, pcre2_match_data *md, const uint8_t *text,
                          size_t n, tmx_word_fn fn, void *ctx);
/* Compiles t->pattern into t->re (with the \s rewrite). */
tm_status tmx_compile_pattern(tm_tokenizer *t, const char *where);

/* strdup (not in C11): malloc'd copy, NULL when out of memory. */
char *tmx_strdup(const char *s);


#endif
