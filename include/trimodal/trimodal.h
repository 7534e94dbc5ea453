/* trimodal: the whole public C API. */
#ifndef TRIMODAL_H
#define TRIMODAL_H

#include "trimodal/audio.h"
#include "trimodal/core.h"
#include "trimodal/data.h"
#include "trimodal/datasets.h"
#include "trimodal/eval.h"
#include "trimodal/graph.h"
#include "trimodal/io.h"
#include "trimodal/model.h"
#include "trimodal/nn.h"
#include "trimodal/ops.h"
#include "trimodal/optim.h"
#include "trimodal/serve.h"
#include "trimodal/text.h"
#include "trimodal/train.h"
#include "trimodal/vision.h"

#endif
