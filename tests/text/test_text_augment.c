/* Text augmentations: token masking (specials kept, labels, rates,
 * reproducibility), token and word deletion, the synonym table format and
 * synonym replacement. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/text.h"

static tm_tokenizer *load_trained(void)
{
    tm_tokenizer *t = NULL;
    CHECK_OK(tm_tokenizer_load_json(&t, test_data_path("text/trained_tokenizer.json")));
    return t;
}

static void test_masking(tm_tokenizer *tok)
{
    enum { N = 4000 };
    int32_t *ids = malloc(N * sizeof *ids), *orig = malloc(N * sizeof *orig), *labels = malloc(N * sizeof *labels);
    for (int i = 0; i < N; i++) orig[i] = i % 50 == 0 ? 1 : 10 + (i * 37) % 300; /* some bos */
    memcpy(ids, orig, N * sizeof *ids);
    tm_token_mask_params p = tm_token_mask_default_params();
    CHECK(p.prob > 0.14f && p.prob < 0.16f && p.ignore_label == -100);
    p.seed = 42;
    p.stream = 7;
    int64_t nm = 0;
    CHECK_OK(tm_text_mask_tokens(tok, ids, labels, N, &p, &nm));
    int32_t mask = tm_tokenizer_special_id(tok, TM_SPECIAL_MASK);
    int masked = 0, ok = 1;
    for (int i = 0; i < N; i++) {
        if (orig[i] == 1) ok &= ids[i] == 1 && labels[i] == -100; /* specials never masked */
        if (ids[i] == mask) masked++, ok &= labels[i] == orig[i];
        else ok &= labels[i] == -100 && ids[i] == orig[i];
    }
    CHECK(ok);
    CHECK(masked == nm);
    CHECK(nm > N * 0.12 && nm < N * 0.18);
    /* reproducible, and another stream differs */
    int32_t *again = malloc(N * sizeof *again);
    memcpy(again, orig, N * sizeof *again);
    CHECK_OK(tm_text_mask_tokens(tok, again, NULL, N, &p, NULL));
    CHECK(!memcmp(again, ids, N * sizeof *ids));
    memcpy(again, orig, N * sizeof *again);
    p.stream = 8;
    CHECK_OK(tm_text_mask_tokens(tok, again, NULL, N, &p, NULL));
    CHECK(memcmp(again, ids, N * sizeof *ids) != 0);
    /* BERT's 80/10/10 */
    memcpy(ids, orig, N * sizeof *ids);
    p.prob = 0.5f;
    p.mask_frac = 0.8f;
    p.random_frac = 0.1f;
    CHECK_OK(tm_text_mask_tokens(tok, ids, labels, N, &p, &nm));
    int n_mask = 0, n_rand = 0, n_keep = 0;
    for (int i = 0; i < N; i++) {
        if (labels[i] == -100) continue;
        if (ids[i] == mask) n_mask++;
        else if (ids[i] != orig[i]) n_rand++, ok &= !tm_tokenizer_is_special(tok, ids[i]);
        else n_keep++;
    }
    CHECK(ok && n_mask + n_rand + n_keep == nm);
    CHECK(n_mask > nm * 0.75 && n_mask < nm * 0.85);
    CHECK(n_rand > nm * 0.06 && n_rand < nm * 0.14);
    /* errors */
    p.mask_frac = 0.8f;
    p.random_frac = 0.5f;
    CHECK_STATUS(tm_text_mask_tokens(tok, ids, NULL, N, &p, NULL), TM_ERR_INVALID);
    p = tm_token_mask_default_params();
    p.prob = 1.5f;
    CHECK_STATUS(tm_text_mask_tokens(tok, ids, NULL, N, &p, NULL), TM_ERR_INVALID);
    int32_t bad = 1 << 20;
    CHECK_STATUS(tm_text_mask_tokens(tok, &bad, NULL, 1, NULL, NULL), TM_ERR_INVALID);
    free(ids), free(orig), free(labels), free(again);
}

static void test_delete_tokens(tm_tokenizer *tok)
{
    int32_t ids[200], out[200];
    for (int i = 0; i < 200; i++) ids[i] = i == 0 ? 1 : i == 199 ? 2 : 10 + i;
    int64_t n = 0;
    CHECK_OK(tm_text_delete_tokens(tok, ids, 200, 0.3f, 5, 0, out, &n));
    CHECK(n > 200 - 0.4 * 198 && n < 200 - 0.2 * 198);
    CHECK(out[0] == 1 && out[n - 1] == 2);
    int inorder = 1;
    for (int64_t i = 1; i < n; i++) inorder &= out[i] > out[i - 1] || out[i] == 2;
    CHECK(inorder);
    /* p = 1: everything but the specials and one token goes */
    CHECK_OK(tm_text_delete_tokens(tok, ids, 200, 1.0f, 5, 0, out, &n));
    CHECK(n == 3 && out[0] == 1 && out[2] == 2);
    /* in place, and p = 0 keeps all */
    int32_t copy[200];
    memcpy(copy, ids, sizeof copy);
    CHECK_OK(tm_text_delete_tokens(tok, copy, 200, 0.0f, 5, 0, copy, &n));
    CHECK(n == 200 && !memcmp(copy, ids, sizeof copy));
    CHECK_STATUS(tm_text_delete_tokens(tok, ids, 200, -0.1f, 5, 0, out, &n), TM_ERR_INVALID);
}

static void test_delete_words(void)
{
    const char *text = "  the quick brown fox jumps over the lazy dog \n";
    char *out = NULL;
    size_t len = 0;
    CHECK_OK(tm_text_delete_words(text, strlen(text), 0.0f, 1, 0, &out, &len));
    CHECK(out && len == strlen(text) && !strcmp(out, text));
    tm_free(out);
    CHECK_OK(tm_text_delete_words(text, strlen(text), 1.0f, 1, 0, &out, &len));
    /* one word is left, with the leading and trailing white space */
    CHECK(out && len > 4 && !strncmp(out, "  ", 2) && out[2] != ' ' && !strcmp(out + len - 2, " \n"));
    CHECK(out && strchr(out + 2, ' ') == out + len - 2);
    tm_free(out);
    int differs = 0;
    for (uint64_t seed = 0; seed < 20; seed++) {
        char *a = NULL, *b = NULL;
        size_t la, lb;
        CHECK_OK(tm_text_delete_words(text, strlen(text), 0.4f, seed, 3, &a, &la));
        CHECK_OK(tm_text_delete_words(text, strlen(text), 0.4f, seed, 3, &b, &lb));
        CHECK(a && b && la == lb && !strcmp(a, b));
        /* every kept word is a word of the text, in order, single spaces between */
        CHECK(a && !strstr(a + 2, "  "));
        differs += a && strcmp(a, text) != 0;
        tm_free(a);
        tm_free(b);
    }
    CHECK(differs > 10);
    CHECK_OK(tm_text_delete_words("", 0, 0.5f, 1, 0, &out, &len));
    CHECK(out && len == 0);
    tm_free(out);
    CHECK_OK(tm_text_delete_words("   ", 3, 0.5f, 1, 0, &out, &len));
    CHECK(out && len == 3);
    tm_free(out);
}

static void test_synonyms(void)
{
    tm_synonyms *syn = NULL;
    CHECK_OK(tm_synonyms_load(&syn, test_data_path("text/synonyms.tsv")));
    if (!syn) return;
    CHECK(tm_synonyms_count(syn) == 6);
    int n = 0;
    const char *const *l = tm_synonyms_lookup(syn, "quick", 5, &n);
    CHECK(l && n == 3 && !strcmp(l[0], "fast") && !strcmp(l[2], "speedy"));
    l = tm_synonyms_lookup(syn, "ice", 3, &n);
    CHECK(l && n == 1 && !strcmp(l[0], "frozen water"));
    l = tm_synonyms_lookup(syn, "café", strlen("café"), &n);
    CHECK(l && n == 2 && !strcmp(l[1], "bistro"));
    CHECK(tm_synonyms_lookup(syn, "cat", 3, &n) == NULL && n == 0);

    const char *text = "The Quick dog, a happy dog! Large ice.";
    char *out = NULL;
    size_t len = 0;
    int64_t nr = 0;
    CHECK_OK(tm_text_replace_synonyms(syn, text, strlen(text), 1.0f, 3, 0, &out, &len, &nr));
    CHECK(nr == 6);
    CHECK(out && !strncmp(out, "The ", 4) && strstr(out, "hound, a ") && strstr(out, "hound! "));
    CHECK(out && (strstr(out, "Fast") || strstr(out, "Rapid") || strstr(out, "Speedy")));
    CHECK(out && (strstr(out, "Big") || strstr(out, "Huge") || strstr(out, "Enormous")));
    CHECK(out && strstr(out, " frozen water.") && len == strlen(out));
    tm_free(out);
    CHECK_OK(tm_text_replace_synonyms(syn, text, strlen(text), 0.0f, 3, 0, &out, &len, &nr));
    CHECK(out && nr == 0 && !strcmp(out, text));
    tm_free(out);
    char *a = NULL, *b = NULL;
    size_t la, lb;
    CHECK_OK(tm_text_replace_synonyms(syn, text, strlen(text), 0.5f, 9, 2, &a, &la, NULL));
    CHECK_OK(tm_text_replace_synonyms(syn, text, strlen(text), 0.5f, 9, 2, &b, &lb, NULL));
    CHECK(a && b && !strcmp(a, b));
    tm_free(a);
    tm_free(b);
    tm_synonyms_free(syn);
    tm_synonyms_free(NULL);

    /* the format's errors, each naming its line */
    const char *bad[] = {"word syn\n", "\tsyn\n", "w\tsyn,,x\n", "w\ta\nw\tb\n", "w\t\xff\n", "w\ta\tb\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_STATUS(tm_synonyms_load_memory(&syn, bad[i], strlen(bad[i])), TM_ERR_FORMAT);
        CHECK(strstr(tm_last_error(), "line") != NULL);
        CHECK(syn == NULL);
    }
    CHECK_OK(tm_synonyms_load_memory(&syn, "# only a comment\n\n", 18));
    CHECK(syn && tm_synonyms_count(syn) == 0);
    tm_synonyms_free(syn);
    CHECK_STATUS(tm_synonyms_load(&syn, "no/such/synonyms.tsv"), TM_ERR_IO);
}

int main(void)
{
    tm_tokenizer *tok = load_trained();
    if (tok) {
        test_masking(tok);
        test_delete_tokens(tok);
    }
    tm_tokenizer_free(tok);
    test_delete_words();
    test_synonyms();
    return test_finish("text_augment");
}
