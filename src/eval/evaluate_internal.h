/* Shared state of tm_evaluate (evaluate.c) and its report (evaluate_report.c). */
#ifndef TM_EVAL_EVALUATE_INTERNAL_H
#define TM_EVAL_EVALUATE_INTERNAL_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "trimodal/data.h"
#include "trimodal/eval.h"
#include "trimodal/model.h"
#include "trimodal/text.h"

#define EV_MAX_CLASSES 1000
#define EV_MAX_SUBSETS 16
#define EV_ABL_COLS 5
#define EV_MAX_RET 32
#define EV_MAX_GROUP_ROWS 64
/* relative step of the central difference along the input (gradient x input) */
#define EV_GXI_EPS 1e-2f

typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} ev_sb;

void ev_sb_printf(ev_sb *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

typedef struct {
    int64_t row;
    uint8_t *image;   /* (H, W, C) 8-bit, de-normalised model input */
    float *mel;       /* (n_mels, n_frames) */
    float *att_vision; /* (grid, grid) fusion CLS attention over patches */
    int grid;
    float *att_audio;  /* (n_audio_tokens) */
    int n_audio_tokens;
    double att_share[TM_MODEL_MAX_MODALITIES]; /* attention mass per modality */
    double gxi[TM_MODEL_MAX_MODALITIES];
    double occ[TM_MODEL_MAX_MODALITIES];
    int pred;
    double p_pred;
} ev_example;

typedef struct {
    tm_model_info info;
    int M;
    unsigned bits[TM_MODEL_MAX_MODALITIES], model_bits;
    char modality_list[64];
    int64_t C, D, B, n;
    int64_t img_numel, mel_numel;
    int do_retrieval;
    int64_t *rows;
    int32_t *labels;
    unsigned *present; /* per example: bit m = model modality m present */
    int has_labels;
    int n_sub;
    unsigned sub_mask[EV_MAX_SUBSETS]; /* [0] = every modality */
    float *logits; /* (n_sub, n, C) */
    float *emb;    /* (M, n, D) */
    int n_ex;
    ev_example *ex;
    char att_note[160];
    char class_label[EV_MAX_CLASSES][48];
} ev_state;

typedef struct {
    char name[64];
    int64_t n;
    double v[EV_ABL_COLS]; /* accuracy, top-5, F1 macro, F1 weighted, ECE */
} ev_ablation_row;

typedef struct {
    char name[96];
    int64_t n;
    double v[6]; /* R@1, R@5, R@10, MRR, mAP, median rank */
    double *curve;
    int64_t n_curve;
} ev_ret_row;

typedef struct {
    char group[64];
    int64_t n;
    double acc, f1;
} ev_bias_row;

typedef struct {
    char field[64];
    int n;
    ev_bias_row rows[EV_MAX_GROUP_ROWS];
    double gap;
} ev_bias_table;

typedef struct {
    cJSON *root;
    int has_main;
    tm_classify_result main;
    ev_ablation_row abl[EV_MAX_SUBSETS];
    ev_ret_row ret[EV_MAX_RET];
    int n_ret;
    ev_bias_table bias[TM_EVALUATE_MAX_GROUPS];
    int n_bias;
    /* captions: n scored rows, asr = references are transcripts */
    int has_captions, asr;
    int64_t cap_n;
    double bleu, meteor, cider, wer, cer;
    int n_cap_show;
    char cap_hyp[5][128], cap_ref[5][128], cap_id[5][48];
} ev_out;

struct tm_evaluation {
    char *json;
    ev_sb text;
    tm_report *report;
};

/* Decodes captions of the rows (evaluate_caption.c) and scores them. */
tm_status ev_captions(ev_state *s, ev_out *o, tm_model *model, const tm_tokenizer *tok,
                      const tm_preprocess_config *pre, const tm_manifest *man,
                      const tm_evaluate_options *opt);

tm_status ev_build_report(tm_evaluation *e, const ev_state *s, const ev_out *o,
                          const tm_manifest *man, const tm_evaluate_options *opt);

#endif
