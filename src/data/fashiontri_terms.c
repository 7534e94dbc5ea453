/* The FashionTri hint vocabulary: configs/fashion-tri/terms.json (made by
 * scripts/fashiontri_terms.sh from WordNet) read and checked, and the
 * sentences built from it.
 *
 * Why the strict character set: sentences become command-line arguments of
 * the speech engines and strings in a festival script. No shell is ever
 * involved, but a term starting with '-' would read as an option, and a
 * quote would end a Scheme string; the builder refuses such files instead of
 * escaping its way around them. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fashiontri_internal.h"
#include "trimodal/io.h"

#define MAX_TERMS_BYTES ((size_t)1 << 20)
#define MAX_TERMS 64 /* per class or group */
#define MAX_GROUPS 32
#define MAX_PHRASE 96 /* bytes of a term, noun phrase or template */

static const char *number_names[FT_NUMBER_COUNT] = {"singular", "plural", "mass"};

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = tm_alloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Letters, digits, spaces and . , ' - ! ?; not empty, no leading '-' or
 * space, at most MAX_PHRASE bytes. */
static int phrase_ok(const char *s, int allow_braces)
{
    size_t n = strlen(s);
    if (n == 0 || n > MAX_PHRASE || s[0] == '-' || s[0] == ' ') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || c == ' ' || c == '.' || c == ',' || c == '\'' || c == '-' || c == '!' ||
            c == '?')
            continue;
        if (allow_braces && (c == '{' || c == '}')) continue;
        return 0;
    }
    return 1;
}

typedef struct {
    const char *name;
    char where[160];
} ctx;

static tm_status bad(const ctx *c, const char *what)
{
    return tm_fail(TM_ERR_INVALID, "%s: %s: %s", c->name, c->where, what);
}

static tm_status parse_terms(ctx *c, const cJSON *arr, ft_term **out, int *n_out)
{
    if (!cJSON_IsArray(arr)) return bad(c, "\"terms\" must be an array");
    int n = cJSON_GetArraySize(arr);
    if (n < 1 || n > MAX_TERMS) return bad(c, "needs 1 to 64 terms");
    ft_term *terms = tm_calloc((size_t)n, sizeof *terms);
    if (!terms) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", c->name);
    *out = terms;
    *n_out = n;
    size_t base = strlen(c->where);
    for (int i = 0; i < n; i++) {
        const cJSON *t = cJSON_GetArrayItem(arr, i);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(t, "text");
        const cJSON *np = cJSON_GetObjectItemCaseSensitive(t, "np");
        const cJSON *num = cJSON_GetObjectItemCaseSensitive(t, "number");
        snprintf(c->where + base, sizeof c->where - base, ", term %d", i);
        if (!cJSON_IsObject(t)) return bad(c, "must be an object");
        if (!cJSON_IsString(text) || !phrase_ok(text->valuestring, 0))
            return bad(c, "\"text\" must be 1 to 96 letters, digits, spaces or . , ' - ! ? "
                          "(not starting with - or a space)");
        snprintf(c->where + base, sizeof c->where - base, ", term \"%s\"", text->valuestring);
        if (!cJSON_IsString(np) || !phrase_ok(np->valuestring, 0))
            return bad(c, "\"np\" must be 1 to 96 letters, digits, spaces or . , ' - ! ?");
        int k = -1;
        for (int j = 0; j < FT_NUMBER_COUNT && cJSON_IsString(num); j++)
            if (!strcmp(num->valuestring, number_names[j])) k = j;
        if (k < 0) return bad(c, "\"number\" must be \"singular\", \"plural\" or \"mass\"");
        terms[i].number = (ft_number)k;
        if (!(terms[i].text = dup_str(text->valuestring)) ||
            !(terms[i].np = dup_str(np->valuestring)))
            return tm_fail(TM_ERR_NOMEM, "%s: out of memory", c->name);
    }
    c->where[base] = 0;
    return TM_OK;
}

static int count_sub(const char *s, const char *sub)
{
    int n = 0;
    for (const char *p = strstr(s, sub); p; p = strstr(p + 1, sub))
        n++;
    return n;
}

tm_status ft_terms_parse(ft_terms *t, const char *json, size_t len, const char *name)
{
    memset(t, 0, sizeof *t);
    ctx c = {name, ""};
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return tm_fail(TM_ERR_FORMAT, "%s: not valid JSON", name);
    tm_status s = TM_OK;
    t->file_hash = ft_fnv1a(FT_FNV_OFFSET, json, len);

    const cJSON *classes = cJSON_GetObjectItemCaseSensitive(root, "classes");
    const cJSON *templates = cJSON_GetObjectItemCaseSensitive(root, "templates");
    const cJSON *specific = cJSON_GetObjectItemCaseSensitive(root, "specific");
    const cJSON *ambiguous = cJSON_GetObjectItemCaseSensitive(root, "ambiguous");
    snprintf(c.where, sizeof c.where, "\"classes\"");
    if (!cJSON_IsArray(classes) || cJSON_GetArraySize(classes) != FT_CLASSES) {
        s = bad(&c, "must be an array of the 10 Fashion-MNIST class names");
        goto done;
    }
    for (int i = 0; i < FT_CLASSES; i++) {
        const cJSON *v = cJSON_GetArrayItem(classes, i);
        if (!cJSON_IsString(v) || !*v->valuestring || strlen(v->valuestring) > MAX_PHRASE) {
            s = bad(&c, "each class name must be a non-empty string");
            goto done;
        }
        if (!(t->class_names[i] = dup_str(v->valuestring))) {
            s = tm_fail(TM_ERR_NOMEM, "%s: out of memory", name);
            goto done;
        }
    }

    snprintf(c.where, sizeof c.where, "\"templates\"");
    int nt = cJSON_GetArraySize(templates);
    if (!cJSON_IsArray(templates) || nt < 1 || nt > FT_MAX_TEMPLATES) {
        s = bad(&c, "must be an array of 1 to 16 templates");
        goto done;
    }
    for (int i = 0; i < nt; i++) {
        const cJSON *tp = cJSON_GetArrayItem(templates, i);
        for (int k = 0; k < FT_NUMBER_COUNT; k++) {
            snprintf(c.where, sizeof c.where, "template %d, \"%s\"", i, number_names[k]);
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(tp, number_names[k]);
            if (!cJSON_IsString(v) || !phrase_ok(v->valuestring, 1)) {
                s = bad(&c, "must be a string of letters, digits, spaces, . , ' - ! ? and one "
                            "{np} or {NP}");
                goto done;
            }
            if (count_sub(v->valuestring, "{np}") + count_sub(v->valuestring, "{NP}") != 1 ||
                count_sub(v->valuestring, "{") != 1) {
                s = bad(&c, "must hold exactly one {np} or {NP} and no other braces");
                goto done;
            }
            if (!(t->templates[i][k] = dup_str(v->valuestring))) {
                s = tm_fail(TM_ERR_NOMEM, "%s: out of memory", name);
                goto done;
            }
        }
    }
    t->n_templates = nt;

    snprintf(c.where, sizeof c.where, "\"specific\"");
    if (!cJSON_IsArray(specific) || cJSON_GetArraySize(specific) != FT_CLASSES) {
        s = bad(&c, "must be an array of 10 entries, one per class");
        goto done;
    }
    for (int i = 0; i < FT_CLASSES; i++) {
        const cJSON *e = cJSON_GetArrayItem(specific, i);
        const cJSON *cl = cJSON_GetObjectItemCaseSensitive(e, "class");
        snprintf(c.where, sizeof c.where, "\"specific\" entry %d", i);
        if (!cJSON_IsNumber(cl) || cl->valuedouble != i) {
            s = bad(&c, "\"class\" must be the entry's position (0 to 9, in order)");
            goto done;
        }
        s = parse_terms(&c, cJSON_GetObjectItemCaseSensitive(e, "terms"), &t->specific[i],
                        &t->n_specific[i]);
        if (s != TM_OK) goto done;
    }

    snprintf(c.where, sizeof c.where, "\"ambiguous\"");
    int ng = cJSON_GetArraySize(ambiguous);
    if (!cJSON_IsArray(ambiguous) || ng < 1 || ng > MAX_GROUPS) {
        s = bad(&c, "must be an array of 1 to 32 groups");
        goto done;
    }
    t->groups = tm_calloc((size_t)ng, sizeof *t->groups);
    if (!t->groups) {
        s = tm_fail(TM_ERR_NOMEM, "%s: out of memory", name);
        goto done;
    }
    t->n_groups = ng;
    for (int g = 0; g < ng; g++) {
        const cJSON *e = cJSON_GetArrayItem(ambiguous, g);
        const cJSON *gname = cJSON_GetObjectItemCaseSensitive(e, "group");
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(e, "classes");
        snprintf(c.where, sizeof c.where, "\"ambiguous\" group %d", g);
        if (!cJSON_IsString(gname) || !*gname->valuestring ||
            strlen(gname->valuestring) > MAX_PHRASE) {
            s = bad(&c, "\"group\" must be a non-empty name");
            goto done;
        }
        snprintf(c.where, sizeof c.where, "group \"%s\"", gname->valuestring);
        int nc = cJSON_GetArraySize(cls);
        if (!cJSON_IsArray(cls) || nc < 2) {
            s = bad(&c, "\"classes\" must list at least two classes (an ambiguous term fits "
                        "several)");
            goto done;
        }
        for (int k = 0; k < nc; k++) {
            const cJSON *v = cJSON_GetArrayItem(cls, k);
            if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9 ||
                v->valuedouble != (int)v->valuedouble) {
                s = bad(&c, "\"classes\" must hold class numbers 0 to 9");
                goto done;
            }
            t->groups[g].classes |= 1u << (int)v->valuedouble;
        }
        if (!(t->groups[g].name = dup_str(gname->valuestring))) {
            s = tm_fail(TM_ERR_NOMEM, "%s: out of memory", name);
            goto done;
        }
        s = parse_terms(&c, cJSON_GetObjectItemCaseSensitive(e, "terms"), &t->groups[g].terms,
                        &t->groups[g].n_terms);
        if (s != TM_OK) goto done;
    }
    for (int i = 0; i < FT_CLASSES; i++) {
        int any = 0;
        for (int g = 0; g < ng; g++)
            any |= (t->groups[g].classes >> i) & 1;
        if (!any) {
            s = tm_fail(TM_ERR_INVALID,
                        "%s: class %d (%s) is in no ambiguous group; every class "
                        "needs one, since 60%% of its hints are ambiguous",
                        name, i, t->class_names[i]);
            goto done;
        }
    }
done:
    cJSON_Delete(root);
    if (s != TM_OK) ft_terms_free(t);
    return s;
}

tm_status ft_terms_load(ft_terms *t, const char *path)
{
    memset(t, 0, sizeof *t);
    char *buf = NULL;
    size_t n = 0;
    tm_status s = tm_read_file(path, MAX_TERMS_BYTES, &buf, &n);
    if (s != TM_OK) return s;
    s = ft_terms_parse(t, buf, n, path);
    tm_free(buf);
    return s;
}

static void free_terms(ft_term *terms, int n)
{
    if (!terms) return;
    for (int i = 0; i < n; i++) {
        tm_free(terms[i].text);
        tm_free(terms[i].np);
    }
    tm_free(terms);
}

void ft_terms_free(ft_terms *t)
{
    if (!t) return;
    for (int i = 0; i < FT_CLASSES; i++) {
        tm_free(t->class_names[i]);
        free_terms(t->specific[i], t->n_specific[i]);
    }
    for (int g = 0; g < t->n_groups; g++) {
        tm_free(t->groups[g].name);
        free_terms(t->groups[g].terms, t->groups[g].n_terms);
    }
    tm_free(t->groups);
    for (int i = 0; i < FT_MAX_TEMPLATES; i++)
        for (int k = 0; k < FT_NUMBER_COUNT; k++)
            tm_free(t->templates[i][k]);
    memset(t, 0, sizeof *t);
}

tm_status ft_sentence(char *out, size_t size, const ft_terms *t, int k, const ft_term *term)
{
    if (k < 0 || k >= t->n_templates || !term)
        return tm_fail(TM_ERR_INVALID, "ft_sentence: template %d of %d", k, t->n_templates);
    const char *tp = t->templates[k][term->number];
    const char *at = strchr(tp, '{');
    size_t pre = (size_t)(at - tp), np = strlen(term->np), post = strlen(at + 4);
    if (pre + np + post + 1 > size)
        return tm_fail(TM_ERR_LIMIT, "ft_sentence: \"%s\" around \"%s\" is too long", tp, term->np);
    memcpy(out, tp, pre);
    memcpy(out + pre, term->np, np);
    if (at[1] == 'N') out[pre] = (char)toupper((unsigned char)out[pre]);
    memcpy(out + pre + np, at + 4, post + 1);
    return TM_OK;
}
