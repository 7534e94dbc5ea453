/* Loading tokenizers: Hugging Face tokenizer.json (the BPE model and the
 * parts around it that a byte-level BPE needs), and GPT-2 / CLIP
 * vocab.json + merges.txt. Every field is checked; a file never makes the
 * loader read out of bounds or recurse deeply (nesting is measured before
 * cJSON sees the text). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "text/bpe_internal.h"
#include "trimodal/io.h"

/* Reads a tokenizer file whole, up to the tokenizer_file_bytes limit
 * (trimodal/core.h); a larger file fails with a message naming the limit. */
static tm_status read_tokenizer_file(const char *path, char **buf, size_t *n)
{
    *buf = NULL;
    tm_status rc = tm_read_file(path, (size_t)tm_limit_get(TM_LIMIT_TOKENIZER_FILE_BYTES), buf, n);
    if (rc == TM_ERR_LIMIT)
        return tm_fail(rc, "%s (limit %s)", tm_last_error(),
                       tm_limit_hint(TM_LIMIT_TOKENIZER_FILE_BYTES));
    return rc;
}

/* Rejects nesting deeper than the tokenizer_json_depth limit before
 * parsing. */
static tm_status check_json(const char *s, size_t n, const char *where)
{
    int64_t depth = 0, max_depth = tm_limit_get(TM_LIMIT_TOKENIZER_JSON_DEPTH);
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = 0;
            continue;
        }
        if (c == '"') in_str = 1;
        else if (c == '[' || c == '{') {
            if (++depth > max_depth)
                return tm_fail(TM_ERR_LIMIT, "%s: JSON nested deeper than %lld levels (limit %s)",
                               where, (long long)max_depth,
                               tm_limit_hint(TM_LIMIT_TOKENIZER_JSON_DEPTH));
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return TM_OK;
}

static tm_status parse_json(const char *s, size_t n, const char *where, cJSON **out)
{
    *out = NULL;
    if (n > (size_t)tm_limit_get(TM_LIMIT_TOKENIZER_FILE_BYTES))
        return tm_fail(TM_ERR_LIMIT,
                       "%s: %zu bytes, over the %lld-byte limit for tokenizer files (limit %s)",
                       where, n, (long long)tm_limit_get(TM_LIMIT_TOKENIZER_FILE_BYTES),
                       tm_limit_hint(TM_LIMIT_TOKENIZER_FILE_BYTES));
    tm_status rc = check_json(s, n, where);
    if (rc) return rc;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    if (!j) {
        size_t at = end && end >= s && end <= s + n ? (size_t)(end - s) : 0;
        return tm_fail(TM_ERR_FORMAT, "%s: not valid JSON (error near byte %zu)", where, at);
    }
    /* only white space may follow the value */
    for (const char *p = end; p && p < s + n; p++) {
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t' && *p != 0) {
            cJSON_Delete(j);
            return tm_fail(TM_ERR_FORMAT, "%s: not valid JSON (text after the value at byte %zu)",
                           where, (size_t)(p - s));
        }
    }
    *out = j;
    return TM_OK;
}

/* A JSON number that is an integer in [0, TM_TOKENIZER_MAX_VOCAB). */
static tm_status get_id(const cJSON *v, const char *what, const char *key, const char *where,
                        int32_t *id)
{
    if (!cJSON_IsNumber(v))
        return tm_fail(TM_ERR_FORMAT, "%s: %s '%.60s' has a non-numeric id", where, what, key);
    double d = v->valuedouble;
    if (!(d >= 0) || d != floor(d))
        return tm_fail(TM_ERR_FORMAT, "%s: %s '%.60s' has id %g, not a non-negative integer",
                       where, what, key, d);
    if (d >= (double)tm_limit_get(TM_LIMIT_TOKENIZER_VOCAB))
        return tm_fail(TM_ERR_LIMIT,
                       "%s: %s '%.60s' has id %.0f, over the vocabulary limit %lld (limit %s)",
                       where, what, key, d, (long long)tm_limit_get(TM_LIMIT_TOKENIZER_VOCAB),
                       tm_limit_hint(TM_LIMIT_TOKENIZER_VOCAB));
    *id = (int32_t)d;
    return TM_OK;
}

static tm_status load_vocab_object(tm_tokenizer *t, const cJSON *vocab, const char *where)
{
    if (!cJSON_IsObject(vocab))
        return tm_fail(TM_ERR_FORMAT, "%s: the vocabulary is not a JSON object", where);
    if (cJSON_GetArraySize(vocab) > tm_limit_get(TM_LIMIT_TOKENIZER_VOCAB))
        return tm_fail(TM_ERR_LIMIT, "%s: %d tokens, over the vocabulary limit %lld (limit %s)",
                       where, cJSON_GetArraySize(vocab),
                       (long long)tm_limit_get(TM_LIMIT_TOKENIZER_VOCAB),
                       tm_limit_hint(TM_LIMIT_TOKENIZER_VOCAB));
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int32_t id;
        tm_status rc = get_id(e, "token", e->string, where, &id);
        if (!rc) rc = tmx_tok_set(t, id, e->string, strlen(e->string), TMX_TOK_VOCAB, where);
        if (rc) return rc;
    }
    return TM_OK;
}

static tm_status add_merge_line(tm_tokenizer *t, const char *s, size_t n, const char *where,
                                size_t line)
{
    const char *sp = memchr(s, ' ', n);
    if (!sp || sp == s || sp == s + n - 1 || memchr(sp + 1, ' ', (size_t)(s + n - sp - 1))) {
        if (line)
            return tm_fail(TM_ERR_FORMAT, "%s: line %zu: a merge is two tokens separated by one space, got '%.*s'",
                           where, line, (int)(n > 60 ? 60 : n), s);
        return tm_fail(TM_ERR_FORMAT, "%s: merge %zu: two tokens separated by one space, got '%.*s'",
                       where, t->merge_a.n + 1, (int)(n > 60 ? 60 : n), s);
    }
    if (tmx_utf8_valid_prefix((const uint8_t *)s, n) != n || memchr(s, 0, n)) {
        if (line) return tm_fail(TM_ERR_FORMAT, "%s: line %zu is not valid UTF-8 text", where, line);
        return tm_fail(TM_ERR_FORMAT, "%s: merge %zu is not valid UTF-8 text", where, t->merge_a.n + 1);
    }
    char msg[400];
    if (line) snprintf(msg, sizeof msg, "%s: line %zu", where, line);
    else snprintf(msg, sizeof msg, "%s", where);
    return tmx_tok_add_merge(t, s, (size_t)(sp - s), sp + 1, (size_t)(s + n - sp - 1), msg);
}

static tm_status load_merges_array(tm_tokenizer *t, const cJSON *merges, const char *where)
{
    if (!cJSON_IsArray(merges))
        return tm_fail(TM_ERR_FORMAT, "%s: model.merges is not an array", where);
    for (const cJSON *m = merges->child; m; m = m->next) {
        tm_status rc;
        if (cJSON_IsString(m)) {
            rc = add_merge_line(t, m->valuestring, strlen(m->valuestring), where, 0);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            const char *a = m->child->valuestring, *b = m->child->next->valuestring;
            rc = tmx_tok_add_merge(t, a, strlen(a), b, strlen(b), where);
        } else {
            rc = tm_fail(TM_ERR_FORMAT, "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", where,
                         t->merge_a.n + 1);
        }
        if (rc) return rc;
    }
    return TM_OK;
}

static const char *type_of(const cJSON *o)
{
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(ty) ? ty->valuestring : NULL;
}

static int is_true(const cJSON *o, const char *key, int dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return dflt;
}

static tm_status apply_normalizer(tm_tokenizer *t, const cJSON *n, const char *where, int depth)
{
    if (!n || cJSON_IsNull(n)) return TM_OK;
    const char *ty = cJSON_IsObject(n) ? type_of(n) : NULL;
    if (!ty) return tm_fail(TM_ERR_FORMAT, "%s: normalizer without a type", where);
    if (!strcmp(ty, "Lowercase")) {
        t->lowercase = 1;
    } else if (!strcmp(ty, "NFC")) {
        t->nfc = 1; /* taken as satisfied: see text.h */
    } else if (!strcmp(ty, "Replace")) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(p, "Regex");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(n, "content");
        if (!cJSON_IsString(re) || strcmp(re->valuestring, "\\s+") || !cJSON_IsString(c) ||
            strcmp(c->valuestring, " "))
            return tm_fail(TM_ERR_UNSUPPORTED, "%s: normalizer Replace is supported only for \\s+ -> \" \"",
                           where);
        t->collapse_ws = 1;
    } else if (!strcmp(ty, "Sequence") && depth == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list)) return tm_fail(TM_ERR_FORMAT, "%s: normalizer Sequence without a list", where);
        for (const cJSON *e = list->child; e; e = e->next) {
            tm_status rc = apply_normalizer(t, e, where, depth + 1);
            if (rc) return rc;
        }
    } else {
        return tm_fail(TM_ERR_UNSUPPORTED, "%s: normalizer '%.40s' is not supported (null, Lowercase, NFC, "
                       "Replace \\s+, Sequence)", where, ty);
    }
    return TM_OK;
}

static tm_status apply_split(tm_tokenizer *t, const cJSON *s, const char *where)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(s, "pattern");
    const cJSON *re = cJSON_GetObjectItemCaseSensitive(p, "Regex");
    const cJSON *str = cJSON_GetObjectItemCaseSensitive(p, "String");
    const cJSON *beh = cJSON_GetObjectItemCaseSensitive(s, "behavior");
    int invert = is_true(s, "invert", 0);
    if (!cJSON_IsString(beh)) return tm_fail(TM_ERR_FORMAT, "%s: Split without a behavior", where);
    if (!strcmp(beh->valuestring, "Isolated") && !invert) t->keep_gaps = 1;
    else if (!strcmp(beh->valuestring, "Removed") && invert) t->keep_gaps = 0;
    else
        return tm_fail(TM_ERR_UNSUPPORTED, "%s: Split behavior '%.30s' with invert %s is not supported "
                       "(Isolated, or Removed with invert)", where, beh->valuestring, invert ? "true" : "false");
    tm_status rc;
    if (cJSON_IsString(re)) {
        rc = tmx_tok_set_pattern(t, re->valuestring);
    } else if (cJSON_IsString(str) && str->valuestring[0] && !strstr(str->valuestring, "\\E")) {
        size_t n = strlen(str->valuestring);
        char *q = malloc(n + 5);
        if (!q) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", where);
        snprintf(q, n + 5, "\\Q%s\\E", str->valuestring);
        rc = tmx_tok_set_pattern(t, q);
        free(q);
    } else {
        return tm_fail(TM_ERR_FORMAT, "%s: Split without a usable pattern", where);
    }
    return rc ? tm_fail(TM_ERR_NOMEM, "%s: out of memory", where) : TM_OK;
}

static tm_status apply_pre_tokenizer(tm_tokenizer *t, const cJSON *pt, const char *where)
{
    const char *ty = cJSON_IsObject(pt) ? type_of(pt) : NULL;
    if (!pt || cJSON_IsNull(pt))
        return tm_fail(TM_ERR_UNSUPPORTED, "%s: no pre_tokenizer; only byte-level BPE (ByteLevel) is supported",
                       where);
    if (!ty) return tm_fail(TM_ERR_FORMAT, "%s: pre_tokenizer without a type", where);
    if (!strcmp(ty, "ByteLevel")) {
        t->add_prefix_space = is_true(pt, "add_prefix_space", 0);
        if (!is_true(pt, "use_regex", 1) && tmx_tok_set_pattern(t, NULL)) return TM_ERR_NOMEM;
        return TM_OK;
    }
    if (strcmp(ty, "Sequence"))
        return tm_fail(TM_ERR_UNSUPPORTED, "%s: pre_tokenizer '%.40s' is not supported (ByteLevel, or a "
                       "Sequence of Split and ByteLevel)", where, ty);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(pt, "pretokenizers");
    if (!cJSON_IsArray(list)) return tm_fail(TM_ERR_FORMAT, "%s: pre_tokenizer Sequence without a list", where);
    int n = cJSON_GetArraySize(list);
    const cJSON *first = list->child;
    const char *t0 = first && cJSON_IsObject(first) ? type_of(first) : NULL;
    if (n == 1 && t0 && !strcmp(t0, "ByteLevel")) return apply_pre_tokenizer(t, first, where);
    const cJSON *second = first ? first->next : NULL;
    const char *t1 = second && cJSON_IsObject(second) ? type_of(second) : NULL;
    if (n == 2 && t0 && t1 && !strcmp(t0, "Split") && !strcmp(t1, "ByteLevel") &&
        !is_true(second, "use_regex", 1)) {
        t->add_prefix_space = is_true(second, "add_prefix_space", 0);
        return apply_split(t, first, where);
    }
    return tm_fail(TM_ERR_UNSUPPORTED, "%s: this pre_tokenizer Sequence is not supported (only [ByteLevel] "
                   "or [Split, ByteLevel with use_regex false])", where);
}

static tm_status apply_roles(tm_tokenizer *t, const cJSON *root, const char *where)
{
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(root, "trimodal");
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(tm, "special_tokens");
    if (!sp) return TM_OK;
    if (!cJSON_IsObject(sp)) return tm_fail(TM_ERR_FORMAT, "%s: trimodal.special_tokens is not an object", where);
    for (int r = 0; r < TM_SPECIAL_COUNT; r++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(sp, tm_special_role_name((tm_special_role)r));
        if (!v || cJSON_IsNull(v)) continue;
        int32_t id = cJSON_IsString(v) ? tmx_tok_find(t, v->valuestring, strlen(v->valuestring)) : -1;
        if (id < 0)
            return tm_fail(TM_ERR_FORMAT, "%s: trimodal.special_tokens.%s is not a token of the vocabulary",
                           where, tm_special_role_name((tm_special_role)r));
        t->special[r] = id;
    }
    return TM_OK;
}

/* Roles by the usual names, among the tokens the file lists as added. */
static void guess_roles_added(tm_tokenizer *t)
{
    static const char *const names[TM_SPECIAL_COUNT][6] = {
        {"<pad>", "<|pad|>", "[PAD]", "<|padding|>", NULL},
        {"<s>", "<|startoftext|>", "<|begin_of_text|>", "<bos>", "[CLS]", NULL},
        {"</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "[SEP]", NULL},
        {"<cls>", "[CLS]", "<s>", NULL},
        {"<mask>", "[MASK]", "<|mask|>", NULL},
        {"<unk>", "[UNK]", "<|unk|>", NULL},
    };
    for (int r = 0; r < TM_SPECIAL_COUNT; r++) {
        if (t->special[r] >= 0) continue;
        if (r == TM_SPECIAL_UNK && t->unk_token) {
            t->special[r] = tmx_tok_find(t, t->unk_token, strlen(t->unk_token));
            if (t->special[r] >= 0) continue;
        }
        for (int k = 0; names[r][k]; k++) {
            int32_t id = tmx_tok_find(t, names[r][k], strlen(names[r][k]));
            if (id >= 0 && (t->flags[id] & TMX_TOK_ADDED)) {
                t->special[r] = id;
                break;
            }
        }
    }
}

static tm_status load_hf(tm_tokenizer **out, const char *data, size_t size, const char *where)
{
    *out = NULL;
    cJSON *root;
    tm_status rc = parse_json(data, size, where, &root);
    if (rc) return rc;
    tm_tokenizer *t = NULL;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(model)) {
        rc = tm_fail(TM_ERR_FORMAT, "%s: not a tokenizer.json (no \"model\" object)", where);
        goto done;
    }
    const char *ty = type_of(model);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (ty && strcmp(ty, "BPE")) {
        rc = tm_fail(TM_ERR_UNSUPPORTED, "%s: model type '%.40s' is not supported; only BPE models load",
                     where, ty);
        goto done;
    }
    if (!ty && !(vocab && merges)) {
        rc = tm_fail(TM_ERR_UNSUPPORTED, "%s: the model has no type and is not BPE (no vocab and merges)", where);
        goto done;
    }
    if (!vocab || !merges) {
        rc = tm_fail(TM_ERR_FORMAT, "%s: model.%s is missing", where, vocab ? "merges" : "vocab");
        goto done;
    }
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble != 0) {
        rc = tm_fail(TM_ERR_UNSUPPORTED, "%s: BPE dropout (%g) is not supported", where, dropout->valuedouble);
        goto done;
    }
    const cJSON *csp = cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix");
    if (cJSON_IsString(csp) && csp->valuestring[0]) {
        rc = tm_fail(TM_ERR_UNSUPPORTED, "%s: continuing_subword_prefix is not supported", where);
        goto done;
    }
    if (is_true(model, "byte_fallback", 0)) {
        rc = tm_fail(TM_ERR_UNSUPPORTED, "%s: byte_fallback is not supported (only byte-level BPE)", where);
        goto done;
    }
    if ((rc = tmx_tok_new(&t))) goto done;
    const cJSON *eow = cJSON_GetObjectItemCaseSensitive(model, "end_of_word_suffix");
    if (cJSON_IsString(eow) && eow->valuestring[0]) {
        if (strlen(eow->valuestring) > 64) {
            rc = tm_fail(TM_ERR_LIMIT, "%s: end_of_word_suffix longer than 64 bytes", where);
            goto done;
        }
        if (tmx_tok_set_eow(t, eow->valuestring)) {
            rc = tm_fail(TM_ERR_NOMEM, "%s: out of memory", where);
            goto done;
        }
    }
    t->ignore_merges = is_true(model, "ignore_merges", 0);
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (cJSON_IsString(unk) && !(t->unk_token = tmx_strdup(unk->valuestring))) {
        rc = tm_fail(TM_ERR_NOMEM, "%s: out of memory", where);
        goto done;
    }
    if ((rc = load_vocab_object(t, vocab, where))) goto done;
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsNull(added)) {
        if (!cJSON_IsArray(added)) {
            rc = tm_fail(TM_ERR_FORMAT, "%s: added_tokens is not an array", where);
            goto done;
        }
        for (const cJSON *a = added->child; a; a = a->next) {
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(a, "content");
            if (!cJSON_IsObject(a) || !cJSON_IsString(content)) {
                rc = tm_fail(TM_ERR_FORMAT, "%s: an added token without a content string", where);
                goto done;
            }
            int32_t id;
            if ((rc = get_id(cJSON_GetObjectItemCaseSensitive(a, "id"), "added token",
                             content->valuestring, where, &id)))
                goto done;
            int32_t have = tmx_tok_find(t, content->valuestring, strlen(content->valuestring));
            if (have >= 0 && have != id) {
                rc = tm_fail(TM_ERR_FORMAT, "%s: added token '%.60s' has id %ld but the vocabulary says %ld",
                             where, content->valuestring, (long)id, (long)have);
                goto done;
            }
            int fl = TMX_TOK_ADDED | (is_true(a, "special", 0) ? TMX_TOK_SPECIAL : 0);
            if ((rc = tmx_tok_set(t, id, content->valuestring, strlen(content->valuestring), fl, where)))
                goto done;
        }
    }
    if ((rc = load_merges_array(t, merges, where))) goto done;
    if ((rc = apply_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), where, 0)))
        goto done;
    if ((rc = apply_pre_tokenizer(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), where)))
        goto done;
    if ((rc = apply_roles(t, root, where))) goto done;
    guess_roles_added(t);
    rc = tmx_tok_finish(t, where);
done:
    cJSON_Delete(root);
    if (rc) {
        tm_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return TM_OK;
}

tm_status tm_tokenizer_load_json_memory(tm_tokenizer **out, const void *data, size_t size)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "load: out is NULL");
    *out = NULL;
    if (!data && size) return tm_fail(TM_ERR_INVALID, "load: data is NULL");
    return load_hf(out, data ? data : "", size, "<memory>");
}

tm_status tm_tokenizer_load_json(tm_tokenizer **out, const char *path)
{
    if (!out || !path) return tm_fail(TM_ERR_INVALID, "load: NULL argument");
    *out = NULL;
    char *buf;
    size_t n;
    tm_status rc = read_tokenizer_file(path, &buf, &n);
    if (rc) return rc;
    rc = load_hf(out, buf, n, path);
    free(buf);
    return rc;
}

static tm_status load_pair(tm_tokenizer **out, const char *vocab, size_t vn, const char *merges,
                           size_t mn, tm_bpe_style style, const char *vwhere, const char *mwhere)
{
    *out = NULL;
    if (mn > (size_t)tm_limit_get(TM_LIMIT_TOKENIZER_FILE_BYTES))
        return tm_fail(TM_ERR_LIMIT, "%s: over the %lld-byte limit for tokenizer files (limit %s)",
                       mwhere, (long long)tm_limit_get(TM_LIMIT_TOKENIZER_FILE_BYTES),
                       tm_limit_hint(TM_LIMIT_TOKENIZER_FILE_BYTES));
    if ((unsigned)style > TM_BPE_CLIP) return tm_fail(TM_ERR_INVALID, "load: unknown style %d", (int)style);
    cJSON *root;
    tm_status rc = parse_json(vocab, vn, vwhere, &root);
    if (rc) return rc;
    tm_tokenizer *t = NULL;
    if ((rc = tmx_tok_new(&t))) goto done;
    if ((rc = load_vocab_object(t, root, vwhere))) goto done;
    if (style == TM_BPE_AUTO) {
        style = TM_BPE_GPT2;
        for (const cJSON *e = root->child; e; e = e->next) {
            size_t l = strlen(e->string);
            if (l >= 4 && !strcmp(e->string + l - 4, "</w>")) {
                style = TM_BPE_CLIP;
                break;
            }
        }
    }
    if (style == TM_BPE_CLIP) {
        if (tmx_tok_set_eow(t, "</w>") || tmx_tok_set_pattern(t, tmx_clip_pattern)) {
            rc = tm_fail(TM_ERR_NOMEM, "%s: out of memory", vwhere);
            goto done;
        }
        t->lowercase = 1;
        t->collapse_ws = 1;
        t->keep_gaps = 0;
    }
    size_t line = 0;
    for (size_t i = 0; i < mn;) {
        const char *s = merges + i;
        const char *nl = memchr(s, '\n', mn - i);
        size_t len = nl ? (size_t)(nl - s) : mn - i;
        i += len + 1;
        line++;
        if (len && s[len - 1] == '\r') len--;
        if (len == 0 || (len >= 8 && !memcmp(s, "#version", 8))) continue;
        if ((rc = add_merge_line(t, s, len, mwhere, line))) goto done;
    }
    const char *bos = style == TM_BPE_CLIP ? "<|startoftext|>" : "<|endoftext|>";
    int32_t b = tmx_tok_find(t, bos, strlen(bos));
    int32_t e = tmx_tok_find(t, "<|endoftext|>", 13);
    t->special[TM_SPECIAL_BOS] = b;
    t->special[TM_SPECIAL_EOS] = e;
    t->special[TM_SPECIAL_UNK] = e;
    if (style == TM_BPE_CLIP) t->special[TM_SPECIAL_PAD] = e;
    rc = tmx_tok_finish(t, vwhere);
done:
    cJSON_Delete(root);
    if (rc) {
        tm_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return TM_OK;
}

tm_status tm_tokenizer_load_vocab_merges_memory(tm_tokenizer **out, const void *vocab,
                                                size_t vocab_size, const void *merges,
                                                size_t merges_size, tm_bpe_style style)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "load: out is NULL");
    *out = NULL;
    if ((!vocab && vocab_size) || (!merges && merges_size))
        return tm_fail(TM_ERR_INVALID, "load: NULL buffer");
    return load_pair(out, vocab ? vocab : "", vocab_size, merges ? merges : "", merges_size, style,
                     "<memory vocab>", "<memory merges>");
}

tm_status tm_tokenizer_load_vocab_merges(tm_tokenizer **out, const char *vocab_path,
                                         const char *merges_path, tm_bpe_style style)
{
    if (!out || !vocab_path || !merges_path) return tm_fail(TM_ERR_INVALID, "load: NULL argument");
    *out = NULL;
    char *v = NULL, *m = NULL;
    size_t vn, mn;
    tm_status rc = read_tokenizer_file(vocab_path, &v, &vn);
    if (!rc) rc = read_tokenizer_file(merges_path, &m, &mn);
    if (!rc) rc = load_pair(out, v, vn, m, mn, style, vocab_path, merges_path);
    free(v);
    free(m);
    return rc;
}

tm_status tm_tokenizer_load(tm_tokenizer **out, const char *path)
{
    if (!out || !path) return tm_fail(TM_ERR_INVALID, "load: NULL argument");
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return tm_fail(TM_ERR_IO, "%s: no such file or folder", path);
    if (!S_ISDIR(sb.st_mode)) return tm_tokenizer_load_json(out, path);
    size_t n = strlen(path) + 32;
    char *a = malloc(n), *b = malloc(n);
    if (!a || !b) {
        free(a), free(b);
        return tm_fail(TM_ERR_NOMEM, "out of memory");
    }
    tm_status rc;
    snprintf(a, n, "%s/tokenizer.json", path);
    if (stat(a, &sb) == 0) {
        rc = tm_tokenizer_load_json(out, a);
    } else {
        snprintf(a, n, "%s/vocab.json", path);
        snprintf(b, n, "%s/merges.txt", path);
        if (stat(a, &sb) != 0 || stat(b, &sb) != 0)
            rc = tm_fail(TM_ERR_IO, "%s: holds neither tokenizer.json nor vocab.json + merges.txt", path);
        else
            rc = tm_tokenizer_load_vocab_merges(out, a, b, TM_BPE_AUTO);
    }
    free(a), free(b);
    return rc;
}
