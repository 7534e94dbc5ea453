/* tm_evaluate's caption part: greedy captions of every row whose caption
 * context is present, scored against the row's "transcript" (speech
 * recognition: WER and CER too) or else its "text" (which is then removed
 * from the model's inputs, so the model never sees the reference). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluate_internal.h"

tm_status ev_captions(ev_state *s, ev_out *o, tm_model *model, const tm_tokenizer *tok,
                      const tm_preprocess_config *pre, const tm_manifest *man,
                      const tm_evaluate_options *opt)
{
    const char *ctx = s->info.caption_context ? s->info.caption_context : "fusion";
    int text_col = -1;
    for (int m = 0; m < s->M; m++)
        if (!strcmp(s->info.modality[m], "text")) text_col = m;
    int64_t n_tr = 0;
    for (int64_t i = 0; i < s->n; i++)
        if (tm_manifest_row_at(man, s->rows[i])->transcript) n_tr++;
    o->asr = n_tr > 0;
    if (!o->asr && !strcmp(ctx, "text")) {
        cJSON_AddStringToObject(o->root, "captions_note",
                                "the caption head reads text; its references would be the "
                                "inputs: give \"transcript\" fields to score it");
        return TM_OK;
    }
    if (s->info.caption_vocab > tm_tokenizer_vocab_size(tok)) {
        cJSON_AddStringToObject(o->root, "captions_note",
                                "the caption vocabulary is larger than tokenizer.json's: "
                                "captions cannot be decoded, not scored");
        return TM_OK;
    }
    tm_loader_config cfg = tm_loader_default_config();
    cfg.batch_size = s->B;
    cfg.text_tokens = s->info.text_tokens;
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
    int64_t T = s->info.caption_tokens - 1;
    char **hyp = calloc((size_t)s->n, sizeof *hyp);
    const char **ref = calloc((size_t)s->n, sizeof *ref);
    const char **hp = calloc((size_t)s->n, sizeof *hp);
    int32_t *ids = malloc((size_t)(s->B * (T > 0 ? T : 1)) * sizeof *ids);
    int32_t *len = malloc((size_t)s->B * sizeof *len);
    float *score = malloc((size_t)s->B * sizeof *score);
    tm_caption_sample *smp = calloc((size_t)s->n, sizeof *smp);
    tm_loader *ld = NULL;
    tm_model_captioner *cap = NULL;
    tm_status st = (!hyp || !ref || !hp || !ids || !len || !score || !smp)
                       ? tm_fail(TM_ERR_NOMEM, "out of memory")
                       : TM_OK;
    if (!st) st = tm_loader_new(&ld, man, &cfg);
    if (!st) st = tm_model_captioner_new(&cap, model, s->B, tm_caption_default_params());
    int64_t pos = 0, n_ok = 0;
    while (!st) {
        const tm_batch *b = NULL;
        if ((st = tm_loader_next(ld, &b)) || !b) break;
        tm_model_inputs in = tm_model_captioner_inputs(cap);
        int64_t B = b->capacity, M = s->M;
        if (in.tokens && b->tokens)
            memcpy(in.tokens, b->tokens, (size_t)(B * s->info.text_tokens) * sizeof(int32_t));
        if (in.image && b->image) memcpy(in.image, b->image, (size_t)(B * s->img_numel) * sizeof(float));
        if (in.mel && b->mel) memcpy(in.mel, b->mel, (size_t)(B * s->mel_numel) * sizeof(float));
        memcpy(in.present, b->present, (size_t)(B * M));
        if (!o->asr && text_col >= 0) /* the reference is the text: hide it */
            for (int64_t i = 0; i < B; i++) in.present[i * M + text_col] = 0;
        if ((st = tm_model_captioner_run(cap, ids, len, score))) break;
        for (int64_t i = 0; i < b->size && !st; i++) {
            const tm_manifest_row *r = tm_manifest_row_at(man, b->rows[i]);
            const char *rf = o->asr ? r->transcript : r->text;
            size_t hl = 0;
            if (!rf || isinf(score[i])) continue; /* no reference, or no context */
            if ((st = tm_tokenizer_decode(tok, ids + i * T, len[i], 1, &hyp[pos + i], &hl))) break;
            ref[n_ok] = rf;
            hp[n_ok] = hyp[pos + i];
            smp[n_ok].hypothesis = hyp[pos + i];
            smp[n_ok].references = &ref[n_ok];
            smp[n_ok].n_references = 1;
            if (o->n_cap_show < 5) {
                snprintf(o->cap_id[o->n_cap_show], 48, "%s", r->id);
                snprintf(o->cap_hyp[o->n_cap_show], 128, "%s", hyp[pos + i]);
                snprintf(o->cap_ref[o->n_cap_show], 128, "%s", rf);
                o->n_cap_show++;
            }
            n_ok++;
        }
        pos += b->size;
        if (opt->progress) opt->progress(opt->progress_ctx, "captioning", pos, s->n);
    }
    cJSON *cj = NULL;
    if (!st && n_ok == 0) {
        cJSON_AddStringToObject(o->root, "captions_note",
                                o->asr ? "no row has both a transcript and audio"
                                       : "no row has a text to compare captions with");
    } else if (!st) {
        tm_bleu_result br;
        tm_bleu_params bp = tm_bleu_default_params();
        tm_meteor_params mp = tm_meteor_default_params();
        tm_cider_params cp = tm_cider_default_params();
        st = tm_bleu(smp, n_ok, &bp, &br);
        if (!st) st = tm_meteor(smp, n_ok, &mp, &o->meteor, NULL);
        if (!st) st = tm_cider(smp, n_ok, &cp, &o->cider, NULL);
        o->bleu = br.bleu;
        o->wer = o->cer = NAN;
        if (!st && o->asr) {
            tm_edit_result w, c;
            st = tm_wer(hp, ref, n_ok, NULL, &w);
            if (!st) st = tm_cer(hp, ref, n_ok, NULL, &c);
            if (!st) o->wer = w.rate, o->cer = c.rate;
        }
        if (!st) {
            o->has_captions = 1;
            o->cap_n = n_ok;
            cj = cJSON_AddObjectToObject(o->root, "captions");
            cJSON_AddStringToObject(cj, "references", o->asr ? "transcript" : "text");
            cJSON_AddNumberToObject(cj, "n", (double)n_ok);
            cJSON_AddNumberToObject(cj, "bleu", o->bleu);
            cJSON_AddNumberToObject(cj, "meteor", o->meteor);
            cJSON_AddNumberToObject(cj, "cider", o->cider);
            if (o->asr) {
                cJSON_AddNumberToObject(cj, "wer", o->wer);
                cJSON_AddNumberToObject(cj, "cer", o->cer);
            }
        }
    }
    tm_model_captioner_free(cap);
    tm_loader_free(ld);
    for (int64_t i = 0; hyp && i < s->n; i++) tm_free(hyp[i]);
    free(hyp);
    free(ref);
    free(hp);
    free(ids);
    free(len);
    free(score);
    free(smp);
    return st;
}
