/* The HTML report and the terminal table of tm_evaluate. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluate_internal.h"

#define EV_BIAS_SHOWN 256 /* groups listed in the terminal table */

static const char *abl_cols[EV_ABL_COLS] = {"accuracy", "top-5", "F1 macro", "F1 weighted",
                                            "ECE"};
static const char *ret_cols[6] = {"R@1", "R@5", "R@10", "MRR", "mAP", "median rank"};

static void fmt(char *b, size_t n, double v)
{
    if (isfinite(v))
        snprintf(b, n, "%.4f", v);
    else
        snprintf(b, n, "-");
}

/* The terminal summary. */
static void text_summary(ev_sb *t, const ev_state *s, const ev_out *o, const tm_manifest *man,
                         const tm_evaluate_options *opt)
{
    char a[32];
    ev_sb_printf(t, "model %s on %s%s%s: %lld rows; modalities %s\n",
                 s->info.name ? s->info.name : "?", tm_manifest_path(man),
                 opt->split ? " split " : "", opt->split ? opt->split : "", (long long)s->n,
                 s->modality_list);
    if (o->has_main) {
        const tm_classify_result *r = &o->main;
        ev_sb_printf(t, "\nclassification (%lld rows, as given)\n", (long long)r->n);
        ev_sb_printf(t, "  accuracy %.4f  top-5 %.4f  ECE %.4f  NLL %.4f\n", r->accuracy,
                     r->top_k_accuracy, r->ece, r->nll);
        ev_sb_printf(t, "  macro    P %.4f R %.4f F1 %.4f\n", r->precision_macro,
                     r->recall_macro, r->f1_macro);
        ev_sb_printf(t, "  weighted P %.4f R %.4f F1 %.4f\n", r->precision_weighted,
                     r->recall_weighted, r->f1_weighted);
        ev_sb_printf(t, "\nmodality ablation (rows that have every listed modality)\n");
        ev_sb_printf(t, "  %-24s %6s", "modalities", "rows");
        for (int j = 0; j < EV_ABL_COLS; j++) ev_sb_printf(t, " %11s", abl_cols[j]);
        ev_sb_printf(t, "\n");
        for (int k = 0; k < s->n_sub; k++) {
            ev_sb_printf(t, "  %-24s %6lld", o->abl[k].name, (long long)o->abl[k].n);
            for (int j = 0; j < EV_ABL_COLS; j++) {
                fmt(a, sizeof a, o->abl[k].v[j]);
                ev_sb_printf(t, " %11s", a);
            }
            ev_sb_printf(t, "\n");
        }
    } else if (s->C > 0) {
        ev_sb_printf(t, "\nclassification: no row has a label, skipped\n");
    }
    if (o->n_ret) {
        ev_sb_printf(t, "\nretrieval\n  %-34s %6s", "query->candidates (level)", "rows");
        for (int j = 0; j < 6; j++) ev_sb_printf(t, " %11s", ret_cols[j]);
        ev_sb_printf(t, "\n");
        for (int i = 0; i < o->n_ret; i++) {
            ev_sb_printf(t, "  %-34s %6lld", o->ret[i].name, (long long)o->ret[i].n);
            for (int j = 0; j < 6; j++) {
                fmt(a, sizeof a, o->ret[i].v[j]);
                ev_sb_printf(t, " %11s", a);
            }
            ev_sb_printf(t, "\n");
        }
    }
    if (o->has_captions) {
        ev_sb_printf(t, "\ncaptions (%lld rows, references: %s)\n  BLEU %.4f  METEOR %.4f  "
                        "CIDEr-D %.4f",
                     (long long)o->cap_n, o->asr ? "transcript" : "text", o->bleu, o->meteor,
                     o->cider);
        if (o->asr) ev_sb_printf(t, "  WER %.4f  CER %.4f", o->wer, o->cer);
        ev_sb_printf(t, "\n");
    }
    for (int f = 0; f < o->n_bias; f++) {
        const ev_bias_table *b = &o->bias[f];
        ev_sb_printf(t, "\nbias audit by %s (gap between best and worst accuracy %.4f)\n",
                     b->field, b->gap);
        /* best first, the names in one column */
        int w = 8, order[EV_BIAS_SHOWN];
        int n = b->n < EV_BIAS_SHOWN ? b->n : EV_BIAS_SHOWN;
        for (int i = 0; i < n; i++) {
            int len = (int)strlen(b->rows[i].group);
            if (len > w) w = len < 48 ? len : 48;
            int j = i;
            for (; j > 0 && b->rows[order[j - 1]].acc < b->rows[i].acc; j--)
                order[j] = order[j - 1];
            order[j] = i;
        }
        for (int k = 0; k < n; k++) {
            int i = order[k];
            ev_sb_printf(t, "  %-*s %6lld rows  accuracy %.4f  F1 macro %.4f\n", w,
                         b->rows[i].group, (long long)b->rows[i].n, b->rows[i].acc,
                         b->rows[i].f1);
        }
        if (b->n > n) ev_sb_printf(t, "  (%d more groups in the JSON output)\n", b->n - n);
    }
    if (s->n_ex > 0 && s->C > 0) {
        ev_sb_printf(t, "\nexamples: occlusion (drop in p(predicted) without the modality) / "
                        "gradient x input\n");
        for (int e = 0; e < s->n_ex; e++) {
            const tm_manifest_row *r = tm_manifest_row_at(man, s->rows[e]);
            ev_sb_printf(t, "  %-12s predicted %s (p %.3f):", r->id,
                         s->class_label[s->ex[e].pred], s->ex[e].p_pred);
            for (int m = 0; m < s->M; m++) {
                char g[32];
                fmt(a, sizeof a, s->ex[e].occ[m]);
                fmt(g, sizeof g, s->ex[e].gxi[m]);
                ev_sb_printf(t, "  %s %s / %s", s->info.modality[m], a, g);
            }
            ev_sb_printf(t, "\n");
        }
    }
    if (s->att_note[0]) ev_sb_printf(t, "note: %s\n", s->att_note);
}

static tm_status add_svg(tm_report *r, const char *caption, char *svg)
{
    if (!svg) return tm_fail(TM_ERR_INTERNAL, "chart: %s", tm_last_error());
    tm_status st = tm_report_svg(r, caption, svg);
    tm_free(svg);
    return st;
}

static tm_status report_classification(tm_report *r, const ev_state *s, const ev_out *o)
{
    const tm_classify_result *c = &o->main;
    tm_status st = tm_report_section(r, "Classification");
    const char *cols[] = {"rows", "accuracy", "top-5", "P macro", "R macro", "F1 macro",
                          "P weighted", "R weighted", "F1 weighted", "ECE", "NLL"};
    double v[] = {(double)c->n,          c->accuracy,        c->top_k_accuracy,
                  c->precision_macro,    c->recall_macro,    c->f1_macro,
                  c->precision_weighted, c->recall_weighted, c->f1_weighted,
                  c->ece,                c->nll};
    const char *rl[] = {"all rows, as given"};
    if (!st) st = tm_report_table_numbers(r, "Headline metrics", 11, cols, 1, "", rl, v, "%.4g");
    int C = c->n_classes;
    const char **names = malloc((size_t)C * sizeof *names);
    double *cm = malloc((size_t)(C * C) * sizeof *cm);
    double *pc = malloc((size_t)(C * 4) * sizeof *pc);
    if (!names || !cm || !pc) st = st ? st : tm_fail(TM_ERR_NOMEM, "out of memory");
    if (!st) {
        for (int i = 0; i < C; i++) {
            names[i] = s->class_label[i];
            pc[i * 4] = (double)c->support[i];
            pc[i * 4 + 1] = c->precision[i];
            pc[i * 4 + 2] = c->recall[i];
            pc[i * 4 + 3] = c->f1[i];
        }
        for (int i = 0; i < C * C; i++) cm[i] = (double)c->confusion[i];
        const char *pcols[] = {"support", "precision", "recall", "F1"};
        st = tm_report_table_numbers(r, "Per class", 4, pcols, C, "class", names, pc, "%.4g");
    }
    if (!st) {
        tm_plot_opts po = {0};
        po.title = "Confusion matrix";
        po.xlabel = "predicted";
        po.ylabel = "true";
        po.annotate = C <= 20;
        po.value_format = "%.0f";
        st = add_svg(r, "Confusion matrix (rows: true class, columns: prediction)",
                     tm_plot_heatmap_svg(cm, C, C, names, names, &po));
    }
    if (!st) {
        double diag[2] = {0, 1};
        tm_plot_series ser[2] = {{"perfect calibration", diag, diag, 2},
                                 {"model", c->bin_confidence, c->bin_accuracy,
                                  (size_t)c->ece_bins}};
        tm_plot_opts po = {0};
        po.title = "Calibration (reliability diagram)";
        po.xlabel = "confidence";
        po.ylabel = "accuracy";
        st = add_svg(r, "Calibration: accuracy of each confidence bin (empty bins left out)",
                     tm_plot_lines_svg(ser, 2, &po));
    }
    free(names);
    free(cm);
    free(pc);
    return st;
}

static tm_status report_ablation(tm_report *r, const ev_state *s, const ev_out *o)
{
    tm_status st = tm_report_section(r, "Modality ablation");
    if (!st)
        st = tm_report_paragraph(r, "The same metrics with modalities removed at test time "
                                    "(masked in fusion, never seen), on the rows that have "
                                    "every listed modality: the difference to the first row "
                                    "is what the removed modalities add.");
    const char *names[EV_MAX_SUBSETS];
    double v[EV_MAX_SUBSETS * (EV_ABL_COLS + 1)], acc[EV_MAX_SUBSETS];
    for (int k = 0; k < s->n_sub; k++) {
        names[k] = o->abl[k].name;
        v[k * (EV_ABL_COLS + 1)] = (double)o->abl[k].n;
        for (int j = 0; j < EV_ABL_COLS; j++) v[k * (EV_ABL_COLS + 1) + 1 + j] = o->abl[k].v[j];
        acc[k] = o->abl[k].v[0];
    }
    const char *cols[EV_ABL_COLS + 1] = {"rows", abl_cols[0], abl_cols[1], abl_cols[2],
                                         abl_cols[3], abl_cols[4]};
    if (!st)
        st = tm_report_table_numbers(r, "Ablation", EV_ABL_COLS + 1, cols, s->n_sub,
                                     "modalities", names, v, "%.4g");
    if (!st) {
        tm_plot_opts po = {0};
        po.title = "Accuracy by modality subset";
        po.ylabel = "accuracy";
        po.annotate = 1;
        const char *series[] = {"accuracy"};
        st = add_svg(r, "Accuracy by modality subset",
                     tm_plot_bars_svg(names, s->n_sub, series, 1, acc, &po));
    }
    return st;
}

static tm_status report_retrieval(tm_report *r, const ev_out *o)
{
    tm_status st = tm_report_section(r, "Retrieval");
    const char *names[EV_MAX_RET];
    double v[EV_MAX_RET * 7];
    for (int i = 0; i < o->n_ret; i++) {
        names[i] = o->ret[i].name;
        v[i * 7] = (double)o->ret[i].n;
        for (int j = 0; j < 6; j++) v[i * 7 + 1 + j] = o->ret[i].v[j];
    }
    const char *cols[7] = {"rows", ret_cols[0], ret_cols[1], ret_cols[2],
                           ret_cols[3], ret_cols[4], ret_cols[5]};
    if (!st)
        st = tm_report_table_numbers(r, "Retrieval (instance: the paired row is relevant; "
                                        "class: every row of the query's class)",
                                     7, cols, o->n_ret, "query -> candidates", names, v, "%.4g");
    tm_plot_series ser[EV_MAX_RET];
    int ns = 0;
    for (int i = 0; i < o->n_ret; i++)
        if (o->ret[i].curve) {
            ser[ns].name = o->ret[i].name;
            ser[ns].x = NULL;
            ser[ns].y = o->ret[i].curve;
            ser[ns].n = (size_t)o->ret[i].n_curve;
            ns++;
        }
    if (!st && ns) {
        tm_plot_opts po = {0};
        po.title = "Instance-level Recall@K (K = x + 1)";
        po.xlabel = "K - 1";
        po.ylabel = "recall";
        st = add_svg(r, "Retrieval curves: Recall@K for every K", tm_plot_lines_svg(ser, ns, &po));
    }
    return st;
}

static tm_status report_captions(tm_report *r, const ev_out *o)
{
    tm_status st = tm_report_section(r, o->asr ? "Speech recognition" : "Captions");
    const char *cols[6] = {"rows", "BLEU", "METEOR", "CIDEr-D", "WER", "CER"};
    double v[6] = {(double)o->cap_n, o->bleu, o->meteor, o->cider, o->wer, o->cer};
    const char *rl[1] = {o->asr ? "vs transcript" : "vs text"};
    if (!st) st = tm_report_table_numbers(r, "Greedy captions", 6, cols, 1, "", rl, v, "%.4g");
    const char *hdr[3] = {"example", "generated", "reference"};
    const char *cells[15];
    for (int i = 0; i < o->n_cap_show; i++) {
        cells[i * 3] = o->cap_id[i];
        cells[i * 3 + 1] = o->cap_hyp[i];
        cells[i * 3 + 2] = o->cap_ref[i];
    }
    if (!st && o->n_cap_show)
        st = tm_report_table(r, "First captions", 3, hdr, o->n_cap_show, cells);
    return st;
}

static tm_status report_bias(tm_report *r, const ev_out *o)
{
    tm_status st = tm_report_section(r, "Bias audit");
    for (int f = 0; f < o->n_bias && !st; f++) {
        const ev_bias_table *b = &o->bias[f];
        const char *names[EV_MAX_GROUP_ROWS];
        double v[EV_MAX_GROUP_ROWS * 3];
        for (int i = 0; i < b->n; i++) {
            names[i] = b->rows[i].group;
            v[i * 3] = (double)b->rows[i].n;
            v[i * 3 + 1] = b->rows[i].acc;
            v[i * 3 + 2] = b->rows[i].f1;
        }
        char cap[160];
        snprintf(cap, sizeof cap, "By %s: accuracy gap between best and worst group %.4f",
                 b->field, b->gap);
        const char *cols[3] = {"rows", "accuracy", "F1 macro"};
        st = tm_report_table_numbers(r, cap, 3, cols, b->n, b->field, names, v, "%.4g");
    }
    return st;
}

static tm_status report_examples(tm_report *r, const ev_state *s, const tm_manifest *man)
{
    tm_status st = tm_report_section(r, "Examples: attention and attribution");
    if (!st)
        st = tm_report_paragraph(
            r, "Attention: the fusion CLS query of the last early-fusion layer, averaged over "
               "heads, drawn over the image patches and along the spectrogram's time axis. "
               "Occlusion: the predicted class's probability minus its probability with the "
               "modality removed. Gradient x input: the derivative of the predicted class's "
               "logit along the input itself, (f((1+e)x) - f((1-e)x)) / 2e with e = 0.01 (a "
               "central difference equal to sum x * df/dx); text has no continuous input, so "
               "it has none.");
    if (!st && s->att_note[0]) st = tm_report_paragraph(r, s->att_note);
    int H = (int)s->info.image_h, W = (int)s->info.image_w, Cc = (int)s->info.image_channels;
    int nm = (int)s->info.n_mels, nf = (int)s->info.n_frames;
    for (int e = 0; e < s->n_ex && !st; e++) {
        const ev_example *ex = &s->ex[e];
        const tm_manifest_row *row = tm_manifest_row_at(man, s->rows[e]);
        char cap[256];
        if (ex->image && ex->att_vision && (row->present & TM_MODALITY_IMAGE)) {
            uint8_t *px = malloc((size_t)(H * W * 3));
            if (!px) return tm_fail(TM_ERR_NOMEM, "out of memory");
            st = tm_heatmap_overlay(px, ex->image, W, H, Cc, ex->att_vision, ex->grid, ex->grid,
                                    NULL);
            snprintf(cap, sizeof cap, "%s: fusion attention over the image", row->id);
            if (!st) st = tm_report_image(r, cap, px, W, H, 3, W < 128 ? 128 / W + 1 : 1);
            free(px);
        }
        if (!st && ex->mel && ex->att_audio && (row->present & TM_MODALITY_AUDIO)) {
            int strip = 4;
            uint8_t *px = malloc((size_t)((nm + strip) * nf * 3));
            if (!px) return tm_fail(TM_ERR_NOMEM, "out of memory");
            st = tm_spectrogram_heatstrip(px, ex->mel, nm, nf, ex->att_audio, ex->n_audio_tokens,
                                          strip, NULL);
            snprintf(cap, sizeof cap, "%s: fusion attention along the spectrogram (strip on top)",
                     row->id);
            if (!st) st = tm_report_image(r, cap, px, nf, nm + strip, 3, nf < 256 ? 256 / nf + 1 : 1);
            free(px);
        }
    }
    if (!st && s->C > 0) {
        int cols_n = 2 + 3 * s->M;
        const char *hdr[2 + 3 * TM_MODEL_MAX_MODALITIES];
        char hb[3 * TM_MODEL_MAX_MODALITIES][48];
        hdr[0] = "example";
        hdr[1] = "predicted (p)";
        for (int m = 0; m < s->M; m++) {
            snprintf(hb[3 * m], 48, "%s occlusion", s->info.modality[m]);
            snprintf(hb[3 * m + 1], 48, "%s grad x input", s->info.modality[m]);
            snprintf(hb[3 * m + 2], 48, "%s attention share", s->info.modality[m]);
            for (int j = 0; j < 3; j++) hdr[2 + 3 * m + j] = hb[3 * m + j];
        }
        char **cells = calloc((size_t)(s->n_ex * cols_n), sizeof *cells);
        if (!cells) return tm_fail(TM_ERR_NOMEM, "out of memory");
        for (int e = 0; e < s->n_ex; e++) {
            const ev_example *ex = &s->ex[e];
            char b[128];
            cells[e * cols_n] = strdup(tm_manifest_row_at(man, s->rows[e])->id);
            snprintf(b, sizeof b, "%s (%.3f)", s->class_label[ex->pred], ex->p_pred);
            cells[e * cols_n + 1] = strdup(b);
            for (int m = 0; m < s->M; m++) {
                double v3[3] = {ex->occ[m], ex->gxi[m], ex->att_share[m]};
                for (int j = 0; j < 3; j++) {
                    fmt(b, sizeof b, v3[j]);
                    cells[e * cols_n + 2 + 3 * m + j] = strdup(b);
                }
            }
        }
        st = tm_report_table(r, "Modality attribution", cols_n, hdr, s->n_ex,
                             (const char *const *)cells);
        for (int i = 0; i < s->n_ex * cols_n; i++) free(cells[i]);
        free(cells);
    }
    return st;
}

tm_status ev_build_report(tm_evaluation *e, const ev_state *s, const ev_out *o,
                          const tm_manifest *man, const tm_evaluate_options *opt)
{
    text_summary(&e->text, s, o, man, opt);
    tm_status st = tm_report_new(&e->report, opt->title ? opt->title : "trimodal eval");
    char buf[512];
    snprintf(buf, sizeof buf, "Model %s (modalities %s, fusion %s) on %s%s%s: %lld rows.",
             s->info.name ? s->info.name : "?", s->modality_list,
             s->info.fusion ? s->info.fusion : "none", tm_manifest_path(man),
             opt->split ? ", split " : "", opt->split ? opt->split : "", (long long)s->n);
    if (!st) st = tm_report_paragraph(e->report, buf);
    if (!st && o->has_main) st = report_classification(e->report, s, o);
    if (!st && o->has_main) st = report_ablation(e->report, s, o);
    if (!st && o->n_ret) st = report_retrieval(e->report, o);
    if (!st && o->has_captions) st = report_captions(e->report, o);
    if (!st && o->n_bias) st = report_bias(e->report, o);
    if (!st && s->n_ex) st = report_examples(e->report, s, man);
    return st;
}
