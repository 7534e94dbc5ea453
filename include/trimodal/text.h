/*
 * trimodal text: the byte-level BPE tokenizer (training, loading GPT-2,
 * CLIP and Hugging Face vocabularies, encoding, decoding, saving) and the
 * text augmentations (token masking, random deletion, synonym
 * replacement). docs/tokenizer.md describes the algorithms and formats.
 *
 * How text becomes ids. The text (any bytes; a pointer and a length, so
 * NUL bytes are ordinary bytes) is cut around the added tokens the
 * tokenizer matches (see parse_special), then each piece is split into
 * stretches of valid and invalid UTF-8. Valid stretches are normalised
 * (CLIP style: lowercased) and pre-tokenised by the tokenizer's regular
 * expression (GPT-2's by default, PCRE2 with UTF, UCP and JIT; \s means
 * Unicode's White_Space there, as in Python's `regex` and HF); each run of
 * invalid bytes is one pre-token of its own (the byte mode). Every
 * pre-token's bytes start as the 256 byte tokens and are merged by the
 * lowest merge rank first, leftmost first among equal ranks (the
 * published GPT-2 algorithm; Hugging Face's gives the same). So for a
 * byte-level tokenizer without add_prefix_space, decode(encode(s)) == s
 * for every byte string s.
 *
 * Thread-safety: once built, loaded or configured, a tm_tokenizer may be
 * used by any number of threads at once for encoding, decoding, saving
 * and queries (an internal word cache is locked, never waited on). The
 * functions that change it (tm_tokenizer_set_special) must not run while
 * other threads use it. A tm_synonyms table is read-only after loading.
 */
#ifndef TRIMODAL_TEXT_H
#define TRIMODAL_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "trimodal/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- limits */

/* The largest vocabulary (1 + the largest id) a tokenizer may have. */
#define TM_TOKENIZER_MAX_VOCAB (1 << 21)
/* The largest tokenizer.json, vocab.json, merges.txt or synonym file read. */
#define TM_TOKENIZER_MAX_FILE_BYTES ((size_t)256 << 20)
/* The deepest nesting of arrays and objects accepted in a tokenizer file. */
#define TM_TOKENIZER_MAX_JSON_DEPTH 64
/* The longest vocabulary token or added token, in bytes. */
#define TM_TOKENIZER_MAX_TOKEN_BYTES 1024
/* Default of tm_tokenizer_encode_params.max_text_bytes: 64 MiB per call. */
#define TM_TOKENIZER_DEFAULT_MAX_TEXT ((size_t)64 << 20)

/* ------------------------------------------------------------ tokenizer */

typedef struct tm_tokenizer tm_tokenizer;

/* The roles a special token can play. One token may hold several roles
 * (CLIP's <|endoftext|> is eos and pad). */
typedef enum {
    TM_SPECIAL_PAD = 0,
    TM_SPECIAL_BOS,
    TM_SPECIAL_EOS,
    TM_SPECIAL_CLS,
    TM_SPECIAL_MASK,
    TM_SPECIAL_UNK,
    TM_SPECIAL_COUNT
} tm_special_role;

/* "pad", "bos", "eos", "cls", "mask", "unk"; "?" for anything else. */
const char *tm_special_role_name(tm_special_role role);

/* How a vocab.json + merges.txt pair is read. GPT2: byte-level with the
 * GPT-2 regex. CLIP: lowercased text, CLIP's regex, "</w>" marking the
 * last symbol of each word, bos <|startoftext|>, eos and pad
 * <|endoftext|>. AUTO: CLIP when the vocabulary holds tokens ending in
 * "</w>", else GPT2. */
typedef enum { TM_BPE_AUTO = 0, TM_BPE_GPT2, TM_BPE_CLIP } tm_bpe_style;

/* Training reports progress through this callback (the library never
 * prints): stage is "count" (bytes of text read, of total) then "merge"
 * (merges made, of the most possible). Called from the training thread. */
typedef void (*tm_tokenizer_progress_fn)(void *ctx, const char *stage, int64_t done,
                                         int64_t total);

typedef struct {
    /* Final vocabulary size, counting the special tokens and the 256 byte
     * tokens (so at least 256 + the number of specials). Default 8192. */
    int32_t vocab_size;
    /* A pair seen fewer times than this is never merged (training may
     * then stop below vocab_size). Default 2. */
    int64_t min_frequency;
    /* The content of each role's token, or NULL for none. The specials
     * take ids 0, 1, ... in role order (a content given for two roles is
     * one token). Default: "<pad>", "<s>", "</s>", "<cls>", "<mask>",
     * "<unk>". */
    const char *special_tokens[TM_SPECIAL_COUNT];
    tm_tokenizer_progress_fn progress; /* NULL: no progress reports */
    void *progress_ctx;
} tm_tokenizer_train_params;

/* The defaults listed above. */
tm_tokenizer_train_params tm_tokenizer_train_default_params(void);

/* Trains a byte-level BPE tokenizer on the text files at paths (read in
 * pieces cut after a newline, so files of any size work). Words are the
 * pre-tokens of the GPT-2 regex (pre-tokens longer than 256 bytes count as
 * 256-byte pieces). Each step merges the most frequent adjacent pair,
 * weighted by word counts; ties go to the pair with the smaller (left id,
 * right id), so the result depends only on the text and the parameters.
 * Ids: the specials, then the 256 bytes ordered by their GPT-2 byte
 * character (as Hugging Face's trainer orders them), then one per merge.
 * Fails with TM_ERR_INVALID for bad parameters, TM_ERR_IO naming an
 * unreadable file, TM_ERR_NOMEM. *out is NULL on failure. */
tm_status tm_tokenizer_train_files(tm_tokenizer **out, const char *const *paths, int n_paths,
                                   const tm_tokenizer_train_params *params);

/* The same on n texts in memory (texts[i] holds lens[i] bytes). */
tm_status tm_tokenizer_train_memory(tm_tokenizer **out, const char *const *texts,
                                    const size_t *lens, int n,
                                    const tm_tokenizer_train_params *params);

/* Loads a tokenizer from path: a tokenizer.json file, or a folder holding
 * tokenizer.json or else vocab.json + merges.txt (style AUTO). */
tm_status tm_tokenizer_load(tm_tokenizer **out, const char *path);

/* Loads the BPE model of a Hugging Face tokenizer.json: model.type "BPE"
 * (vocab, merges as "a b" strings or ["a", "b"] pairs, unk_token,
 * end_of_word_suffix, ignore_merges), added_tokens, and these parts:
 * pre_tokenizer ByteLevel (add_prefix_space, use_regex), or a Sequence of
 * a Split (a regex; behavior Isolated, or Removed with invert) and a
 * ByteLevel; normalizer null, Lowercase, NFC (taken as already satisfied:
 * text is not recomposed), Replace of \s+ by " ", or a Sequence of these;
 * decoder and post_processor are not used. Special-token roles come from
 * the file's "trimodal" section when present (tm_tokenizer_save writes
 * one), else from model.unk_token and the usual names (<pad>, <s>, </s>,
 * <|endoftext|>, [CLS], <mask>, ...). Fails with TM_ERR_IO, TM_ERR_LIMIT
 * (file over TM_TOKENIZER_MAX_FILE_BYTES, nesting over
 * TM_TOKENIZER_MAX_JSON_DEPTH, a vocabulary over TM_TOKENIZER_MAX_VOCAB,
 * a token over TM_TOKENIZER_MAX_TOKEN_BYTES), TM_ERR_FORMAT (not JSON,
 * missing or mistyped fields, duplicate tokens or ids, a merge naming a
 * token not in the vocabulary, a bad regex), TM_ERR_UNSUPPORTED naming
 * the model type (WordPiece, Unigram, ...) or the part it cannot apply,
 * TM_ERR_NOMEM; every message names the file. */
tm_status tm_tokenizer_load_json(tm_tokenizer **out, const char *path);

/* The same from size bytes in memory (messages name "<memory>"). */
tm_status tm_tokenizer_load_json_memory(tm_tokenizer **out, const void *data, size_t size);

/* Loads a GPT-2 or CLIP style vocab.json (an object of token -> id) and
 * merges.txt (one "a b" pair a line, by rank; "#version" lines and empty
 * lines skipped; a trailing \r is ignored). Fails as
 * tm_tokenizer_load_json does (a merges line without exactly one space, a
 * merge of unknown tokens, or whose result is not in the vocabulary, is
 * TM_ERR_FORMAT with its line number). */
tm_status tm_tokenizer_load_vocab_merges(tm_tokenizer **out, const char *vocab_path,
                                         const char *merges_path, tm_bpe_style style);

/* The same from memory. */
tm_status tm_tokenizer_load_vocab_merges_memory(tm_tokenizer **out, const void *vocab,
                                                size_t vocab_size, const void *merges,
                                                size_t merges_size, tm_bpe_style style);

/* Writes tok as a Hugging Face tokenizer.json (model BPE, vocab, merges,
 * added_tokens, ByteLevel pre-tokenizer and decoder, plus a "trimodal"
 * section naming the special roles, which HF ignores), atomically.
 * tm_tokenizer_load_json reads it back to the same tokenizer. Fails with
 * TM_ERR_IO, TM_ERR_NOMEM. */
tm_status tm_tokenizer_save(const tm_tokenizer *tok, const char *path);

/* The same JSON in memory: *out (NUL-terminated, *len bytes without the
 * NUL) is freed with tm_free(). */
tm_status tm_tokenizer_to_json(const tm_tokenizer *tok, char **out, size_t *len);

/* Frees tok. NULL is harmless. */
void tm_tokenizer_free(tm_tokenizer *tok);

/* ---------------------------------------------------------------- queries */

/* 1 + the largest id (ids without a token are possible in loaded files). */
int32_t tm_tokenizer_vocab_size(const tm_tokenizer *tok);

/* Number of merges. */
int32_t tm_tokenizer_merge_count(const tm_tokenizer *tok);

/* GPT2 or CLIP: how the tokenizer pre-tokenises (GPT2 for any byte-level
 * tokenizer without lowercasing and end-of-word suffix). */
tm_bpe_style tm_tokenizer_style(const tm_tokenizer *tok);

/* The id of a token given as written in the vocabulary (byte-level
 * characters: "Ġthe"), or of an added token's content; -1 if none. */
int32_t tm_tokenizer_token_id(const tm_tokenizer *tok, const char *token);

/* The vocabulary string of id, NULL when out of range or unused. Valid
 * while tok lives. */
const char *tm_tokenizer_token(const tm_tokenizer *tok, int32_t id);

/* The bytes id decodes to (*len of them, not NUL-terminated), NULL when out
 * of range or unused. */
const char *tm_tokenizer_token_bytes(const tm_tokenizer *tok, int32_t id, size_t *len);

/* The id of the token holding role, -1 if none. */
int32_t tm_tokenizer_special_id(const tm_tokenizer *tok, tm_special_role role);

/* 1 when id is a special token (a role's token, or an added token marked
 * special): skipped by decode's skip_special and never masked, deleted or
 * replaced by the augmentations. */
int tm_tokenizer_is_special(const tm_tokenizer *tok, int32_t id);

/* Gives role to the token content (valid UTF-8, 1 to
 * TM_TOKENIZER_MAX_TOKEN_BYTES bytes): an existing token or added token
 * when there is one, else a new special added token with the next id.
 * content NULL removes the role. Fails with TM_ERR_INVALID, TM_ERR_LIMIT,
 * TM_ERR_NOMEM. Not thread-safe (see the top of this file). */
tm_status tm_tokenizer_set_special(tm_tokenizer *tok, tm_special_role role, const char *content);

/* --------------------------------------------------------------- encoding */

typedef struct {
    int add_bos;          /* prepend the bos token (TM_ERR_INVALID if none); default 0 */
    int add_eos;          /* append the eos token (TM_ERR_INVALID if none); default 0 */
    /* 1: the contents of special added tokens in the text become those
     * tokens (Hugging Face's default); 0: they are ordinary text (safer
     * for untrusted text). Non-special added tokens always match. Default 0. */
    int parse_special;
    /* > 0: at most this many ids in all; the text's tokens are cut from the
     * end, bos and eos kept. 0: no limit. Default 0. */
    int32_t max_length;
    /* 1: pad with the pad token up to max_length (which must be > 0;
     * TM_ERR_INVALID if there is no pad token). Default 0. */
    int pad_to_max_length;
    /* A longer text fails with TM_ERR_LIMIT. Default TM_TOKENIZER_DEFAULT_MAX_TEXT. */
    size_t max_text_bytes;
} tm_tokenizer_encode_params;

/* The defaults listed above. */
tm_tokenizer_encode_params tm_tokenizer_encode_default_params(void);

/* The result of encoding one text. */
typedef struct {
    int32_t *ids;            /* (length,) */
    int32_t *attention_mask; /* (length,) 1 for tokens, 0 for padding */
    int32_t length;          /* entries in ids and attention_mask */
    int32_t n_tokens;        /* entries with mask 1, bos and eos included */
    int32_t n_truncated;     /* text tokens dropped by max_length */
} tm_text_encoding;

/* Encodes len bytes of text (any bytes; text may be NULL when len is 0).
 * params NULL means the defaults. *out is freed with
 * tm_text_encoding_free(). Fails with TM_ERR_INVALID (bad parameters,
 * a missing bos/eos/pad token), TM_ERR_LIMIT (len over max_text_bytes),
 * TM_ERR_NOMEM; *out is NULL on failure. */
tm_status tm_tokenizer_encode(const tm_tokenizer *tok, const void *text, size_t len,
                              const tm_tokenizer_encode_params *params,
                              tm_text_encoding **out);

/* Encodes into caller buffers, for one row of a (batch, max_length)
 * tensor: params->max_length must be in 1..capacity; ids and mask (mask
 * may be NULL) receive *length entries (max_length when padding). */
tm_status tm_tokenizer_encode_into(const tm_tokenizer *tok, const void *text, size_t len,
                                   const tm_tokenizer_encode_params *params, int32_t *ids,
                                   int32_t *mask, int32_t capacity, int32_t *length);

/* Frees an encoding. NULL is harmless. */
void tm_text_encoding_free(tm_text_encoding *e);

/* Decodes n ids into the bytes they stand for: *out (NUL-terminated, *len
 * bytes without the NUL; it may hold NUL bytes) is freed with tm_free().
 * skip_special drops special tokens. CLIP style: "</w>" becomes a space
 * and the spaces at both ends are removed (as CLIP does). Fails with
 * TM_ERR_INVALID naming the position of an id out of range or unused,
 * TM_ERR_NOMEM. */
tm_status tm_tokenizer_decode(const tm_tokenizer *tok, const int32_t *ids, int64_t n,
                              int skip_special, char **out, size_t *len);

/* ----------------------------------------------------------- augmentation */

/* Token masking for masked-language-model training. Every position whose
 * id is not special is selected with probability prob; a selected
 * position is replaced by the mask token with probability mask_frac, by a
 * random non-special id with probability random_frac, else kept. Draws are
 * a pure function of (seed, stream, position) through the counter-based
 * RNG, so a batch is reproducible whatever the threads. */
typedef struct {
    float prob;           /* default 0.15 */
    float mask_frac;      /* default 1.0 (BERT: 0.8) */
    float random_frac;    /* default 0.0 (BERT: 0.1) */
    int32_t ignore_label; /* label of unselected positions; default -100 */
    uint64_t seed;        /* default 0 */
    uint64_t stream;      /* e.g. the example's index; default 0 */
} tm_token_mask_params;

/* The defaults listed above. */
tm_token_mask_params tm_token_mask_default_params(void);

/* Masks ids[0..n) in place. labels (may be NULL) receives the original id
 * at selected positions and ignore_label elsewhere. Fails with
 * TM_ERR_INVALID for probabilities outside [0, 1], mask_frac +
 * random_frac > 1, an id out of range, or mask_frac > 0 without a mask
 * token. *n_masked (may be NULL) counts selected positions. */
tm_status tm_text_mask_tokens(const tm_tokenizer *tok, int32_t *ids, int32_t *labels,
                              int64_t n, const tm_token_mask_params *params,
                              int64_t *n_masked);

/* Random deletion of tokens: copies ids[0..n) to out (room for n) leaving
 * out each non-special id with probability prob (draw i from (seed,
 * stream, i)); when that would delete every non-special id, the one with
 * the smallest draw is kept. *n_out receives the count kept. In-place
 * (out == ids) works. */
tm_status tm_text_delete_tokens(const tm_tokenizer *tok, const int32_t *ids, int64_t n,
                                float prob, uint64_t seed, uint64_t stream, int32_t *out,
                                int64_t *n_out);

/* Random deletion of words in text: words are maximal runs of
 * non-whitespace bytes (ASCII whitespace); each is deleted with
 * probability prob with the whitespace before it (after it, for the first
 * word); at least one word stays. *out (NUL-terminated, *out_len bytes) is
 * freed with tm_free(). */
tm_status tm_text_delete_words(const void *text, size_t len, float prob, uint64_t seed,
                               uint64_t stream, char **out, size_t *out_len);

/* A synonym table, loaded from a UTF-8 text file with one entry a line:
 *     word<TAB>synonym1,synonym2,...
 * Blank lines and lines starting with '#' are skipped; spaces around
 * words and synonyms are trimmed; a synonym may hold spaces ("ice cream")
 * but no comma or tab; a word may not appear twice. */
typedef struct tm_synonyms tm_synonyms;

/* Loads a table. Fails with TM_ERR_IO, TM_ERR_LIMIT (a file over
 * TM_TOKENIZER_MAX_FILE_BYTES), TM_ERR_FORMAT naming the line (no tab,
 * an empty word or synonym, invalid UTF-8, a word seen before),
 * TM_ERR_NOMEM. */
tm_status tm_synonyms_load(tm_synonyms **out, const char *path);
tm_status tm_synonyms_load_memory(tm_synonyms **out, const void *data, size_t size);
/* Frees a table. NULL is harmless. */
void tm_synonyms_free(tm_synonyms *syn);
/* Number of words with synonyms. */
int64_t tm_synonyms_count(const tm_synonyms *syn);
/* The synonyms of word (n bytes): *count of them, NULL if none. */
const char *const *tm_synonyms_lookup(const tm_synonyms *syn, const char *word, size_t n,
                                      int *count);

/* Synonym replacement: each word of text (as in tm_text_delete_words,
 * with leading and trailing ASCII punctuation kept aside) that the table
 * holds, looked up as written and else in ASCII lowercase, is replaced
 * with probability prob by one of its synonyms chosen uniformly (a
 * capitalised word gets a capitalised synonym). Draws are a pure function
 * of (seed, stream, word index). *n_replaced (may be NULL) counts them. */
tm_status tm_text_replace_synonyms(const tm_synonyms *syn, const void *text, size_t len,
                                   float prob, uint64_t seed, uint64_t stream, char **out,
                                   size_t *out_len, int64_t *n_replaced);

#ifdef __cplusplus
}
#endif
#endif
