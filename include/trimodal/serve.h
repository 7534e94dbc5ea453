/*
 * trimodal serve: inference sessions over a model folder, the search index,
 * and the HTTP server (docs/serving.md, docs/openapi.yaml).
 *
 *   tm_session *s;
 *   tm_session_open(&s, "models/run1", NULL);             // config, weights, front-ends
 *   tm_session_input in = {.text = "a red sneaker", .text_len = 13,
 *                          .image = png, .image_len = png_len};
 *   tm_example *ex;
 *   tm_session_prepare(s, &in, &ex);                      // tokens, pixels, log-mel, mask
 *   float probs[10];
 *   tm_session_classify(s, &ex, 1, probs);                // softmax over the classes
 *   tm_example_free(ex); tm_session_free(s);
 *
 * A session loads a model folder: config.json and model.safetensors
 * (required), tokenizer.json (without it text input is refused),
 * preprocess.json (without it the default front-ends are used, with the
 * model's input shapes; tm_session_notes says so) and the class names
 * (labels.json: a JSON array of strings, or {"labels": [...]}; else the
 * "classes" of a dataset.json in the folder; else none). The front-ends
 * always produce the model's shapes: text is tokenised to the text
 * encoder's max_tokens (truncated, then padded with the model's pad id),
 * audio gives the audio encoder's n_frames; a preprocess.json whose image
 * size, channels or mel bins disagree with the model is refused.
 *
 * Graphs are made on first use at power-of-two batch sizes up to
 * max_batch; a batch of n examples runs as the binary decomposition of n
 * (20 = 16 + 4), so nothing is padded. Results are f32.
 *
 * Thread-safety: tm_session_prepare may be called from any number of
 * threads at once. tm_session_classify, _embed and _caption may be called
 * from any thread; they take the session's lock, so calls run one at a
 * time (each uses the library's thread pool). An index is read-only after
 * building or loading and may be searched from many threads. A server
 * runs its own threads; its functions may be called from any thread.
 */
#ifndef TRIMODAL_SERVE_H
#define TRIMODAL_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include "trimodal/core.h"
#include "trimodal/data.h"
#include "trimodal/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------- sessions */

/* Default caps on untrusted media (a session's params). */
#define TM_SESSION_DEFAULT_MAX_PIXELS ((size_t)1 << 24) /* 16.7 Mpx */
#define TM_SESSION_DEFAULT_MAX_AUDIO_SECONDS 600.0

typedef struct {
    int max_batch;             /* largest graph batch; 1..1024; 32 */
    tm_caption_params caption; /* decoding; tm_caption_default_params() */
    size_t max_image_pixels;   /* width * height of an input image; see above */
    double max_audio_seconds;  /* longest input sound; see above */
} tm_session_params;

tm_session_params tm_session_default_params(void);

typedef struct tm_session tm_session;

/* Opens a model folder (see the top of this file). params NULL means the
 * defaults. Fails with the model loader's errors (TM_ERR_IO, TM_ERR_FORMAT,
 * ...), TM_ERR_FORMAT for a bad tokenizer.json, preprocess.json or
 * labels.json, TM_ERR_INVALID when they disagree with the model (a
 * tokenizer with more ids than the text encoder's vocabulary, an image
 * size or mel bin count other than the model's, a class name count other
 * than the classifier's), TM_ERR_NOMEM. Every message names the file. */
tm_status tm_session_open(tm_session **out, const char *model_dir, const tm_session_params *params);
void tm_session_free(tm_session *s); /* NULL is harmless */

/* What the session decided on its own while opening (a missing
 * preprocess.json or tokenizer.json, ...), one note a line; "" when none.
 * Valid while s lives. */
const char *tm_session_notes(const tm_session *s);

tm_model_info tm_session_info(const tm_session *s);
tm_model *tm_session_model(tm_session *s);
tm_session_params tm_session_get_params(const tm_session *s);
/* The model's name (config "name", else the folder's name). */
const char *tm_session_name(const tm_session *s);

/* What the model can do. */
int tm_session_can_classify(const tm_session *s); /* a classifier */
int tm_session_can_embed(const tm_session *s);    /* contrastive heads */
int tm_session_can_caption(const tm_session *s);  /* a caption decoder */
int tm_session_has_tokenizer(const tm_session *s);

/* TM_MODALITY_* bits of the model's encoders. */
unsigned tm_session_modalities(const tm_session *s);
/* The embedding of modality bit `modality` is column tm_session_column()
 * of tm_session_embed's rows; -1 when the model has no such encoder. */
int tm_session_column(const tm_session *s, unsigned modality);

/* Class names: NULL when the folder names none (or i is out of range). */
const char *tm_session_class_name(const tm_session *s, int32_t i);

/* Raw inputs; a NULL pointer (or text NULL) leaves that modality out.
 * image and audio are encoded files (PNG, JPEG, BMP, GIF, PGM/PPM; WAV,
 * FLAC, Ogg) in memory. */
typedef struct {
    const char *text;
    size_t text_len;
    const void *image;
    size_t image_len;
    const void *audio;
    size_t audio_len;
} tm_session_input;

/* A prepared example: the model's inputs for one row of a batch. */
typedef struct tm_example tm_example;

/* Runs the front-ends on in. Fails with TM_ERR_INVALID when no input is
 * given, an input's modality is not one of the model's, or the text gives
 * no token; TM_ERR_UNSUPPORTED for text without a tokenizer; the
 * decoders' errors (TM_ERR_FORMAT, TM_ERR_UNSUPPORTED, TM_ERR_LIMIT) for
 * bad media, with a message saying which input ("image: ..."). */
tm_status tm_session_prepare(const tm_session *s, const tm_session_input *in, tm_example **out);
void tm_example_free(tm_example *e); /* NULL is harmless */
/* TM_MODALITY_* bits of the inputs the example holds. */
unsigned tm_example_present(const tm_example *e);
/* The model inputs, for inspection and tests: tokens (text_tokens),
 * pixels (C*H*W), mel (n_mels*n_frames); NULL without that encoder. */
const int32_t *tm_example_tokens(const tm_example *e);
const float *tm_example_image(const tm_example *e);
const float *tm_example_mel(const tm_example *e);

/* Class probabilities (softmax of the logits): probs (n, num_classes).
 * TM_ERR_INVALID without a classifier or for n < 1. */
tm_status tm_session_classify(tm_session *s, tm_example *const *ex, int n, float *probs);

/* L2-normalised embeddings: emb (n, n_modalities, embed_dim), modality
 * columns in the model's encoder order (tm_session_column). Rows of a
 * modality the example lacks are zero. TM_ERR_INVALID without contrastive
 * heads. */
tm_status tm_session_embed(tm_session *s, tm_example *const *ex, int n, float *emb);

typedef struct {
    char *text; /* the decoded caption (tokenizer, specials skipped);
                   NULL without a tokenizer */
    size_t text_len;
    int32_t *ids; /* generated ids after BOS, EOS excluded */
    int32_t n_ids;
    float score; /* normalised log-probability; -INFINITY without context */
} tm_caption_result;

/* Captions of n examples into out[0..n) (tm_caption_result_clear each).
 * TM_ERR_INVALID without a caption decoder. */
tm_status tm_session_caption(tm_session *s, tm_example *const *ex, int n, tm_caption_result *out);
void tm_caption_result_clear(tm_caption_result *r);

/* A 16-hex-digit fingerprint of the model's config and weights (FNV-1a),
 * stored in indexes to catch a query with another model. */
const char *tm_session_fingerprint(tm_session *s);

/* --------------------------------------------------------------- index */

/* A search index: normalised f32 embeddings of every item of a manifest,
 * per modality, with the items' ids. The file (docs/serving.md) is a
 * safetensors file written atomically: tensors "emb.<modality>" (N_m, E)
 * F32 and "item.<modality>" (N_m) I32 (the item of each row), metadata
 * "format" = "trimodal-index", "version" = "1", "model", "fingerprint",
 * "dim", "count", "modalities" and "items" (a JSON array of
 * {"id", "text", "image", "audio"} as in the manifest, text cut at 200
 * bytes). Since index types (docs/search.md) the metadata also holds
 * "type" (absent: exact), "nlist", "nprobe", "hnsw_m", "ef_search",
 * "ef_construction" (hnsw; absent in older files: 40), and
 * exact-int8 stores "emb8.<m>" I8 + "scale.<m>" F32, ivf and hnsw
 * "faiss.<m>" I8 (FAISS's serialisation) instead of "emb.<m>". */
typedef struct tm_index tm_index;

typedef void (*tm_index_progress_fn)(void *ctx, int64_t done, int64_t total);

/* How an index searches (recorded in its file as metadata "type"):
 * exact compares the query with every f32 row (the engine's GEMM);
 * exact-int8 with every row stored as int8 with a scale per row (4x
 * smaller, scores within about 1e-2); ivf (FAISS IVF-Flat: nprobe of nlist
 * k-means lists) and hnsw (FAISS HNSW-Flat graph) are approximate and need
 * a build with FAISS (tm_index_type_available). */
typedef enum {
    TM_INDEX_EXACT = 0,
    TM_INDEX_EXACT_INT8,
    TM_INDEX_IVF,
    TM_INDEX_HNSW,
    TM_INDEX_TYPE_COUNT
} tm_index_type;

const char *tm_index_type_name(tm_index_type t); /* "exact", "exact-int8", "ivf", "hnsw" */
/* TM_ERR_INVALID for a name that is none of those, listing them. */
tm_status tm_index_type_from_name(const char *name, tm_index_type *out);
/* 1 when this build can build and load indexes of type t (ivf and hnsw
 * need FAISS). */
int tm_index_type_available(tm_index_type t);

typedef struct {
    const char *split; /* rows of this split; NULL: every row */
    int skip_bad;      /* 1: a row whose media fails is left out (counted);
                          0: it fails the build, naming the line */
    tm_index_progress_fn progress;
    void *progress_ctx;
    /* The index type (docs/search.md); the settings below are 0 for their
     * defaults and ignored by the types they do not concern. */
    tm_index_type type;
    int nlist;           /* IVF lists; 0: sqrt(rows), at most rows */
    int nprobe;          /* IVF lists searched per query; 0: nlist / 8, at least 8 */
    int hnsw_m;          /* HNSW links per node; 0: 32 */
    int ef_search;       /* HNSW candidates kept while searching; 0: 64 */
    int ef_construction; /* HNSW candidates kept while building the graph,
                            1..65536; 0: 40. Larger: a better-linked graph
                            (higher recall at every ef_search), a slower
                            build (about linear in it) */
} tm_index_build_params;

tm_index_build_params tm_index_build_default_params(void);

/* Embeds every row of m (its text, image and audio, each on its own) with
 * s. Fails with TM_ERR_INVALID without contrastive heads or rows; a bad
 * row's error names the manifest line (without skip_bad). *skipped (may be
 * NULL) counts rows left out. */
tm_status tm_index_build(tm_index **out, tm_session *s, const tm_manifest *m,
                         const tm_index_build_params *params, int64_t *skipped);
/* Writes the index atomically. */
tm_status tm_index_save(const tm_index *idx, const char *path);
/* Reads an index, checking every field (TM_ERR_FORMAT naming the problem;
 * TM_ERR_IO; TM_ERR_NOMEM). */
tm_status tm_index_load(tm_index **out, const char *path);
void tm_index_free(tm_index *idx); /* NULL is harmless */

/* TM_ERR_INVALID when idx was not built with the model of s (another
 * fingerprint or embedding size), naming both. */
tm_status tm_index_check(const tm_index *idx, tm_session *s);

int64_t tm_index_count(const tm_index *idx);       /* items */
int64_t tm_index_dim(const tm_index *idx);         /* embedding size */
unsigned tm_index_modalities(const tm_index *idx); /* TM_MODALITY_* bits held */
/* Rows of one modality (0 when absent). */
int64_t tm_index_rows(const tm_index *idx, unsigned modality);
const char *tm_index_model(const tm_index *idx);
const char *tm_index_fingerprint(const tm_index *idx);
/* Item i's fields as in the manifest; NULL when absent or out of range.
 * key: "id", "text", "image", "audio". */
const char *tm_index_item(const tm_index *idx, int64_t i, const char *key);
/* The type and search settings of idx (split and progress NULL): nlist
 * and nprobe for ivf, hnsw_m, ef_search and ef_construction for hnsw, 0
 * otherwise. */
tm_index_build_params tm_index_params(const tm_index *idx);
/* Changes the search settings of an ivf (nprobe, 1..nlist) or hnsw
 * (ef_search, 1..65536) index; 0 keeps one. Call it before sharing idx
 * between threads. TM_ERR_INVALID out of range; ignored by exact types. */
tm_status tm_index_set_search(tm_index *idx, int nprobe, int ef_search);
/* An index of raw vectors (n, dim), L2-normalised by the caller, all of
 * one modality, item i with id "i": for benchmarks and tests of the index
 * types without a model. params: type and its settings (NULL: exact). */
tm_status tm_index_from_vectors(tm_index **out, const float *vectors, int64_t n, int64_t dim,
                                unsigned modality, const tm_index_build_params *params);

typedef struct {
    int64_t item;      /* the item's index */
    unsigned modality; /* TM_MODALITY_* bit of the row that matched */
    float score;       /* cosine similarity */
} tm_search_hit;

/* The k items most similar to query (dim floats, L2-normalised, as
 * tm_session_embed gives) among the rows of the modalities in `targets`
 * (TM_MODALITY_* bits; 0: every modality of the index). An item counts
 * once, with its best row. Hits are sorted by decreasing score (ties: the
 * lower item first); *n_hits <= k. exact: a dot product with every row
 * (the engine's GEMM), f32; exact-int8 the same with int8 rows; ivf and
 * hnsw: FAISS's approximate k best of each modality, then merged.
 * TM_ERR_INVALID for k < 1 or bad targets. */
tm_status tm_index_search(const tm_index *idx, const float *query, unsigned targets, int k,
                          tm_search_hit *hits, int *n_hits);

/* ------------------------------------------------------------ cascades */

/* A cascade (src/serve/cascade.c, docs/serving.md "Cascades"): cheap
 * unimodal paths of the session's model answer a classification when
 * their top class probability reaches a threshold; the full fusion model
 * answers the rest. The JSON:
 *
 *   {"stages": [{"modalities": ["text"], "threshold": 0.9},
 *               {"modalities": ["vision"], "threshold": 0.8}]}
 *
 * Each stage is a sub-model holding only the named encoders (the same
 * weights; no caption decoder or contrastive heads); its answer equals the
 * full model's for an example that has only those modalities. An example
 * goes to the first stage with one of its modalities; an unconfident
 * answer passes it on. */
typedef struct tm_cascade tm_cascade;

/* From JSON text (origin names it in messages) or a file. Fails with
 * TM_ERR_FORMAT for malformed JSON, unknown keys, modalities or a
 * threshold outside [0, 1]; TM_ERR_INVALID when the model has no
 * classifier, lacks a named encoder, a stage names every modality, or the
 * model's fusion cannot run on a subset of its encoders. s must outlive
 * the cascade. */
tm_status tm_cascade_new(tm_cascade **out, tm_session *s, const char *json, size_t len,
                         const char *origin);
tm_status tm_cascade_load(tm_cascade **out, tm_session *s, const char *path);
void tm_cascade_free(tm_cascade *c); /* NULL is harmless */

/* Stages before the full model; stage n is the full model ("full"). */
int tm_cascade_stage_count(const tm_cascade *c);
/* "text", "vision+audio", ..., "full" for i == count; NULL out of range. */
const char *tm_cascade_stage_name(const tm_cascade *c, int i);
double tm_cascade_threshold(const tm_cascade *c, int i);
tm_status tm_cascade_set_threshold(tm_cascade *c, int i, double threshold);

/* Class probabilities (n, num_classes) as tm_session_classify gives, each
 * row from the stage that answered it; stage_used (may be NULL) gets that
 * stage's index per example (count = the full model). Thread-safe: calls
 * run one at a time. */
tm_status tm_cascade_classify(tm_cascade *c, tm_example *const *ex, int n, float *probs,
                              int *stage_used);

/* -------------------------------------------------------------- server */

typedef struct {
    const char *host;         /* address to bind; "127.0.0.1" */
    int port;                 /* 0: any free port (tm_server_port tells) ; 8080 */
    const char *api_key;      /* NULL: no authentication; else every /v1/ request
                                 needs "Authorization: Bearer KEY" or "X-API-Key: KEY" */
    int max_batch;            /* examples per forward pass; the session's max_batch */
    double max_wait_ms;       /* how long the first request of a batch waits for
                                 others; 2 */
    int max_queue;            /* requests waiting for the model; more get 503; 256 */
    size_t max_body_bytes;    /* larger bodies get 413; 16 MiB */
    double timeout_ms;        /* a request not answered in time gets 504; 30000 */
    int max_connections;      /* open connections at most; 512 */
    int connection_timeout_s; /* idle connections are closed; 60 */
    int top_k;                /* classes listed by /v1/classify; 5 */
    int search_k;             /* default results of /v1/search; 10 */
    int max_search_k;         /* most results a request may ask; 1000 */
    /* Called from server threads for each request answered ("POST
     * /v1/embed 200 3.1 ms") and for notes; NULL: silent. */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
    /* NULL: /v1/classify runs the full model. Else the cascade (made on
     * the same session; it must outlive the server) answers it, and each
     * answer says which stage did ("stage"). */
    struct tm_cascade *cascade;
} tm_server_params;

tm_server_params tm_server_default_params(void);

typedef struct tm_server tm_server;

/* Starts serving session s (and idx for /v1/search; may be NULL) in
 * background threads; s and idx must outlive the server. Fails with
 * TM_ERR_INVALID for bad params (or an index of another model), TM_ERR_IO
 * when the address cannot be bound, TM_ERR_NOMEM. */
tm_status tm_server_start(tm_server **out, tm_session *s, const tm_index *idx,
                          const tm_server_params *params);
/* The port the server listens on. */
int tm_server_port(const tm_server *srv);
/* Graceful stop: stops accepting connections, answers requests that
 * arrive on open connections with 503, waits up to drain_s seconds for
 * the requests in flight to finish, then stops every thread. Returns the
 * number of requests still unfinished at the deadline (0 normally). */
int tm_server_shutdown(tm_server *srv, double drain_s);
/* Shuts down (drain 0 s if not done) and frees. NULL is harmless. */
void tm_server_free(tm_server *srv);
/* The /metrics text (Prometheus format); tm_free() it. */
char *tm_server_metrics(tm_server *srv);

#ifdef __cplusplus
}
#endif
#endif
