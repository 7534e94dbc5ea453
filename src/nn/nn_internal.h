/* Helpers shared by the nn files (not part of the public API). */
#ifndef TM_NN_INTERNAL_H
#define TM_NN_INTERNAL_H

#include "trimodal/nn.h"

/* Longest parameter name the layers build ("<prefix>.<suffix>"). */
#define TM_NN_NAME_MAX 256

/* Records a build error in the graph (the first one wins, as with the
 * graph's own builders) and in tm_last_error(); returns NULL. */
tm_node *tm_nn_fail(tm_graph *g, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* tm_param named "<prefix>.<suffix>" (or "<prefix>" when suffix is NULL). */
tm_node *tm_nn_param(tm_graph *g, const char *prefix, const char *suffix, int ndim,
                     const int64_t *shape);

/* The graph's status as a tm_status, for the _declare functions. */
tm_status tm_nn_status(tm_graph *g);

#endif
