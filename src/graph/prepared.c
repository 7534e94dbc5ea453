/* Weights prepared for inference (packed f32, int8, bf16): see
 * graph_internal.h. Nothing prepares a weight yet, so this is never called. */
#include "graph_internal.h"

void tm_prepared_matmul(tm_graph *g, tm_node *n)
{
    (void)g;
    (void)n;
}
