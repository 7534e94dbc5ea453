/* trimodal: the whole public C API. */
#ifndef TRIMODAL_H
#define TRIMODAL_H

#include "trimodal/audio.h"
#include "trimodal/core.h"
#include "trimodal/data.h"
#include "trimodal/eval.h"
#include "trimodal/graph.h"
#include "trimodal/io.h"
#include "trimodal/ops.h"
#include "trimodal/optim.h"
#include "trimodal/text.h"
#include "trimodal/train.h"
#include "trimodal/vision.h"

#endif
