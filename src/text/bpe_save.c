/* Saving a tokenizer as a Hugging Face tokenizer.json: the BPE model, the
 * added tokens, and the normaliser and pre-tokeniser that reproduce ours,
 * plus a "trimodal" section (ignored by HF) naming the special roles. */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "text/bpe_internal.h"
#include "trimodal/io.h"

static cJSON *byte_level(int add_prefix_space, int use_regex)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "ByteLevel");
    cJSON_AddBoolToObject(o, "add_prefix_space", add_prefix_space);
    cJSON_AddBoolToObject(o, "trim_offsets", 1);
    cJSON_AddBoolToObject(o, "use_regex", use_regex);
    return o;
}

static cJSON *normalizer(const tm_tokenizer *t)
{
    cJSON *parts[3];
    int n = 0;
    if (t->nfc) {
        parts[n] = cJSON_CreateObject();
        cJSON_AddStringToObject(parts[n++], "type", "NFC");
    }
    if (t->collapse_ws) {
        cJSON *r = parts[n++] = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "type", "Replace");
        cJSON *p = cJSON_AddObjectToObject(r, "pattern");
        cJSON_AddStringToObject(p, "Regex", "\\s+");
        cJSON_AddStringToObject(r, "content", " ");
    }
    if (t->lowercase) {
        parts[n] = cJSON_CreateObject();
        cJSON_AddStringToObject(parts[n++], "type", "Lowercase");
    }
    if (n == 0) return cJSON_CreateNull();
    if (n == 1) return parts[0];
    cJSON *seq = cJSON_CreateObject();
    cJSON_AddStringToObject(seq, "type", "Sequence");
    cJSON *list = cJSON_AddArrayToObject(seq, "normalizers");
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(list, parts[i]);
    return seq;
}

static cJSON *pre_tokenizer(const tm_tokenizer *t)
{
    if (!t->pattern) return byte_level(t->add_prefix_space, 0);
    if (t->keep_gaps && !strcmp(t->pattern, tmx_gpt2_pattern))
        return byte_level(t->add_prefix_space, 1);
    cJSON *seq = cJSON_CreateObject();
    cJSON_AddStringToObject(seq, "type", "Sequence");
    cJSON *list = cJSON_AddArrayToObject(seq, "pretokenizers");
    cJSON *split = cJSON_CreateObject();
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON *p = cJSON_AddObjectToObject(split, "pattern");
    cJSON_AddStringToObject(p, "Regex", t->pattern);
    cJSON_AddStringToObject(split, "behavior", t->keep_gaps ? "Isolated" : "Removed");
    cJSON_AddBoolToObject(split, "invert", !t->keep_gaps);
    cJSON_AddItemToArray(list, split);
    cJSON_AddItemToArray(list, byte_level(t->add_prefix_space, 0));
    return seq;
}

static cJSON *build(const tm_tokenizer *t)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (size_t i = 0; i < t->added.n; i++) {
        int32_t id = t->added.v[i];
        int special = (t->flags[id] & TMX_TOK_SPECIAL) != 0;
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", id);
        cJSON_AddStringToObject(a, "content", t->strs.data + t->str_off[id]);
        cJSON_AddBoolToObject(a, "single_word", 0);
        cJSON_AddBoolToObject(a, "lstrip", 0);
        cJSON_AddBoolToObject(a, "rstrip", 0);
        cJSON_AddBoolToObject(a, "normalized", !special);
        cJSON_AddBoolToObject(a, "special", special);
        cJSON_AddItemToArray(added, a);
    }
    cJSON_AddItemToObject(root, "normalizer", normalizer(t));
    cJSON_AddItemToObject(root, "pre_tokenizer", pre_tokenizer(t));
    cJSON_AddNullToObject(root, "post_processor");
    cJSON_AddItemToObject(root, "decoder", byte_level(1, 1));
    cJSON *m = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(m, "type", "BPE");
    cJSON_AddNullToObject(m, "dropout");
    const char *unk = t->unk_token;
    if (!unk && t->special[TM_SPECIAL_UNK] >= 0) unk = t->strs.data + t->str_off[t->special[TM_SPECIAL_UNK]];
    if (unk) cJSON_AddStringToObject(m, "unk_token", unk);
    else cJSON_AddNullToObject(m, "unk_token");
    cJSON_AddNullToObject(m, "continuing_subword_prefix");
    if (t->eow) cJSON_AddStringToObject(m, "end_of_word_suffix", t->eow);
    else cJSON_AddNullToObject(m, "end_of_word_suffix");
    cJSON_AddBoolToObject(m, "fuse_unk", 0);
    cJSON_AddBoolToObject(m, "byte_fallback", 0);
    cJSON_AddBoolToObject(m, "ignore_merges", t->ignore_merges);
    cJSON *vocab = cJSON_AddObjectToObject(m, "vocab");
    int spaces = 0;
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (!(t->flags[id] & TMX_TOK_VOCAB)) continue;
        const char *s = t->strs.data + t->str_off[id];
        cJSON_AddNumberToObject(vocab, s, id);
        if (strchr(s, ' ')) spaces = 1;
    }
    cJSON *merges = cJSON_AddArrayToObject(m, "merges");
    for (size_t r = 0; r < t->merge_a.n; r++) {
        const char *a = t->strs.data + t->str_off[t->merge_a.v[r]];
        const char *b = t->strs.data + t->str_off[t->merge_b.v[r]];
        if (spaces) { /* tokens with spaces need the pair form */
            cJSON *pair = cJSON_CreateArray();
            cJSON_AddItemToArray(pair, cJSON_CreateString(a));
            cJSON_AddItemToArray(pair, cJSON_CreateString(b));
            cJSON_AddItemToArray(merges, pair);
        } else {
            size_t la = strlen(a), lb = strlen(b);
            char *s = malloc(la + lb + 2);
            if (!s) {
                cJSON_Delete(root);
                return NULL;
            }
            memcpy(s, a, la);
            s[la] = ' ';
            memcpy(s + la + 1, b, lb + 1);
            cJSON_AddItemToArray(merges, cJSON_CreateString(s));
            free(s);
        }
    }
    cJSON *tm = cJSON_AddObjectToObject(root, "trimodal");
    cJSON *sp = cJSON_AddObjectToObject(tm, "special_tokens");
    for (int r = 0; r < TM_SPECIAL_COUNT; r++) {
        const char *name = tm_special_role_name((tm_special_role)r);
        if (t->special[r] >= 0) cJSON_AddStringToObject(sp, name, t->strs.data + t->str_off[t->special[r]]);
        else cJSON_AddNullToObject(sp, name);
    }
    return root;
}

tm_status tm_tokenizer_to_json(const tm_tokenizer *t, char **out, size_t *len)
{
    if (!out || !t) return tm_fail(TM_ERR_INVALID, "to_json: NULL argument");
    *out = NULL;
    if (len) *len = 0;
    cJSON *root = build(t);
    char *s = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!s) return tm_fail(TM_ERR_NOMEM, "to_json: out of memory");
    size_t n = strlen(s);
    char *buf = tm_alloc(n + 2);
    if (!buf) {
        free(s);
        return tm_fail(TM_ERR_NOMEM, "to_json: out of memory");
    }
    memcpy(buf, s, n);
    buf[n++] = '\n';
    buf[n] = 0;
    free(s);
    *out = buf;
    if (len) *len = n;
    return TM_OK;
}

tm_status tm_tokenizer_save(const tm_tokenizer *t, const char *path)
{
    if (!t || !path) return tm_fail(TM_ERR_INVALID, "save: NULL argument");
    char *s;
    size_t n;
    tm_status rc = tm_tokenizer_to_json(t, &s, &n);
    if (rc) return rc;
    rc = tm_write_file_atomic(path, s, n);
    tm_free(s);
    return rc;
}
