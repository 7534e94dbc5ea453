/* data: modality dropout and aligned masking across text, audio and image. */
#include <string.h>

#include "testutil.h"
#include "trimodal/data.h"

static void test_modality_dropout(void)
{
    const float p[3] = {0.3f, 0.3f, 0.3f};
    int counts[8] = {0};
    for (uint64_t i = 0; i < 20000; i++) {
        unsigned k = tm_modality_dropout(7, p, 99, i);
        CHECK(k != 0 && (k & ~7u) == 0);
        CHECK(k == tm_modality_dropout(7, p, 99, i)); /* a pure function */
        counts[k]++;
    }
    /* P(all three kept) = 0.7^3 = 0.343 */
    CHECK_NEAR(counts[7] / 20000.0, 0.343, 0.02, 0);
    /* text dropped alone: 0.3 * 0.7 * 0.7 = 0.147 */
    CHECK_NEAR(counts[6] / 20000.0, 0.147, 0.015, 0);
    /* never all dropped, even with p = 1; only present modalities return */
    const float all[3] = {1, 1, 1};
    for (uint64_t i = 0; i < 100; i++) {
        unsigned k = tm_modality_dropout(5, all, 1, i);
        CHECK(k == 1 || k == 4);
    }
    CHECK(tm_modality_dropout(0, p, 1, 1) == 0);
    const float none[3] = {0, 0, 0};
    CHECK(tm_modality_dropout(3, none, 1, 1) == 3);
}

static void test_aligned_mask(void)
{
    const char *text = "a red sneaker on grass";
    tm_word_alignment w[5] = {
        {0, 1, 0.0, 0.1, {0, 0, 0, 0}},
        {2, 5, 0.1, 0.3, {0, 0, 4, 4}},
        {6, 13, 0.3, 0.6, {2, 2, 3, 5}},
        {14, 16, -1, -1, {0, 0, 0, 0}}, /* not spoken, no region */
        {17, 22, 0.7, 1.0, {6, 0, 2, 8}},
    };
    tm_audio *a;
    CHECK_OK(tm_audio_new(&a, 16000, 16000));
    for (int i = 0; i < 16000; i++) a->samples[i] = 1.0f;
    tm_image *img;
    CHECK_OK(tm_image_new(&img, 8, 8, 1));
    memset(img->data, 200, 64);

    tm_aligned_mask_params p = tm_aligned_mask_default_params();
    p.word_prob = 1.0f;
    p.image_fill = 7;
    char *out;
    size_t len;
    uint8_t masked[5];
    CHECK_OK(tm_aligned_mask(&out, &len, masked, text, strlen(text), w, 5, a, img, p, 1, 0));
    CHECK(strcmp(out, "<mask> <mask> <mask> <mask> <mask>") == 0 && len == strlen(out));
    for (int i = 0; i < 5; i++) CHECK(masked[i] == 1);
    /* every spoken span is silent; 0.6..0.7 s was not a word and keeps its sound */
    CHECK(a->samples[0] == 0.0f && a->samples[9000] == 0.0f && a->samples[15999] == 0.0f);
    CHECK(a->samples[10500] == 1.0f);
    /* regions erased, the rest intact */
    CHECK(img->data[2 * 8 + 2] == 7 && img->data[0] == 7 && img->data[7 * 8 + 7] == 7);
    CHECK(img->data[5 * 8 + 7] == 200);
    tm_free(out);

    /* with probability 0 nothing changes; with 0.5 choices are reproducible
     * and the modalities agree word by word */
    memset(img->data, 200, 64);
    for (int i = 0; i < 16000; i++) a->samples[i] = 1.0f;
    p.word_prob = 0.0f;
    CHECK_OK(tm_aligned_mask(&out, &len, masked, text, strlen(text), w, 5, a, img, p, 1, 0));
    CHECK(strcmp(out, text) == 0 && a->samples[100] == 1.0f && img->data[0] == 200);
    tm_free(out);
    p.word_prob = 0.5f;
    int agree = 1, some = 0;
    for (uint64_t ex = 0; ex < 50; ex++) {
        memset(img->data, 200, 64);
        for (int i = 0; i < 16000; i++) a->samples[i] = 1.0f;
        uint8_t m2[5];
        char *o2;
        size_t l2;
        CHECK_OK(tm_aligned_mask(&out, &len, masked, text, strlen(text), w, 5, a, img, p, 3, ex));
        CHECK_OK(tm_aligned_mask(&o2, &l2, m2, text, strlen(text), w, 5, NULL, NULL, p, 3, ex));
        agree &= memcmp(masked, m2, 5) == 0 && strcmp(out, o2) == 0;
        /* word 2 ("sneaker") masked <=> its audio is silent and its region erased */
        agree &= (masked[2] == 1) == (a->samples[7000] == 0.0f);
        agree &= (masked[2] == 1) == (img->data[4 * 8 + 5] == p.image_fill); /* only word 2 box */
        for (int i = 0; i < 5; i++) some += masked[i];
        tm_free(out);
        tm_free(o2);
    }
    CHECK(agree);
    CHECK(some > 80 && some < 170); /* about half of 250 */

    /* bad alignments */
    tm_word_alignment badw[2] = {{0, 5, -1, -1, {0}}, {3, 8, -1, -1, {0}}}; /* overlap */
    CHECK_STATUS(tm_aligned_mask(&out, &len, NULL, text, strlen(text), badw, 2, NULL, NULL, p, 1, 0),
                 TM_ERR_INVALID);
    tm_word_alignment past[1] = {{20, 30, -1, -1, {0}}};
    CHECK_STATUS(tm_aligned_mask(&out, &len, NULL, text, strlen(text), past, 1, NULL, NULL, p, 1, 0),
                 TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "word 0") != NULL);
    tm_word_alignment back[1] = {{0, 1, 0.5, 0.2, {0}}};
    CHECK_STATUS(tm_aligned_mask(&out, &len, NULL, text, strlen(text), back, 1, NULL, NULL, p, 1, 0),
                 TM_ERR_INVALID);
    p.word_prob = 2.0f;
    CHECK_STATUS(tm_aligned_mask(&out, &len, NULL, text, strlen(text), w, 5, NULL, NULL, p, 1, 0),
                 TM_ERR_INVALID);
    tm_audio_free(a);
    tm_image_free(img);
}

int main(void)
{
    test_modality_dropout();
    test_aligned_mask();
    return test_finish("joint_augment");
}
