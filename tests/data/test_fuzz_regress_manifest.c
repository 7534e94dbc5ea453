/* Regression inputs found by fuzz/fuzz_manifest.c. Run under the ASan +
 * UBSan build, where the original bug was reported.
 *  - manifest_no_labels.jsonl: a manifest whose rows give no label names
 *    made finish_load call qsort(NULL, 0, ...) (undefined behaviour). */
#include <stdlib.h>

#include "testutil.h"
#include "trimodal/data.h"
#include "trimodal/io.h"

int main(void)
{
    char *d = NULL;
    size_t n = 0;
    CHECK_OK(tm_read_file(test_data_path("data/fuzz/manifest_no_labels.jsonl"), 1 << 20, &d, &n));
    tm_manifest_params p = tm_manifest_default_params();
    p.max_line_bytes = 4096;
    p.max_rows = 1000;
    p.max_problems = 5;
    for (int keep = 0; keep < 2; keep++) {
        p.keep_going = keep;
        tm_manifest *m = NULL;
        tm_status st = tm_manifest_parse(&m, d, n, "fuzz.jsonl", "/nonexistent", &p);
        CHECK(st == TM_OK ? m != NULL : m == NULL && tm_last_error()[0]);
        tm_manifest_free(m);
    }
    tm_free(d);
    return test_finish("fuzz_regress_manifest");
}
