/*
 * trimodal eval: metrics, SVG charts, HTML reports and heat-map pictures.
 *
 * Metrics take plain C arrays and fill result structs:
 *  - retrieval from a similarity matrix (Recall@K, MRR, mAP, median rank),
 *    for any direction between modalities;
 *  - classification from logits or probabilities (accuracy, top-k,
 *    precision / recall / F1 macro and weighted, confusion matrix,
 *    expected calibration error, NLL);
 *  - generation: corpus and sentence BLEU (NLTK's definition and
 *    smoothing methods 0-3), METEOR (NLTK's formula, exact and Porter-stem
 *    stages), CIDEr-D, WER and CER with their edit counts;
 *  - signals: SNR and SI-SDR for audio, FID and KID between two sets of
 *    embeddings.
 * docs/eval.md gives every formula, its reference implementation and the
 * conventions (ties, empty inputs, NaN) in one place.
 *
 * Charts (tm_plot_*) come back as SVG strings; a report (tm_report) is one
 * self-contained HTML file with tables, charts and PNG pictures, written
 * atomically. tm_heatmap_overlay() and tm_spectrogram_heatstrip() draw
 * attention weights over a picture or a log-mel as RGB buffers.
 *
 * Errors: every function returns a tm_status (or NULL) and leaves a message
 * for tm_last_error(): TM_ERR_INVALID names the argument or the position of
 * a bad value (a size <= 0, a label out of range, a NaN score), TM_ERR_NOMEM
 * an allocation or size overflow. Outputs are left unchanged on failure
 * unless stated otherwise.
 *
 * NaN: metric inputs (scores, signals, embeddings) must be finite; a NaN or
 * infinity is TM_ERR_INVALID naming its position, so a diverged model shows
 * up as an error rather than as a plausible number. Charts skip NaN points.
 *
 * Thread-safety: every function is reentrant; the metrics use the library's
 * thread pool and give bitwise the same results for any thread count. A
 * tm_report is used by one thread at a time.
 */
#ifndef TRIMODAL_EVAL_H
#define TRIMODAL_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "trimodal/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ============================================================ retrieval */

#define TM_RETRIEVAL_MAX_K 16

/* How candidates with equal scores are ordered (the metrics need one total
 * order per query). Whatever the mode, relevant candidates tied with each
 * other give the same metrics in any order. */
typedef enum {
    /* Against the query: an irrelevant candidate tied with a relevant one
     * ranks before it. A model that scores everything alike gets the worst
     * ranks, never lucky ones. The default. */
    TM_TIES_PESSIMISTIC = 0,
    /* For the query: relevant candidates rank before tied irrelevant ones. */
    TM_TIES_OPTIMISTIC,
    /* By candidate index: the lower index ranks first (a stable sort). */
    TM_TIES_BY_INDEX
} tm_ties;

typedef struct {
    int n_k;                       /* number of cutoffs in k, 1..TM_RETRIEVAL_MAX_K */
    int64_t k[TM_RETRIEVAL_MAX_K]; /* the cutoffs, each > 0 (any K; may exceed the
                                    * candidate count, then every valid query hits) */
    tm_ties ties;
    /* 0: sim is (n_queries, n_candidates) row-major. 1: sim is
     * (n_candidates, n_queries) row-major and each query is a column, so
     * one matrix serves both directions (text->image on it, image->text on
     * its transpose) without a copy. */
    int transposed;
} tm_retrieval_params;

/* K = 1, 5, 10; pessimistic ties; not transposed. */
tm_retrieval_params tm_retrieval_default_params(void);

typedef struct {
    int64_t n_queries;     /* all queries */
    int64_t n_valid;       /* queries with at least one relevant candidate */
    int64_t n_no_relevant; /* queries without: excluded from every mean below */
    int n_k;
    int64_t k[TM_RETRIEVAL_MAX_K];
    /* Recall@K as cross-modal retrieval reports it: the fraction of valid
     * queries with at least one relevant candidate among their top K. */
    double recall_at_k[TM_RETRIEVAL_MAX_K];
    /* The fraction of a query's relevant candidates that are in its top K,
     * averaged over valid queries (equals recall_at_k when each query has
     * one relevant candidate). */
    double relevant_recall_at_k[TM_RETRIEVAL_MAX_K];
    /* Relevant candidates in the top K divided by K, averaged. */
    double precision_at_k[TM_RETRIEVAL_MAX_K];
    double mrr;         /* mean of 1 / rank of the first relevant candidate */
    double map;         /* mean average precision over the full ranking */
    double median_rank; /* of the first relevant candidate, 1-based; the mean of
                         * the two middle ranks for an even count (numpy) */
    double mean_rank;   /* of the first relevant candidate */
} tm_retrieval_result;

/* Ranks the candidates of each query by decreasing similarity and scores
 * the ranking.
 *   sim            (n_queries, n_candidates), or its transpose (params)
 *   query_ids      (n_queries) or NULL
 *   candidate_ids  (n_candidates) or NULL
 *   first_rank     NULL or (n_queries): the 1-based rank of each query's
 *                  best-ranked relevant candidate, 0 for a query with none
 * Candidate c is relevant to query q when query_ids[q] == candidate_ids[c]
 * and the id is >= 0 (a negative id matches nothing). Both NULL: query i
 * matches candidate i only (the paired, instance-level case; queries i >=
 * n_candidates have no match). Ids cover both instance-level relevance
 * (several captions of one image share the image's id) and class-level
 * relevance (pass class labels: every candidate of the query's class is
 * relevant). params NULL means the defaults.
 * Fails with TM_ERR_INVALID for sizes <= 0, exactly one NULL id array, bad
 * params, a NaN or infinite similarity (naming query and candidate), or
 * when no query has a relevant candidate; TM_ERR_NOMEM.
 * Cost: O(n_queries * n_candidates) plus a sort of each query's relevant
 * scores; parallel over queries. */
tm_status tm_retrieval_eval(const float *sim, int64_t n_queries, int64_t n_candidates,
                            const int64_t *query_ids, const int64_t *candidate_ids,
                            const tm_retrieval_params *params, tm_retrieval_result *out,
                            int64_t *first_rank);

/* ====================================================== classification */

typedef enum {
    TM_SCORES_LOGITS = 0, /* any finite values; softmax (in double) gives probabilities */
    TM_SCORES_PROBS       /* probabilities in [0, 1], used as given (not renormalised) */
} tm_score_kind;

typedef struct {
    tm_score_kind scores;
    int top_k;            /* for top_k_accuracy, >= 1 (default 5) */
    int ece_bins;         /* equal-width confidence bins, >= 1 (default 15) */
    int32_t ignore_index; /* labels equal to it are skipped (default -100) */
    /* The value of a precision or recall whose denominator is 0 (a class
     * never predicted, or absent from the labels but predicted): 0 or 1,
     * as scikit-learn's zero_division (its "warn" behaves as 0). */
    double zero_division;
} tm_classify_params;

tm_classify_params tm_classify_default_params(void);

/* Owned arrays are freed by tm_classify_result_free(). */
typedef struct {
    int64_t n;         /* examples counted */
    int64_t n_ignored; /* examples whose label was ignore_index */
    int n_classes;
    int top_k;
    double accuracy;
    double top_k_accuracy; /* NaN from tm_classify_eval_predictions() */
    /* Macro averages run over the classes that occur in the labels or in the
     * predictions (scikit-learn's default label set); weighted averages
     * weight each class by its support. */
    int n_present;
    double precision_macro, recall_macro, f1_macro;
    double precision_weighted, recall_weighted, f1_weighted;
    double ece; /* expected calibration error; NaN without scores */
    double nll; /* mean -log p(label) (p clipped to >= 1e-15); NaN without scores */
    int64_t *confusion;             /* (n_classes, n_classes): [true][predicted] */
    int64_t *support;               /* (n_classes) labels of each class */
    int64_t *predicted;             /* (n_classes) predictions of each class */
    double *precision, *recall, *f1; /* (n_classes) */
    int ece_bins;
    int64_t *bin_count;      /* (ece_bins) examples per confidence bin */
    double *bin_confidence;  /* (ece_bins) mean confidence, NaN for an empty bin */
    double *bin_accuracy;    /* (ece_bins) accuracy, NaN for an empty bin */
} tm_classify_result;

/* Classification metrics from scores and labels.
 *   scores (n, n_classes) logits or probabilities (params->scores)
 *   labels (n) in [0, n_classes) or ignore_index
 * The prediction is the highest score, the lowest class index among ties
 * (numpy's argmax); the label is in the top k when fewer than k classes
 * rank before it in that same order (scores, then index). ECE: confidence
 * = the highest probability; bin b of B holds confidences in
 * (b/B, (b+1)/B] (0 goes to bin 0); ECE = sum over bins of
 * count/n * |accuracy - mean confidence|.
 * Fails with TM_ERR_INVALID for n <= 0, n_classes < 2, a label out of
 * range (naming the example), a NaN or infinite score, a probability
 * outside [0, 1] (the scores of ignored examples are not read), no example
 * left after ignore_index, bad params; TM_ERR_NOMEM. On failure *out is
 * zeroed. */
tm_status tm_classify_eval(const float *scores, int64_t n, int n_classes, const int32_t *labels,
                           const tm_classify_params *params, tm_classify_result *out);

/* The same from predicted classes alone (no scores): accuracy, per-class
 * and averaged precision / recall / F1, confusion; top-k, ECE and NLL are
 * NaN and the bin arrays NULL. predictions in [0, n_classes). */
tm_status tm_classify_eval_predictions(const int32_t *predictions, const int32_t *labels,
                                       int64_t n, int n_classes,
                                       const tm_classify_params *params,
                                       tm_classify_result *out);

/* Frees the result's arrays and zeroes it. NULL is harmless. */
void tm_classify_result_free(tm_classify_result *r);

/* ========================================================== generation */

/* How text becomes tokens for BLEU, METEOR, CIDEr-D, WER and CER. The zero
 * value is the default: ASCII letters lowercased (other bytes, including
 * UTF-8 sequences, unchanged), split on whitespace, ASCII punctuation
 * removed and acting as a separator. */
typedef enum {
    TM_PUNCT_REMOVE = 0, /* "a cat's toy." -> a cat s toy */
    TM_PUNCT_SPLIT,      /* each punctuation mark its own token: a cat ' s toy . */
    TM_PUNCT_KEEP        /* whitespace only: a cat's toy. */
} tm_punct_mode;

typedef struct {
    int keep_case; /* 1: no lowercasing */
    tm_punct_mode punct;
} tm_text_norm;

/* The tokens of text under norm, NUL-separated in one new buffer (*tokens,
 * tm_free it; NULL when there are none) and their count. */
tm_status tm_text_tokenize(const char *text, const tm_text_norm *norm, char **tokens,
                           int64_t *n_tokens);

/* One generated text and its references. */
typedef struct {
    const char *hypothesis;
    const char *const *references;
    int n_references; /* >= 1 */
} tm_caption_sample;

/* BLEU smoothing, NLTK's SmoothingFunction (Chen and Cherry 2014), applied
 * to the corpus-level precisions. */
typedef enum {
    TM_BLEU_SMOOTH_NONE = 0, /* method0: a zero count gives p = DBL_MIN (BLEU ~ 0) */
    TM_BLEU_SMOOTH_EPSILON,  /* method1: zero counts become epsilon / total */
    TM_BLEU_SMOOTH_ADD1,     /* method2: (m + 1) / (t + 1) for n >= 2 */
    TM_BLEU_SMOOTH_NIST      /* method3: the k-th zero count becomes 1 / (2^k t) */
} tm_bleu_smoothing;

#define TM_BLEU_MAX_N 8

typedef struct {
    int max_n;                     /* 1..TM_BLEU_MAX_N (default 4) */
    double weights[TM_BLEU_MAX_N]; /* all 0: uniform 1/max_n (default) */
    tm_bleu_smoothing smoothing;
    double epsilon; /* method1's epsilon (default 0.1) */
    tm_text_norm norm;
} tm_bleu_params;

tm_bleu_params tm_bleu_default_params(void);

typedef struct {
    double bleu;
    double brevity_penalty;
    int64_t hyp_len, ref_len; /* summed; ref_len of the closest reference */
    int max_n;
    int64_t matches[TM_BLEU_MAX_N]; /* clipped n-gram matches, summed */
    int64_t totals[TM_BLEU_MAX_N];  /* hypothesis n-grams, each sentence >= 1 */
    double precisions[TM_BLEU_MAX_N]; /* after smoothing */
} tm_bleu_result;

/* Corpus BLEU exactly as NLTK 3.8's corpus_bleu: n-gram counts clipped by
 * their largest count in any one reference, numerators and denominators
 * summed over the corpus (a sentence with fewer than n words adds 1 to
 * the n-gram denominator, as NLTK does), the reference length closest to
 * each hypothesis (the shorter one on a tie), brevity penalty
 * exp(1 - r/c) when c <= r (0 when c == 0), and BLEU = 0 when no unigram
 * matches. Sentence BLEU is the same call with n = 1. */
tm_status tm_bleu(const tm_caption_sample *samples, int64_t n, const tm_bleu_params *params,
                  tm_bleu_result *out);

/* NLTK's sentence_bleu for each sample: scores (n; may be partly written
 * when the call fails). */
tm_status tm_bleu_sentences(const tm_caption_sample *samples, int64_t n,
                            const tm_bleu_params *params, double *scores);

typedef struct {
    double alpha, beta, gamma; /* default 0.9, 3, 0.5 */
    int stem;                  /* 1: the Porter-stem stage after exact matching (default) */
    tm_text_norm norm;
} tm_meteor_params;

tm_meteor_params tm_meteor_default_params(void);

/* METEOR as NLTK 3.8's meteor_score with stages exact and (optionally)
 * stem: NLTK's greedy alignment (hypothesis words from the last, each
 * taking the last unmatched equal reference word), P = m / |hyp|,
 * R = m / |ref|, Fmean = P R / (alpha P + (1 - alpha) R), penalty =
 * gamma (chunks / m)^beta, score (1 - penalty) Fmean, 0 when m = 0; the
 * best reference counts. The stemmer is Porter's original algorithm (NLTK's
 * PorterStemmer(mode=ORIGINAL_ALGORITHM)); there is no WordNet synonym
 * stage. mean is the average over samples; per_sample NULL or (n), which
 * may be partly written when the call fails. */
tm_status tm_meteor(const tm_caption_sample *samples, int64_t n, const tm_meteor_params *params,
                    double *mean, double *per_sample);

/* The Porter stem of an ASCII lowercase word into out (at least
 * strlen(word) + 1 bytes); other words are copied unchanged. */
tm_status tm_porter_stem(const char *word, char *out, size_t out_size);

typedef struct {
    int max_n;    /* default 4 */
    double sigma; /* length penalty exp(-(lh - lr)^2 / (2 sigma^2)); 0: none; default 6 */
    int clip;     /* 1: hypothesis tf-idf clipped by the reference's (default) */
    double scale; /* default 10 */
    tm_text_norm norm;
} tm_cider_params;

/* CIDEr-D: max_n 4, sigma 6, clip 1, scale 10. */
tm_cider_params tm_cider_default_params(void);

/* CIDEr-D (Vedantam et al. 2015, as in the COCO caption evaluation code):
 * for each n, tf-idf vectors g = count * (log(N) - log(max(1, df))) with
 * df the number of samples whose references contain the n-gram and N the
 * number of samples; sim_n = sum min(g_h, g_r) g_r / (|g_h| |g_r|) times
 * the length penalty; a sample's score is scale * mean over n and over its
 * references. mean over samples; per_sample NULL or (n), which may be
 * partly written when the call fails. With one sample every idf is 0 and
 * so is the score: CIDEr-D is a corpus metric. */
tm_status tm_cider(const tm_caption_sample *samples, int64_t n, const tm_cider_params *params,
                   double *mean, double *per_sample);

typedef struct {
    int64_t hits, substitutions, deletions, insertions;
    int64_t ref_len, hyp_len; /* in words (WER) or characters (CER) */
    double rate;              /* (substitutions + deletions + insertions) / ref_len */
} tm_edit_result;

/* Word error rate over a corpus: Levenshtein alignment of each pair's
 * tokens (norm NULL: the default tokenisation), counts summed, rate =
 * errors / reference words. Among the alignments of least cost the one
 * preferring match/substitution, then deletion, then insertion when
 * tracing back from the end is counted. Fails with TM_ERR_INVALID when the
 * references hold no word at all. */
tm_status tm_wer(const char *const *hypotheses, const char *const *references, int64_t n,
                 const tm_text_norm *norm, tm_edit_result *out);

/* Character error rate: the same over Unicode code points of each text
 * after tokenisation, its tokens joined by single spaces (invalid UTF-8
 * bytes count one each). */
tm_status tm_cer(const char *const *hypotheses, const char *const *references, int64_t n,
                 const tm_text_norm *norm, tm_edit_result *out);

/* ============================================================= signals */

/* 10 log10(sum ref^2 / sum (ref - est)^2) in dB; +inf when est == ref.
 * TM_ERR_INVALID when ref is all zeros. */
tm_status tm_snr(const float *ref, const float *est, int64_t n, double *snr_db);

/* Scale-invariant SDR (Le Roux et al. 2019) in dB: with zero_mean both
 * signals first lose their means; a = <est, ref> / <ref, ref>, target =
 * a ref, noise = est - target, 10 log10(|target|^2 / |noise|^2); +inf when
 * the noise is exactly zero. TM_ERR_INVALID when ref is (after the mean
 * removal) all zeros. */
tm_status tm_si_sdr(const float *ref, const float *est, int64_t n, int zero_mean,
                    double *si_sdr_db);

/* Frechet distance between Gaussians fitted to two sets of embeddings
 * (rows): |mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a C_b)^(1/2)),
 * covariances with n - 1 (numpy's np.cov). All in double precision; the
 * trace of the square root is sum sqrt(eig(C_a^(1/2) C_b C_a^(1/2))) from
 * two symmetric eigendecompositions (negative round-off eigenvalues taken
 * as 0), so singular covariances (fewer samples than dimensions) are fine.
 *   a (na, dim), b (nb, dim); na, nb >= 2. */
tm_status tm_fid(const float *a, int64_t na, const float *b, int64_t nb, int64_t dim,
                 double *fid);

/* The same from precomputed statistics: means (dim), covariances
 * (dim, dim), symmetric positive semi-definite. */
tm_status tm_fid_from_stats(const double *mu_a, const double *cov_a, const double *mu_b,
                            const double *cov_b, int64_t dim, double *fid);

/* Mean (dim) and covariance (dim, dim) of the rows of x (n, dim), n >= 2,
 * in double, for tm_fid_from_stats (reference statistics computed once). */
tm_status tm_embedding_stats(const float *x, int64_t n, int64_t dim, double *mean,
                             double *cov);

typedef struct {
    int n_subsets;       /* 0: one estimate on the whole sets (default 100) */
    int64_t subset_size; /* default 1000, clipped to the smaller set */
    uint64_t seed;       /* subsets drawn without replacement (Philox) */
} tm_kid_params;

tm_kid_params tm_kid_default_params(void);

/* Kernel inception distance (Binkowski et al. 2018): the unbiased MMD^2
 * with the kernel k(x, y) = (x.y / dim + 1)^3, averaged over random
 * subsets (std is their population standard deviation, 0 for one
 * estimate). a (na, dim), b (nb, dim); na, nb >= 2. Kernel values come from
 * the f32 GEMM, sums in double. */
tm_status tm_kid(const float *a, int64_t na, const float *b, int64_t nb, int64_t dim,
                 const tm_kid_params *params, double *mean, double *std);

/* ============================================================== charts */

/* One named curve. x NULL: 0, 1, 2, ... NaN (or, on a log axis, y <= 0)
 * points are skipped and break the line. */
typedef struct {
    const char *name;
    const double *x, *y;
    size_t n;
} tm_plot_series;

/* Zero-initialised options are valid: 640 x 400, no title or labels. */
typedef struct {
    const char *title, *xlabel, *ylabel;
    int log_y;         /* 1: logarithmic y axis */
    int width, height; /* pixels; 0: 640 x 400 (at least 160 x 120) */
    int annotate;      /* bars and heat maps: write each value (default 0) */
    const char *value_format; /* printf format of one double for values and
                               * annotations (a single %g, %f or %e
                               * conversion); NULL: "%.3g" */
} tm_plot_opts;

/* A line chart: one polyline per series, nice ticks, axis labels, title
 * and a legend (series with a NULL or empty name stay out of it). Returns
 * a NUL-terminated SVG document (tm_free it), or NULL with a message for
 * bad arguments (n_series outside 1..1000, points without y, a bad size
 * or value_format). A series may have no points. All text is XML-escaped
 * (invalid UTF-8 and control characters become U+FFFD). */
char *tm_plot_lines_svg(const tm_plot_series *series, int n_series, const tm_plot_opts *opts);

/* Grouped bars: values (n_groups, n_series), group g's bar of series s at
 * [g * n_series + s]; bars start at 0 (or, with log_y, at the axis bottom);
 * NaN leaves a bar out. Series names label the legend (series_names may be
 * NULL when n_series == 1). */
char *tm_plot_bars_svg(const char *const *group_names, int n_groups,
                       const char *const *series_names, int n_series, const double *values,
                       const tm_plot_opts *opts);

/* A heat map of values (rows, cols) with row and column labels (either may
 * be NULL: indices are shown) and a colour bar (viridis, min to max of the
 * finite values; NaN cells grey). A confusion matrix: rows true classes,
 * columns predictions. */
char *tm_plot_heatmap_svg(const double *values, int rows, int cols,
                          const char *const *row_labels, const char *const *col_labels,
                          const tm_plot_opts *opts);

/* ========================================================== HTML report */

typedef struct tm_report tm_report;

/* A new report titled title (escaped). */
tm_status tm_report_new(tm_report **out, const char *title);
void tm_report_free(tm_report *r); /* NULL is harmless */

/* A section heading (h2) and a paragraph; text is escaped. */
tm_status tm_report_section(tm_report *r, const char *heading);
tm_status tm_report_paragraph(tm_report *r, const char *text);

/* A table of text: header (n_cols) may be NULL; cells (n_rows, n_cols)
 * row-major, NULL cells empty. caption may be NULL. */
tm_status tm_report_table(tm_report *r, const char *caption, int n_cols,
                          const char *const *header, int n_rows, const char *const *cells);

/* A table of numbers: an optional first column of row labels (row_label_header
 * names it), values (n_rows, n_cols) printed with format (NULL: "%.4g"),
 * NaN as a dash. */
tm_status tm_report_table_numbers(tm_report *r, const char *caption, int n_cols,
                                  const char *const *col_headers, int n_rows,
                                  const char *row_label_header, const char *const *row_labels,
                                  const double *values, const char *format);

/* An SVG document (such as a tm_plot_* result) embedded as a base64
 * data: URI image, so nothing in it can script the page. */
tm_status tm_report_svg(tm_report *r, const char *caption, const char *svg);

/* An 8-bit picture (height, width, channels) with 1, 3 or 4 channels,
 * embedded as a PNG data: URI; scale >= 1 enlarges it on screen without
 * smoothing (CSS), for small grids. */
tm_status tm_report_image(tm_report *r, const char *caption, const uint8_t *pixels, int width,
                          int height, int channels, int scale);

/* The whole document as a new string (tm_free it); NULL on failure. */
char *tm_report_html(const tm_report *r);

/* Writes the document to path atomically (tm_write_file_atomic). */
tm_status tm_report_write(const tm_report *r, const char *path);

/* PNG bytes of an 8-bit picture in memory (tm_free *png). */
tm_status tm_png_encode(const uint8_t *pixels, int width, int height, int channels,
                        uint8_t **png, size_t *png_size);

/* ========================================================== heat maps */

typedef enum { TM_CMAP_VIRIDIS = 0, TM_CMAP_INFERNO, TM_CMAP_JET, TM_CMAP_GRAY } tm_colormap;

/* The colour of t in [0, 1] (clamped; NaN gives mid grey). */
void tm_colormap_rgb(tm_colormap cmap, double t, uint8_t rgb[3]);

typedef enum { TM_UPSAMPLE_NEAREST = 0, TM_UPSAMPLE_BILINEAR } tm_upsample;

typedef struct {
    tm_colormap cmap;     /* default viridis */
    tm_upsample upsample; /* default bilinear */
    float alpha;          /* weight of the heat colour, 0..1 (default 0.5) */
    /* Colour range: vmin == vmax (the default 0, 0) maps min..max of the
     * finite weights to 0..1 (a constant grid to the middle colour). */
    float vmin, vmax;
} tm_heatmap_opts;

tm_heatmap_opts tm_heatmap_default_opts(void);

/* Blends a colour-mapped grid over a picture:
 *   out   (height, width, 3) RGB
 *   image (height, width, channels), channels 1, 3 or 4 (alpha ignored)
 *   grid  (grid_h, grid_w) weights (attention of a query over patches),
 *         upsampled to the picture with pixel centres aligned
 *         (align_corners = false), NaN cells leave the picture as it is.
 * opts NULL: defaults. */
tm_status tm_heatmap_overlay(uint8_t *out, const uint8_t *image, int width, int height,
                             int channels, const float *grid, int grid_w, int grid_h,
                             const tm_heatmap_opts *opts);

/* A log-mel picture with a heat strip above it:
 *   out     (n_mels + strip_height, n_frames, 3) RGB: rows 0..strip_height-1
 *           the strip, then the spectrogram with the lowest mel band at the
 *           bottom, grey-scaled min..max
 *   mel     (n_mels, n_frames)
 *   weights (n_weights): one weight per time step (attention over audio
 *           tokens), stretched over the frames (opts->upsample), coloured
 *           with opts->cmap; the spectrogram columns are also tinted by
 *           opts->alpha.
 * strip_height >= 1. */
tm_status tm_spectrogram_heatstrip(uint8_t *out, const float *mel, int n_mels, int n_frames,
                                   const float *weights, int n_weights, int strip_height,
                                   const tm_heatmap_opts *opts);

/* ====================================================== whole-model evaluation */

/* tm_evaluate runs a model over the rows of a manifest (through the data
 * loader) and computes every metric that applies to its heads and the
 * manifest's fields: classification metrics for each subset of the model's
 * modalities (the ablation table), retrieval between every pair of
 * modalities with contrastive heads (instance- and class-level), metrics
 * per group of a manifest field (bias audit), and for the first n_examples
 * rows the fusion attention maps and modality attribution. docs/eval.md
 * ("trimodal eval") describes every number. */
struct tm_model;
struct tm_tokenizer;
struct tm_manifest;

typedef void (*tm_evaluate_progress_fn)(void *ctx, const char *stage, int64_t done,
                                        int64_t total);

#define TM_EVALUATE_MAX_GROUPS 8

typedef struct {
    const char *split;     /* rows of this split; NULL: every row */
    int64_t batch_size;    /* graph batch; 0: 16 */
    int ablation;          /* 1: every modality subset; 0: all modalities only */
    int retrieval;         /* 1: retrieval between modality pairs (contrastive heads) */
    int n_group_by;        /* bias audit: manifest fields to group by */
    const char *group_by[TM_EVALUATE_MAX_GROUPS];
    int n_examples;        /* rows explained (attention, attribution); 0 */
    /* the model's class names (n_class_names == num_classes) or NULL; when
     * given, manifest label names are mapped onto them and an unknown name
     * is an error naming the row */
    const char *const *class_names;
    int n_class_names;
    const char *title;     /* the report's title; NULL: "trimodal eval" */
    tm_evaluate_progress_fn progress; /* NULL: none */
    void *progress_ctx;
} tm_evaluate_options;

tm_evaluate_options tm_evaluate_default_options(void);

typedef struct tm_evaluation tm_evaluation;

/* Evaluates model on the rows of manifest (opts->split). tok may be NULL
 * for a model without text; preprocess is a const tm_preprocess_config *
 * (trimodal/data.h; void here to keep this header light), NULL meaning the
 * default front-ends. Captions are decoded greedily when the model has a
 * caption decoder and tok is given.
 * Fails with TM_ERR_INVALID naming the manifest line for rows that lack
 * what the evaluation needs (no modality the model reads, a label outside
 * the model's classes or unknown to it, some rows labelled and others
 * not), an empty split, a model with nothing to evaluate; media and
 * loader errors as tm_loader_next reports them; TM_ERR_NOMEM. */
tm_status tm_evaluate(tm_evaluation **out, struct tm_model *model,
                      const struct tm_tokenizer *tok, const void *preprocess,
                      const struct tm_manifest *manifest, const tm_evaluate_options *opts);

/* Everything as one JSON object (valid while e lives). */
const char *tm_evaluation_json(const tm_evaluation *e);
/* A plain-text summary table for a terminal (valid while e lives). */
const char *tm_evaluation_text(const tm_evaluation *e);
/* The HTML report (one file, pictures embedded), written atomically. */
tm_status tm_evaluation_write_report(const tm_evaluation *e, const char *path);
void tm_evaluation_free(tm_evaluation *e); /* NULL is harmless */

#ifdef __cplusplus
}
#endif
#endif
