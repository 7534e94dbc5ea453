/* tm_evaluate: a model over a manifest, every metric that applies
 * (classification per modality subset, retrieval per modality pair, bias
 * audit per group, attention and attribution of chosen examples), as JSON,
 * a text table and an HTML report. The report assembly is in
 * evaluate_report.c. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluate_internal.h"

tm_evaluate_options tm_evaluate_default_options(void)
{
    tm_evaluate_options o;
    memset(&o, 0, sizeof o);
    o.batch_size = 16;
    o.ablation = 1;
    o.retrieval = 1;
    return o;
}

/* ------------------------------------------------------------ helpers */

void ev_sb_printf(ev_sb *b, const char *fmt, ...)
{
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = b->cap ? vsnprintf(b->p + b->len, room, fmt, ap) : -2;
        va_end(ap);
        if (n >= 0 && (size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        if (n == -1) {
            b->failed = 1;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (n > 0 && cap - b->len <= (size_t)n) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void progress(const tm_evaluate_options *o, const char *stage, int64_t done, int64_t total)
{
    if (o->progress) o->progress(o->progress_ctx, stage, done, total);
}

static cJSON *num(double v)
{
    return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

static void add_num(cJSON *o, const char *k, double v) { cJSON_AddItemToObject(o, k, num(v)); }

/* Softmax of one row of logits, in double. */
static void softmax(const float *z, int c, double *p)
{
    double mx = z[0], s = 0;
    for (int i = 1; i < c; i++)
        if (z[i] > mx) mx = z[i];
    for (int i = 0; i < c; i++) s += (p[i] = exp((double)z[i] - mx));
    for (int i = 0; i < c; i++) p[i] /= s;
}

static int argmax(const float *z, int c)
{
    int b = 0;
    for (int i = 1; i < c; i++)
        if (z[i] > z[b]) b = i;
    return b;
}

void tm_evaluation_free(tm_evaluation *e)
{
    if (!e) return;
    free(e->json);
    free(e->text.p);
    tm_report_free(e->report);
    free(e);
}

const char *tm_evaluation_json(const tm_evaluation *e) { return e ? e->json : NULL; }
const char *tm_evaluation_text(const tm_evaluation *e) { return e && e->text.p ? e->text.p : ""; }

tm_status tm_evaluation_write_report(const tm_evaluation *e, const char *path)
{
    if (!e || !path) return tm_fail(TM_ERR_INVALID, "tm_evaluation_write_report: NULL argument");
    return tm_report_write(e->report, path);
}

/* ------------------------------------------------------- the main pass */

static void ev_free(ev_state *s)
{
    free(s->rows);
    free(s->labels);
    free(s->present);
    free(s->logits);
    free(s->emb);
    for (int i = 0; i < s->n_ex; i++) {
        free(s->ex[i].image);
        free(s->ex[i].mel);
        free(s->ex[i].att_vision);
        free(s->ex[i].att_audio);
    }
    free(s->ex);
}

/* Checks the rows and maps their labels onto the model's classes. */
static tm_status check_rows(ev_state *s, const tm_manifest *man, const tm_evaluate_options *o)
{
    const char *path = tm_manifest_path(man);
    int64_t labelled = 0, first_unlabelled = -1;
    for (int64_t i = 0; i < s->n; i++) {
        const tm_manifest_row *r = tm_manifest_row_at(man, s->rows[i]);
        if (!(r->present & s->model_bits))
            return tm_fail(TM_ERR_INVALID,
                           "%s:%lld: row '%s' has none of the modalities the model reads "
                           "(%s); give it one of them or leave the row out of the split",
                           path, (long long)r->line, r->id, s->modality_list);
        int32_t lab = TM_LABEL_NONE;
        if (r->label != TM_LABEL_NONE && s->C > 0) {
            const char *name = tm_manifest_class_name(man, r->label);
            if (o->class_names && name) {
                for (int c = 0; c < o->n_class_names; c++)
                    if (o->class_names[c] && !strcmp(o->class_names[c], name)) lab = c;
                if (lab == TM_LABEL_NONE)
                    return tm_fail(TM_ERR_INVALID,
                                   "%s:%lld: row '%s' has label '%s', which is not one of the "
                                   "model's %lld classes (its labels.json or dataset.json); "
                                   "fix the label or evaluate a model trained on this class",
                                   path, (long long)r->line, r->id, name, (long long)s->C);
            } else {
                if (r->label >= s->C)
                    return tm_fail(TM_ERR_INVALID,
                                   "%s:%lld: row '%s' has label %d but the model has %lld "
                                   "classes (0..%lld); fix the label or the model",
                                   path, (long long)r->line, r->id, (int)r->label,
                                   (long long)s->C, (long long)s->C - 1);
                lab = r->label;
            }
        }
        if (lab != TM_LABEL_NONE)
            labelled++;
        else if (first_unlabelled < 0)
            first_unlabelled = i;
        s->labels[i] = lab;
    }
    if (s->C > 0 && labelled > 0 && first_unlabelled >= 0) {
        const tm_manifest_row *r = tm_manifest_row_at(man, s->rows[first_unlabelled]);
        return tm_fail(TM_ERR_INVALID,
                       "%s:%lld: row '%s' has no \"label\" but %lld other rows of the split "
                       "have one; classification metrics need every row labelled (add the "
                       "label or leave the row out of the split)",
                       path, (long long)r->line, r->id, (long long)labelled);
    }
    s->has_labels = labelled > 0;
    return TM_OK;
}

static void subset_name(const ev_state *s, unsigned mask, char *out, size_t n)
{
    out[0] = 0;
    for (int m = 0; m < s->M; m++)
        if (mask & (1u << m)) {
            size_t l = strlen(out);
            snprintf(out + l, n - l, "%s%s", l ? "+" : "", s->info.modality[m]);
        }
}

/* Grabs fusion attention of example e (batch position i) from an early
 * fusion graph: the last layer's CLS query over each modality's tokens. */
static void grab_attention(ev_state *s, tm_model_graph *g, int64_t i, ev_example *ex)
{
    int64_t sh[4], last[4] = {0, 0, 0, 0};
    const float *a = NULL;
    for (int l = 0; l < 64; l++) {
        const float *t = tm_model_graph_attention(g, "fusion", l, sh);
        if (!t) break;
        a = t;
        memcpy(last, sh, sizeof sh);
    }
    if (!a) {
        snprintf(s->att_note, sizeof s->att_note,
                 "attention maps are drawn for early fusion only (this model's fusion is %s)",
                 s->info.fusion ? s->info.fusion : "none");
        return;
    }
    int64_t H = last[1], Tq = last[2], Tk = last[3];
    /* tokens each encoder hands to fusion */
    int64_t cnt[TM_MODEL_MAX_MODALITIES] = {0}, total = 0;
    for (int m = 0; m < s->M; m++) {
        const char *nm = s->info.modality[m];
        if (!strcmp(nm, "text")) {
            cnt[m] = s->info.text_tokens;
        } else {
            int64_t es[4];
            if (!tm_model_graph_attention(g, nm, 0, es)) return;
            cnt[m] = es[3];
        }
        total += cnt[m];
    }
    int64_t off = Tk - total; /* the fusion CLS (1) or none (0) */
    if (off != 0 && off != 1) {
        snprintf(s->att_note, sizeof s->att_note,
                 "attention maps not drawn: fusion has %lld keys, the encoders give %lld "
                 "tokens", (long long)Tk, (long long)total);
        return;
    }
    double *w = calloc((size_t)Tk, sizeof *w);
    if (!w) return;
    for (int64_t h = 0; h < H; h++) /* the CLS query: row 0 of the last layer */
        for (int64_t k = 0; k < Tk; k++) w[k] += a[((i * H + h) * Tq + 0) * Tk + k] / (double)H;
    int64_t p = off;
    for (int m = 0; m < s->M; m++) {
        const char *nm = s->info.modality[m];
        if (!strcmp(nm, "vision")) {
            int64_t n = cnt[m], side = (int64_t)llround(sqrt((double)n)), skip = 0;
            if (side * side != n) {
                side = (int64_t)llround(sqrt((double)(n - 1)));
                skip = 1; /* the vision encoder's CLS token */
            }
            if (side * side == n - skip && side > 0 && (ex->att_vision = malloc(
                                                             (size_t)(side * side) * sizeof(float)))) {
                for (int64_t k = 0; k < side * side; k++)
                    ex->att_vision[k] = (float)w[p + skip + k];
                ex->grid = (int)side;
            }
        } else if (!strcmp(nm, "audio") && cnt[m] > 0) {
            if ((ex->att_audio = malloc((size_t)cnt[m] * sizeof(float)))) {
                for (int64_t k = 0; k < cnt[m]; k++) ex->att_audio[k] = (float)w[p + k];
                ex->n_audio_tokens = (int)cnt[m];
            }
        }
        double sum = 0;
        for (int64_t k = 0; k < cnt[m]; k++) sum += w[p + k];
        ex->att_share[m] = sum;
        p += cnt[m];
    }
    free(w);
}

static void copy_inputs(ev_state *s, tm_model_inputs *in, const tm_batch *b)
{
    int64_t B = b->capacity;
    if (in->tokens && b->tokens)
        memcpy(in->tokens, b->tokens, (size_t)(B * s->info.text_tokens) * sizeof(int32_t));
    if (in->image && b->image)
        memcpy(in->image, b->image, (size_t)(B * s->img_numel) * sizeof(float));
    if (in->mel && b->mel) memcpy(in->mel, b->mel, (size_t)(B * s->mel_numel) * sizeof(float));
}

static tm_status run_batches(ev_state *s, tm_model *model, const tm_tokenizer *tok,
                             const tm_preprocess_config *pre, const tm_manifest *man,
                             const tm_evaluate_options *o)
{
    tm_loader_config cfg = tm_loader_default_config();
    cfg.batch_size = s->B;
    cfg.text_tokens = tok ? s->info.text_tokens : 0;
    cfg.pad_id = s->info.pad_id;
    cfg.image_channels = s->info.image_channels;
    cfg.image_h = s->info.image_h;
    cfg.image_w = s->info.image_w;
    cfg.n_mels = s->info.n_mels;
    cfg.n_frames = s->info.n_frames;
    cfg.n_modalities = s->M;
    for (int m = 0; m < s->M; m++) cfg.modality[m] = s->bits[m];
    cfg.rows = s->rows;
    cfg.n_rows = s->n;
    cfg.shuffle = 0;
    cfg.cache_bytes = 0;
    cfg.tokenizer = tok;
    cfg.preprocess = pre ? *pre : tm_preprocess_default_config();
    if (!tok && s->info.text_tokens > 0) {
        /* text rows would be fed as pads: refuse rather than score them */
        for (int64_t i = 0; i < s->n; i++) {
            const tm_manifest_row *r = tm_manifest_row_at(man, s->rows[i]);
            if (r->present & TM_MODALITY_TEXT)
                return tm_fail(TM_ERR_INVALID,
                               "%s:%lld: row '%s' has text but no tokenizer was given; put "
                               "tokenizer.json in the model folder",
                               tm_manifest_path(man), (long long)r->line, r->id);
        }
    }
    tm_loader *ld = NULL;
    tm_model_graph *gc = NULL, *ge = NULL;
    tm_status st = tm_loader_new(&ld, man, &cfg);
    if (!st && s->C > 0) {
        tm_model_graph_opts go = tm_model_graph_default_opts();
        go.attention_maps = s->n_ex > 0;
        st = tm_model_graph_new_opts(&gc, model, s->B, TM_MODEL_CLASSIFY, &go);
    }
    if (!st && s->D > 0 && s->do_retrieval) {
        tm_model_graph_opts go = tm_model_graph_default_opts();
        go.attention_maps = s->n_ex > 0 && s->C == 0;
        st = tm_model_graph_new_opts(&ge, model, s->B, TM_MODEL_EMBED, &go);
    }
    int64_t pos = 0;
    while (!st) {
        const tm_batch *b = NULL;
        if ((st = tm_loader_next(ld, &b)) || !b) break;
        int64_t n = b->size, M = s->M;
        for (int64_t i = 0; i < n; i++) {
            unsigned bits = 0;
            for (int m = 0; m < M; m++)
                if (b->present[i * M + m]) bits |= 1u << m;
            s->present[pos + i] = bits;
        }
        if (gc) {
            tm_model_inputs in = tm_model_graph_inputs(gc);
            copy_inputs(s, &in, b);
            for (int k = 0; k < s->n_sub && !st; k++) {
                /* A subset that leaves every row of this batch with the
                 * modalities an earlier subset left it (image-only rows:
                 * every subset with the image) gives the same logits: the
                 * rows are independent and the forward is deterministic. */
                int same = -1;
                for (int j = 0; j < k && same < 0; j++) {
                    int64_t i = 0;
                    while (i < n && (s->present[pos + i] & s->sub_mask[j]) ==
                                        (s->present[pos + i] & s->sub_mask[k]))
                        i++;
                    if (i == n) same = j;
                }
                float *dst = s->logits + ((size_t)k * s->n + pos) * s->C;
                if (same >= 0) {
                    memcpy(dst, s->logits + ((size_t)same * s->n + pos) * s->C,
                           (size_t)(n * s->C) * sizeof(float));
                    continue;
                }
                for (int64_t i = 0; i < b->capacity; i++)
                    for (int m = 0; m < M; m++)
                        in.present[i * M + m] =
                            b->present[i * M + m] && (s->sub_mask[k] & (1u << m));
                if ((st = tm_model_graph_forward(gc))) break;
                const float *z = tm_model_graph_logits(gc);
                memcpy(dst, z, (size_t)(n * s->C) * sizeof(float));
                if (k == 0)
                    for (int64_t i = 0; i < n && pos + i < s->n_ex; i++)
                        grab_attention(s, gc, i, &s->ex[pos + i]);
            }
            /* gradient x input of the explained examples' float inputs */
            if (!st && pos < s->n_ex) {
                memcpy(in.present, b->present, (size_t)(b->capacity * M));
                for (int m = 0; m < M && !st; m++) {
                    float *x = NULL;
                    int64_t numel = 0;
                    if (!strcmp(s->info.modality[m], "vision")) x = in.image, numel = s->img_numel;
                    if (!strcmp(s->info.modality[m], "audio")) x = in.mel, numel = s->mel_numel;
                    if (!x) continue;
                    double f[2][64];
                    for (int sgn = 0; sgn < 2 && !st; sgn++) {
                        float scale = sgn ? 1.0f - EV_GXI_EPS : 1.0f + EV_GXI_EPS;
                        copy_inputs(s, &in, b);
                        for (int64_t j = 0; j < b->capacity * numel; j++) x[j] *= scale;
                        if ((st = tm_model_graph_forward(gc))) break;
                        const float *z = tm_model_graph_logits(gc);
                        for (int64_t i = 0; i < n && pos + i < s->n_ex && i < 64; i++) {
                            int pred = argmax(s->logits + (size_t)(pos + i) * s->C, (int)s->C);
                            f[sgn][i] = z[i * s->C + pred];
                        }
                    }
                    for (int64_t i = 0; !st && i < n && pos + i < s->n_ex && i < 64; i++)
                        s->ex[pos + i].gxi[m] = (s->present[pos + i] & (1u << m))
                                                    ? (f[0][i] - f[1][i]) / (2.0 * EV_GXI_EPS)
                                                    : NAN;
                }
            }
        }
        if (!st && ge) {
            tm_model_inputs in = tm_model_graph_inputs(ge);
            copy_inputs(s, &in, b);
            memcpy(in.present, b->present, (size_t)(b->capacity * M));
            if (!(st = tm_model_graph_forward(ge))) {
                for (int m = 0; m < M; m++) {
                    const float *e = tm_model_graph_embeddings(ge, m);
                    if (e)
                        memcpy(s->emb + ((size_t)m * s->n + pos) * s->D, e,
                               (size_t)(n * s->D) * sizeof(float));
                }
                if (!gc)
                    for (int64_t i = 0; i < n && pos + i < s->n_ex; i++)
                        grab_attention(s, ge, i, &s->ex[pos + i]);
            }
        }
        /* the pictures of explained examples */
        for (int64_t i = 0; !st && i < n && pos + i < s->n_ex; i++) {
            ev_example *ex = &s->ex[pos + i];
            ex->row = b->rows[i];
            if (b->image) {
                int64_t C = s->info.image_channels, HW = s->info.image_h * s->info.image_w;
                if ((ex->image = malloc((size_t)(HW * C)))) {
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t p = 0; p < HW; p++) {
                            double v = b->image[(i * C + c) * HW + p] * cfg.preprocess.image.std[c] +
                                       cfg.preprocess.image.mean[c];
                            v = v < 0 ? 0 : v > 1 ? 1 : v;
                            ex->image[p * C + c] = (uint8_t)lround(v * 255.0);
                        }
                }
            }
            if (b->mel && (ex->mel = malloc((size_t)s->mel_numel * sizeof(float))))
                memcpy(ex->mel, b->mel + i * s->mel_numel, (size_t)s->mel_numel * sizeof(float));
        }
        pos += n;
        progress(o, "evaluating", pos, s->n);
    }
    tm_model_graph_free(gc);
    tm_model_graph_free(ge);
    tm_loader_free(ld);
    if (!st && pos != s->n)
        st = tm_fail(TM_ERR_INTERNAL, "evaluate: the loader gave %lld of %lld rows",
                     (long long)pos, (long long)s->n);
    return st;
}

/* ------------------------------------------------------------ metrics */

static cJSON *classify_json(const tm_classify_result *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n", (double)r->n);
    add_num(o, "accuracy", r->accuracy);
    add_num(o, "top5_accuracy", r->top_k_accuracy);
    add_num(o, "precision_macro", r->precision_macro);
    add_num(o, "recall_macro", r->recall_macro);
    add_num(o, "f1_macro", r->f1_macro);
    add_num(o, "precision_weighted", r->precision_weighted);
    add_num(o, "recall_weighted", r->recall_weighted);
    add_num(o, "f1_weighted", r->f1_weighted);
    add_num(o, "ece", r->ece);
    add_num(o, "nll", r->nll);
    return o;
}

/* Classification metrics of the examples in sel (n_sel) with subset k's logits. */
static tm_status classify_sel(const ev_state *s, int k, const int64_t *sel, int64_t n_sel,
                              tm_classify_result *r)
{
    float *z = malloc((size_t)(n_sel * s->C) * sizeof(float));
    int32_t *l = malloc((size_t)n_sel * sizeof(int32_t));
    tm_status st = (!z || !l) ? tm_fail(TM_ERR_NOMEM, "out of memory") : TM_OK;
    for (int64_t j = 0; !st && j < n_sel; j++) {
        memcpy(z + j * s->C, s->logits + ((size_t)k * s->n + sel[j]) * s->C,
               (size_t)s->C * sizeof(float));
        l[j] = s->labels[sel[j]];
    }
    if (!st) {
        tm_classify_params p = tm_classify_default_params();
        st = tm_classify_eval(z, n_sel, (int)s->C, l, &p, r);
    }
    free(z);
    free(l);
    return st;
}

static tm_status do_classification(ev_state *s, ev_out *o)
{
    int64_t *sel = malloc((size_t)s->n * sizeof *sel);
    if (!sel) return tm_fail(TM_ERR_NOMEM, "out of memory");
    tm_status st = TM_OK;
    cJSON *abl = cJSON_AddArrayToObject(o->root, "ablation");
    for (int k = -1; k < s->n_sub && !st; k++) {
        /* k = -1: every row as given (the headline numbers) */
        unsigned mask = k < 0 ? s->sub_mask[0] : s->sub_mask[k];
        int64_t n_sel = 0;
        for (int64_t i = 0; i < s->n; i++)
            if (k < 0 || (s->present[i] & mask) == mask) sel[n_sel++] = i;
        char name[64];
        subset_name(s, mask, name, sizeof name);
        ev_ablation_row *ar = k < 0 ? NULL : &o->abl[k];
        if (ar) {
            snprintf(ar->name, sizeof ar->name, "%s", name);
            ar->n = n_sel;
            for (int j = 0; j < EV_ABL_COLS; j++) ar->v[j] = NAN;
        }
        if (n_sel == 0) {
            if (ar) {
                cJSON *e = cJSON_CreateObject();
                cJSON_AddStringToObject(e, "modalities", name);
                cJSON_AddNumberToObject(e, "n", 0);
                cJSON_AddStringToObject(e, "note", "no row has all of these modalities");
                cJSON_AddItemToArray(abl, e);
            }
            continue;
        }
        tm_classify_result r;
        if ((st = classify_sel(s, k < 0 ? 0 : k, sel, n_sel, &r))) break;
        cJSON *e = classify_json(&r);
        if (k < 0) {
            cJSON_AddItemToObject(o->root, "classification", e);
            o->main = r; /* kept for the report: confusion, calibration */
            o->has_main = 1;
            cJSON *conf = cJSON_AddArrayToObject(e, "confusion");
            for (int a = 0; a < r.n_classes; a++) {
                cJSON *row = cJSON_CreateArray();
                for (int b = 0; b < r.n_classes; b++)
                    cJSON_AddItemToArray(
                        row, cJSON_CreateNumber((double)r.confusion[a * r.n_classes + b]));
                cJSON_AddItemToArray(conf, row);
            }
            cJSON *pc = cJSON_AddArrayToObject(e, "per_class");
            for (int a = 0; a < r.n_classes; a++) {
                cJSON *c = cJSON_CreateObject();
                cJSON_AddStringToObject(c, "class", s->class_label[a]);
                cJSON_AddNumberToObject(c, "support", (double)r.support[a]);
                add_num(c, "precision", r.precision[a]);
                add_num(c, "recall", r.recall[a]);
                add_num(c, "f1", r.f1[a]);
                cJSON_AddItemToArray(pc, c);
            }
            cJSON *cal = cJSON_AddArrayToObject(e, "calibration");
            for (int b = 0; b < r.ece_bins; b++) {
                cJSON *c = cJSON_CreateObject();
                cJSON_AddNumberToObject(c, "count", (double)r.bin_count[b]);
                add_num(c, "confidence", r.bin_confidence[b]);
                add_num(c, "accuracy", r.bin_accuracy[b]);
                cJSON_AddItemToArray(cal, c);
            }
        } else {
            cJSON_AddItemToObjectCS(e, "modalities", cJSON_CreateString(name));
            cJSON_AddItemToArray(abl, e);
            ar->v[0] = r.accuracy;
            ar->v[1] = r.top_k_accuracy;
            ar->v[2] = r.f1_macro;
            ar->v[3] = r.f1_weighted;
            ar->v[4] = r.ece;
            tm_classify_result_free(&r);
        }
    }
    free(sel);
    return st;
}

static tm_status do_retrieval(ev_state *s, ev_out *o)
{
    cJSON *arr = cJSON_AddArrayToObject(o->root, "retrieval");
    tm_status st = TM_OK;
    for (int a = 0; a < s->M && !st; a++)
        for (int b = a + 1; b < s->M && !st; b++) {
            unsigned need = (1u << a) | (1u << b);
            int64_t n = 0;
            int64_t *idx = malloc((size_t)s->n * sizeof *idx);
            if (!idx) return tm_fail(TM_ERR_NOMEM, "out of memory");
            for (int64_t i = 0; i < s->n; i++)
                if ((s->present[i] & need) == need) idx[n++] = i;
            char pair[64];
            snprintf(pair, sizeof pair, "%s-%s", s->info.modality[a], s->info.modality[b]);
            if (n < 2) {
                cJSON *e = cJSON_CreateObject();
                cJSON_AddStringToObject(e, "pair", pair);
                cJSON_AddNumberToObject(e, "n", (double)n);
                cJSON_AddStringToObject(e, "note", "fewer than 2 rows have both modalities");
                cJSON_AddItemToArray(arr, e);
                free(idx);
                continue;
            }
            float *sim = malloc((size_t)(n * n) * sizeof(float));
            int64_t *ids = malloc((size_t)n * sizeof *ids), *fr = malloc((size_t)n * sizeof *fr);
            if (!sim || !ids || !fr) st = tm_fail(TM_ERR_NOMEM, "out of memory");
            for (int64_t q = 0; !st && q < n; q++) {
                const float *ea = s->emb + ((size_t)a * s->n + idx[q]) * s->D;
                ids[q] = s->has_labels ? s->labels[idx[q]] : -1;
                for (int64_t c = 0; c < n; c++) {
                    const float *eb = s->emb + ((size_t)b * s->n + idx[c]) * s->D;
                    double d = 0;
                    for (int64_t j = 0; j < s->D; j++) d += (double)ea[j] * eb[j];
                    sim[q * n + c] = (float)d;
                }
            }
            for (int dir = 0; dir < 2 && !st; dir++) {
                const char *qm = s->info.modality[dir ? b : a], *cm = s->info.modality[dir ? a : b];
                for (int level = 0; level < (s->has_labels ? 2 : 1) && !st; level++) {
                    tm_retrieval_params p = tm_retrieval_default_params();
                    p.transposed = dir;
                    tm_retrieval_result r;
                    st = tm_retrieval_eval(sim, n, n, level ? ids : NULL, level ? ids : NULL, &p,
                                           &r, level ? NULL : fr);
                    if (st) break;
                    cJSON *e = cJSON_CreateObject();
                    cJSON_AddStringToObject(e, "query", qm);
                    cJSON_AddStringToObject(e, "candidates", cm);
                    cJSON_AddStringToObject(e, "level", level ? "class" : "instance");
                    cJSON_AddNumberToObject(e, "n", (double)n);
                    add_num(e, "recall_at_1", r.recall_at_k[0]);
                    add_num(e, "recall_at_5", r.recall_at_k[1]);
                    add_num(e, "recall_at_10", r.recall_at_k[2]);
                    add_num(e, "mrr", r.mrr);
                    add_num(e, "map", r.map);
                    add_num(e, "median_rank", r.median_rank);
                    cJSON_AddItemToArray(arr, e);
                    if (o->n_ret < EV_MAX_RET) {
                        ev_ret_row *rr = &o->ret[o->n_ret++];
                        snprintf(rr->name, sizeof rr->name, "%s->%s (%s)", qm, cm,
                                 level ? "class" : "instance");
                        rr->n = n;
                        rr->v[0] = r.recall_at_k[0];
                        rr->v[1] = r.recall_at_k[1];
                        rr->v[2] = r.recall_at_k[2];
                        rr->v[3] = r.mrr;
                        rr->v[4] = r.map;
                        rr->v[5] = r.median_rank;
                        rr->curve = NULL;
                        if (!level && (rr->curve = malloc((size_t)n * sizeof(double)))) {
                            /* recall@K for K = 1..n from the first relevant ranks */
                            for (int64_t K = 0; K < n; K++) rr->curve[K] = 0;
                            for (int64_t q = 0; q < n; q++)
                                if (fr[q] > 0)
                                    for (int64_t K = fr[q] - 1; K < n; K++) rr->curve[K] += 1.0 / n;
                            rr->n_curve = n;
                        }
                    }
                }
            }
            free(sim);
            free(ids);
            free(fr);
            free(idx);
        }
    return st;
}

static tm_status do_bias(ev_state *s, ev_out *o, const tm_manifest *man,
                         const tm_evaluate_options *opt)
{
    cJSON *arr = cJSON_AddArrayToObject(o->root, "bias");
    int64_t *sel = malloc((size_t)s->n * sizeof *sel);
    const char **val = malloc((size_t)s->n * sizeof *val);
    tm_status st = (!sel || !val) ? tm_fail(TM_ERR_NOMEM, "out of memory") : TM_OK;
    for (int f = 0; f < opt->n_group_by && !st; f++) {
        const char *key = opt->group_by[f];
        int64_t have = 0;
        for (int64_t i = 0; i < s->n; i++)
            if ((val[i] = tm_manifest_field(man, s->rows[i], key))) have++;
            else val[i] = "(missing)";
        if (!have) {
            ev_sb names = {0};
            for (int j = 0; j < tm_manifest_field_count(man); j++)
                ev_sb_printf(&names, "%s%s", j ? ", " : "", tm_manifest_field_name(man, j));
            st = tm_fail(TM_ERR_INVALID,
                         "--group-by %s: no row of %s has the field \"%s\"; its fields are id, "
                         "text, image, audio, label, split, transcript%s%s",
                         key, tm_manifest_path(man), key, names.p ? ", " : "",
                         names.p ? names.p : "");
            free(names.p);
            break;
        }
        cJSON *fe = cJSON_CreateObject();
        cJSON_AddStringToObject(fe, "field", key);
        cJSON *groups = cJSON_AddArrayToObject(fe, "groups");
        double best = -INFINITY, worst = INFINITY;
        const char *bn = NULL, *wn = NULL;
        ev_bias_table *bt = o->n_bias < TM_EVALUATE_MAX_GROUPS ? &o->bias[o->n_bias++] : NULL;
        if (bt) snprintf(bt->field, sizeof bt->field, "%s", key);
        for (int64_t i = 0; i < s->n && !st; i++) {
            int seen = 0;
            for (int64_t j = 0; j < i && !seen; j++) seen = !strcmp(val[i], val[j]);
            if (seen) continue;
            int64_t n_sel = 0;
            for (int64_t j = i; j < s->n; j++)
                if (!strcmp(val[i], val[j])) sel[n_sel++] = j;
            cJSON *g = cJSON_CreateObject();
            cJSON_AddStringToObject(g, "group", val[i]);
            cJSON_AddNumberToObject(g, "n", (double)n_sel);
            double acc = NAN, f1 = NAN;
            tm_classify_result r;
            if ((st = classify_sel(s, 0, sel, n_sel, &r))) {
                cJSON_Delete(g);
                break;
            }
            acc = r.accuracy;
            f1 = r.f1_macro;
            add_num(g, "accuracy", acc);
            add_num(g, "f1_macro", f1);
            add_num(g, "ece", r.ece);
            tm_classify_result_free(&r);
            cJSON_AddItemToArray(groups, g);
            if (acc > best) best = acc, bn = val[i];
            if (acc < worst) worst = acc, wn = val[i];
            if (bt && bt->n < EV_MAX_GROUP_ROWS) {
                ev_bias_row *br = &bt->rows[bt->n++];
                snprintf(br->group, sizeof br->group, "%s", val[i]);
                br->n = n_sel;
                br->acc = acc;
                br->f1 = f1;
            }
        }
        cJSON_AddStringToObject(fe, "best_group", bn ? bn : "");
        cJSON_AddStringToObject(fe, "worst_group", wn ? wn : "");
        add_num(fe, "accuracy_gap", best - worst);
        if (bt) bt->gap = best - worst;
        cJSON_AddItemToArray(arr, fe);
    }
    free(sel);
    free(val);
    return st;
}

static void do_examples(ev_state *s, ev_out *o, const tm_manifest *man)
{
    cJSON *arr = cJSON_AddArrayToObject(o->root, "examples");
    double *p = malloc((size_t)(s->C > 0 ? s->C : 1) * sizeof *p);
    if (!p) return;
    for (int e = 0; e < s->n_ex; e++) {
        ev_example *ex = &s->ex[e];
        cJSON *j = cJSON_CreateObject();
        const tm_manifest_row *r = tm_manifest_row_at(man, s->rows[e]);
        cJSON_AddStringToObject(j, "id", r->id);
        cJSON_AddNumberToObject(j, "line", (double)r->line);
        ex->pred = -1;
        if (s->C > 0) {
            const float *z = s->logits + (size_t)e * s->C;
            ex->pred = argmax(z, (int)s->C);
            softmax(z, (int)s->C, p);
            ex->p_pred = p[ex->pred];
            cJSON_AddStringToObject(j, "predicted", s->class_label[ex->pred]);
            add_num(j, "probability", ex->p_pred);
            if (s->labels[e] != TM_LABEL_NONE)
                cJSON_AddStringToObject(j, "label", s->class_label[s->labels[e]]);
            cJSON *occ = cJSON_AddObjectToObject(j, "occlusion");
            cJSON *gxi = cJSON_AddObjectToObject(j, "gradient_x_input");
            cJSON *share = cJSON_AddObjectToObject(j, "attention_share");
            for (int m = 0; m < s->M; m++) {
                ex->occ[m] = NAN;
                unsigned without = s->sub_mask[0] & ~(1u << m);
                if ((s->present[e] & (1u << m)) && (s->present[e] & without))
                    for (int k = 0; k < s->n_sub; k++)
                        if (s->sub_mask[k] == without) {
                            softmax(s->logits + ((size_t)k * s->n + e) * s->C, (int)s->C, p);
                            ex->occ[m] = ex->p_pred - p[ex->pred];
                        }
                add_num(occ, s->info.modality[m], ex->occ[m]);
                add_num(gxi, s->info.modality[m], ex->gxi[m]);
                add_num(share, s->info.modality[m], ex->att_share[m]);
            }
        }
        cJSON_AddItemToArray(arr, j);
    }
    free(p);
}

tm_status tm_evaluate(tm_evaluation **out, struct tm_model *model,
                      const struct tm_tokenizer *tok, const void *preprocess,
                      const struct tm_manifest *man, const tm_evaluate_options *opts)
{
    if (!out || !model || !man)
        return tm_fail(TM_ERR_INVALID, "tm_evaluate: out, model and manifest must not be NULL");
    *out = NULL;
    tm_evaluate_options o = opts ? *opts : tm_evaluate_default_options();
    if (o.batch_size <= 0) o.batch_size = 16;
    if (o.batch_size > 1024)
        return tm_fail(TM_ERR_INVALID, "batch size %lld is over 1024", (long long)o.batch_size);
    if (o.n_examples < 0 || o.n_examples > 64)
        return tm_fail(TM_ERR_INVALID, "--examples %d: give 0..64 examples", o.n_examples);
    if (o.n_group_by < 0 || o.n_group_by > TM_EVALUATE_MAX_GROUPS)
        return tm_fail(TM_ERR_INVALID, "at most %d --group-by fields", TM_EVALUATE_MAX_GROUPS);

    ev_state s;
    memset(&s, 0, sizeof s);
    s.info = tm_model_get_info(model);
    s.M = s.info.n_modalities;
    s.C = s.info.num_classes;
    s.D = s.info.embed_dim;
    s.B = o.batch_size;
    s.do_retrieval = o.retrieval;
    s.img_numel = s.info.image_channels * s.info.image_h * s.info.image_w;
    s.mel_numel = s.info.n_mels * s.info.n_frames;
    for (int m = 0; m < s.M; m++) {
        s.bits[m] = tm_modality_from_name(s.info.modality[m]);
        s.model_bits |= s.bits[m];
        size_t l = strlen(s.modality_list);
        snprintf(s.modality_list + l, sizeof s.modality_list - l, "%s%s", m ? ", " : "",
                 s.info.modality[m]);
    }
    if (o.class_names && o.n_class_names != s.C)
        return tm_fail(TM_ERR_INVALID, "%d class names for a model with %lld classes",
                       o.n_class_names, (long long)s.C);
    if (s.C == 0 && (s.D == 0 || !o.retrieval) && (s.info.caption_tokens == 0 || !tok))
        return tm_fail(TM_ERR_UNSUPPORTED,
                       "the model has no classifier, no contrastive heads and no caption "
                       "decoder with a tokenizer: nothing for eval to measure");
    tm_status st = tm_manifest_split_rows(man, o.split, &s.rows, &s.n);
    if (!st && s.n == 0)
        st = tm_fail(TM_ERR_INVALID,
                     "%s: no rows%s%s%s: nothing to evaluate; pick a split the manifest has "
                     "(--split NAME) or add rows",
                     tm_manifest_path(man), o.split ? " in split '" : "", o.split ? o.split : "",
                     o.split ? "'" : "");
    /* subsets: every modality first, then singles, pairs, ... */
    unsigned full = (1u << s.M) - 1;
    s.sub_mask[s.n_sub++] = full;
    if (o.ablation)
        for (int size = 1; size < s.M; size++)
            for (unsigned mask = 1; mask < full; mask++)
                if (__builtin_popcount(mask) == size) s.sub_mask[s.n_sub++] = mask;
    if (!st) {
        s.n_ex = (int)(o.n_examples < s.n ? o.n_examples : s.n);
        s.labels = malloc((size_t)s.n * sizeof *s.labels);
        s.present = calloc((size_t)s.n, sizeof *s.present);
        s.ex = calloc((size_t)(s.n_ex ? s.n_ex : 1), sizeof *s.ex);
        if (s.C > 0) s.logits = malloc((size_t)s.n_sub * (size_t)s.n * (size_t)s.C * sizeof(float));
        if (s.D > 0 && o.retrieval) s.emb = calloc((size_t)s.M * (size_t)s.n * (size_t)s.D, sizeof(float));
        if (!s.labels || !s.present || !s.ex || (s.C > 0 && !s.logits) ||
            (s.D > 0 && o.retrieval && !s.emb))
            st = tm_fail(TM_ERR_NOMEM, "out of memory for %lld rows", (long long)s.n);
        for (int e = 0; e < s.n_ex; e++)
            for (int m = 0; m < TM_MODEL_MAX_MODALITIES; m++)
                s.ex[e].gxi[m] = s.ex[e].att_share[m] = NAN;
    }
    if (!st) st = check_rows(&s, man, &o);
    if (!st && o.n_group_by > 0 && !(s.C > 0 && s.has_labels))
        st = tm_fail(TM_ERR_INVALID,
                     "--group-by needs a classifier and labelled rows (the audit compares "
                     "accuracy between groups)");
    for (int c = 0; c < s.C && c < EV_MAX_CLASSES; c++) {
        const char *nm = o.class_names ? o.class_names[c] : NULL;
        if (!nm) nm = tm_manifest_class_name(man, c);
        if (nm)
            snprintf(s.class_label[c], sizeof s.class_label[c], "%s", nm);
        else
            snprintf(s.class_label[c], sizeof s.class_label[c], "class %d", c);
    }
    if (!st && s.C > EV_MAX_CLASSES)
        st = tm_fail(TM_ERR_UNSUPPORTED, "eval handles at most %d classes", EV_MAX_CLASSES);
    if (!st) st = run_batches(&s, model, tok, preprocess, man, &o);

    ev_out eo;
    memset(&eo, 0, sizeof eo);
    eo.root = cJSON_CreateObject();
    if (!st && !eo.root) st = tm_fail(TM_ERR_NOMEM, "out of memory");
    if (!st) {
        cJSON_AddStringToObject(eo.root, "model", s.info.name ? s.info.name : "");
        cJSON_AddStringToObject(eo.root, "manifest", tm_manifest_path(man));
        if (o.split) cJSON_AddStringToObject(eo.root, "split", o.split);
        cJSON_AddNumberToObject(eo.root, "rows", (double)s.n);
        cJSON *mods = cJSON_AddArrayToObject(eo.root, "modalities");
        for (int m = 0; m < s.M; m++)
            cJSON_AddItemToArray(mods, cJSON_CreateString(s.info.modality[m]));
        if (s.C > 0 && !s.has_labels)
            cJSON_AddStringToObject(eo.root, "classification_note",
                                    "no row has a label: classification metrics skipped");
    }
    if (!st && s.C > 0 && s.has_labels) st = do_classification(&s, &eo);
    if (!st && s.D > 0 && o.retrieval) st = do_retrieval(&s, &eo);
    if (!st && s.info.caption_tokens > 0 && tok)
        st = ev_captions(&s, &eo, model, tok, preprocess, man, &o);
    if (!st && o.n_group_by > 0) st = do_bias(&s, &eo, man, &o);
    if (!st && s.n_ex > 0) do_examples(&s, &eo, man);
    if (!st && s.att_note[0]) cJSON_AddStringToObject(eo.root, "attention_note", s.att_note);

    tm_evaluation *e = NULL;
    if (!st && !(e = calloc(1, sizeof *e))) st = tm_fail(TM_ERR_NOMEM, "out of memory");
    if (!st && !(e->json = cJSON_PrintUnformatted(eo.root)))
        st = tm_fail(TM_ERR_NOMEM, "out of memory");
    if (!st) st = ev_build_report(e, &s, &eo, man, &o);
    if (!st && e->text.failed) st = tm_fail(TM_ERR_NOMEM, "out of memory");
    cJSON_Delete(eo.root);
    if (eo.has_main) tm_classify_result_free(&eo.main);
    for (int i = 0; i < eo.n_ret; i++) free(eo.ret[i].curve);
    ev_free(&s);
    if (st) {
        tm_evaluation_free(e);
        return st;
    }
    *out = e;
    return TM_OK;
}
