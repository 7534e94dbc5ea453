#!/usr/bin/python3
"""Reference vectors for the eval layer (tests/eval/test_*.c).

Independent implementations the C code is compared against:
  - retrieval and classification: scikit-learn (top_k_accuracy_score,
    label_ranking_average_precision_score, precision_recall_fscore_support,
    confusion_matrix, log_loss) on tie-free cases; for cases with ties, a
    numpy ranking with the documented tie rule (and the generator asserts
    that this numpy code agrees with scikit-learn where both apply);
  - BLEU: NLTK's corpus_bleu / sentence_bleu with SmoothingFunction
    method0..method3;
  - METEOR: NLTK's meteor_score with PorterStemmer(ORIGINAL_ALGORITHM) and a
    WordNet stand-in without synonyms (no network, so no WordNet data);
    the Porter stems of a word list come from the same stemmer;
  - CIDEr-D, WER/CER, SNR, SI-SDR, FID, KID: direct numpy / scipy
    formulas written here from the papers (FID cross-checked against
    scipy.linalg.sqrtm, the pytorch-fid way).

Needs: apt-get install -y python3-sklearn python3-nltk python3-scipy
Run:   /usr/bin/python3 scripts/gen_eval_vectors.py
Writes tests/data/eval/{retrieval,classify,generation,stemmer,signal}.json;
every float32 input is written as the exact decimal of its float32 value.
"""
import json
import math
import os
import re
import warnings

import numpy as np
import scipy.linalg
from nltk.stem.porter import PorterStemmer
from nltk.translate import bleu_score, meteor_score
from sklearn import metrics

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "eval")
rng = np.random.default_rng(20261128)


def f32list(a):
    return [float(x) for x in np.asarray(a, dtype=np.float32).reshape(-1)]


def write(name, obj):
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")
    print("wrote %s (%d bytes)" % (path, os.path.getsize(path)))


def close(a, b, tol=1e-9):
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


# ============================================================ retrieval

def rank_positions(row, rel, ties):
    """1-based positions of the relevant candidates (ascending) in the
    ranking of one query: score descending, then the tie rule."""
    idx = np.arange(len(row))
    s = row.astype(np.float64)
    if ties == "pessimistic":
        key2 = rel.astype(int)        # irrelevant (0) first among equals
    elif ties == "optimistic":
        key2 = 1 - rel.astype(int)    # relevant first
    else:
        key2 = np.zeros(len(row), int)  # by index only
    order = np.lexsort((idx, key2, -s))
    pos = np.empty(len(row), int)
    pos[order] = np.arange(1, len(row) + 1)
    return np.sort(pos[rel])


def retrieval_ref(sim, qid, cid, ks, ties):
    nq, nc = sim.shape
    per = []
    for q in range(nq):
        if qid is None:
            rel = np.arange(nc) == q
        else:
            rel = (cid == qid[q]) & (qid[q] >= 0)
        if not rel.any():
            per.append(None)
            continue
        per.append(rank_positions(sim[q], rel, ties))
    valid = [p for p in per if p is not None]
    nv = len(valid)
    first = np.array([p[0] for p in valid], float)
    res = {
        "n_valid": nv,
        "n_no_relevant": nq - nv,
        "recall_at_k": [float(np.mean([p[0] <= k for p in valid])) for k in ks],
        "relevant_recall_at_k": [float(np.mean([np.sum(p <= k) / len(p) for p in valid])) for k in ks],
        "precision_at_k": [float(np.mean([np.sum(p <= k) / k for p in valid])) for k in ks],
        "mrr": float(np.mean(1.0 / first)),
        "map": float(np.mean([np.mean(np.arange(1, len(p) + 1) / p) for p in valid])),
        "median_rank": float(np.median(first)),
        "mean_rank": float(np.mean(first)),
        "first_rank": [int(p[0]) if p is not None else 0 for p in per],
    }
    return res


def sklearn_retrieval_check(sim, qid, cid, ks, res):
    """Tie-free cases: the numpy figures must equal scikit-learn's."""
    nq, nc = sim.shape
    s64 = sim.astype(np.float64)
    if qid is None:
        rel = np.eye(nq, nc, dtype=int)
    else:
        rel = ((qid[:, None] == cid[None, :]) & (qid[:, None] >= 0)).astype(int)
    keep = rel.sum(1) > 0
    # LRAP = mean average precision without ties
    lrap = metrics.label_ranking_average_precision_score(rel[keep], s64[keep])
    assert close(lrap, res["map"]), (lrap, res["map"])
    per_ap = [metrics.average_precision_score(rel[q], s64[q]) for q in range(nq) if keep[q]]
    assert close(float(np.mean(per_ap)), res["map"])
    if qid is None and nq == nc:
        for k, r in zip(ks, res["recall_at_k"]):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # k >= n_classes is "meaningless", yet valid
                t = metrics.top_k_accuracy_score(np.arange(nq), s64, k=k, labels=np.arange(nc))
            assert close(t, r), (k, t, r)
        assert close(lrap, res["mrr"])  # one relevant item: AP = RR


def retrieval_vectors():
    cases = []
    ks = [1, 5, 10, 3, 40]

    def add(name, sim, qid, cid, ties, check_sklearn):
        res = retrieval_ref(sim, qid, cid, ks, ties)
        if check_sklearn:
            sklearn_retrieval_check(sim, qid, cid, ks, res)
        cases.append({
            "name": name, "nq": sim.shape[0], "nc": sim.shape[1],
            "sim": f32list(sim),
            "query_ids": None if qid is None else [int(x) for x in qid],
            "candidate_ids": None if cid is None else [int(x) for x in cid],
            "ties": ties, "k": ks, "expect": res,
        })

    # paired, instance-level: a noisy diagonal, no ties
    n = 31
    sim = (rng.normal(size=(n, n)) + 2.0 * np.eye(n)).astype(np.float32)
    add("paired", sim, None, None, "pessimistic", True)
    # the other direction of the same matrix
    add("paired_T", np.ascontiguousarray(sim.T), None, None, "pessimistic", True)
    # many ties: scores on a coarse grid, all three rules
    simq = (np.round(rng.normal(size=(n, n)) * 1.5) / 2 + np.eye(n)).astype(np.float32)
    for t in ("pessimistic", "optimistic", "by_index"):
        add("ties_" + t, simq, None, None, t, False)
    # a collapsed model: every score equal
    add("constant", np.zeros((9, 9), np.float32), None, None, "pessimistic", False)
    add("constant_by_index", np.zeros((9, 9), np.float32), None, None, "by_index", False)
    # class-level relevance, more candidates than queries, a query whose
    # class no candidate has, negative (unlabelled) ids
    nq, nc = 23, 41
    cq = rng.integers(0, 6, nq)
    cc = rng.integers(0, 5, nc)
    cq[3] = 5          # no candidate of class 5
    cq[7] = -1         # unlabelled query
    cc[0] = -1
    simc = rng.normal(size=(nq, nc)).astype(np.float32)
    add("class_level", simc, cq, cc, "pessimistic", True)
    simcq = (np.round(rng.normal(size=(nq, nc)) * 2) / 2).astype(np.float32)
    add("class_level_ties", simcq, cq, cc, "pessimistic", False)
    add("class_level_ties_opt", simcq, cq, cc, "optimistic", False)
    add("class_level_ties_index", simcq, cq, cc, "by_index", False)
    # many relevant candidates per query (the merge-sort path, m > 32),
    # scores on a coarse grid so ties abound
    nq2, nc2 = 10, 160
    cq2 = rng.integers(0, 4, nq2)
    cc2 = rng.integers(0, 4, nc2)
    simb = (np.round(rng.normal(size=(nq2, nc2)) * 2) / 2 + 0.5 * (cq2[:, None] == cc2[None, :])).astype(np.float32)
    for t in ("pessimistic", "optimistic", "by_index"):
        add("many_relevant_" + t, simb, cq2, cc2, t, False)
    simr = rng.normal(size=(nq2, nc2)).astype(np.float32)
    add("many_relevant_sklearn", simr, cq2, cc2, "pessimistic", True)
    # several captions per image: 30 captions -> 6 images
    img = np.repeat(np.arange(6), 5)
    simm = (rng.normal(size=(30, 6)) + 1.5 * (img[:, None] == np.arange(6)[None, :])).astype(np.float32)
    add("captions_to_images", simm, img, np.arange(6), "pessimistic", True)
    add("images_to_captions", np.ascontiguousarray(simm.T), np.arange(6), img, "pessimistic", True)
    # more queries than candidates with diagonal relevance: queries >= nc have none
    sime = rng.normal(size=(12, 8)).astype(np.float32)
    add("paired_rect", sime, None, None, "pessimistic", False)
    write("retrieval.json", {"cases": cases})


# ======================================================= classification

def softmax64(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def classify_ref(scores, labels, C, kind, top_k, bins, zero_division, ignore=-100):
    keep = labels != ignore
    s = scores[keep].astype(np.float64)
    y = labels[keep]
    p = softmax64(scores[keep]) if kind == "logits" else s
    pred = np.argmax(s, 1)  # first index among ties
    n = len(y)
    # rank of the label: higher scores, or equal with a lower index
    before = np.array([np.sum((s[i] > s[i, y[i]]) | ((s[i] == s[i, y[i]]) & (np.arange(C) < y[i])))
                       for i in range(n)])
    conf = p.max(1)
    b = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    ece = 0.0
    bin_count, bin_conf, bin_acc = [], [], []
    for k in range(bins):
        m = b == k
        bin_count.append(int(m.sum()))
        if m.sum() == 0:
            bin_conf.append(None)
            bin_acc.append(None)
            continue
        acc_k = float(np.mean(pred[m] == y[m]))
        conf_k = float(np.mean(conf[m]))
        bin_conf.append(conf_k)
        bin_acc.append(acc_k)
        ece += m.sum() / n * abs(acc_k - conf_k)
    py = p[np.arange(n), y]
    nll = float(np.mean(-np.log(np.maximum(py, 1e-15))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm, rm, fm, _ = metrics.precision_recall_fscore_support(y, pred, average="macro",
                                                                zero_division=zero_division)
        pw, rw, fw, _ = metrics.precision_recall_fscore_support(y, pred, average="weighted",
                                                                zero_division=zero_division)
        pc, rc, fc, sc = metrics.precision_recall_fscore_support(y, pred, labels=np.arange(C),
                                                                 average=None,
                                                                 zero_division=zero_division)
    cm = metrics.confusion_matrix(y, pred, labels=np.arange(C))
    res = {
        "n": int(n), "n_ignored": int((~keep).sum()),
        "accuracy": float(metrics.accuracy_score(y, pred)),
        "top_k_accuracy": float(np.mean(before < top_k)),
        "precision_macro": float(pm), "recall_macro": float(rm), "f1_macro": float(fm),
        "precision_weighted": float(pw), "recall_weighted": float(rw), "f1_weighted": float(fw),
        "precision": [float(v) for v in pc], "recall": [float(v) for v in rc],
        "f1": [float(v) for v in fc], "support": [int(v) for v in sc],
        "n_present": int(len(np.union1d(y, pred))),
        "confusion": [int(v) for v in cm.reshape(-1)],
        "ece": float(ece), "nll": nll,
        "bin_count": bin_count, "bin_confidence": bin_conf, "bin_accuracy": bin_acc,
    }
    # cross-checks with scikit-learn where its conventions coincide
    if kind == "logits" and C > 2 and len(np.unique(s, axis=None)) == s.size:
        t = metrics.top_k_accuracy_score(y, s, k=top_k, labels=np.arange(C))
        assert close(t, res["top_k_accuracy"]), (t, res["top_k_accuracy"])
        ll = metrics.log_loss(y, p, labels=np.arange(C))
        assert close(ll, nll, 1e-7), (ll, nll)
    return res


def classify_vectors():
    cases = []

    def add(name, scores, labels, C, kind, top_k=5, bins=15, zero_division=0):
        res = classify_ref(scores, labels, C, kind, top_k, bins, zero_division)
        cases.append({"name": name, "n": int(len(labels)), "C": C, "kind": kind, "top_k": top_k,
                      "bins": bins, "zero_division": zero_division,
                      "scores": f32list(scores), "labels": [int(v) for v in labels],
                      "expect": res})

    n, C = 160, 7
    logits = rng.normal(size=(n, C)).astype(np.float32) * 2
    labels = rng.integers(0, C, n)
    logits[np.arange(n), labels] += 1.5  # better than chance
    labels[::17] = -100
    add("logits", logits, labels, C, "logits")
    add("logits_top2_bins10", logits, labels, C, "logits", top_k=2, bins=10)
    probs = softmax64(logits).astype(np.float32)
    add("probs", probs, labels, C, "probs")
    # ties among scores (integers), classes never predicted / never true
    n2, C2 = 90, 6
    tl = rng.integers(-2, 3, size=(n2, C2)).astype(np.float32)
    tl[:, 5] = -10          # class 5 never predicted
    y2 = rng.integers(0, 5, n2)  # ... and never true: absent from both
    y2[y2 == 4] = 3         # class 4 never true, but predicted
    add("ties_zero_division0", tl, y2, C2, "logits", top_k=3, zero_division=0)
    add("ties_zero_division1", tl, y2, C2, "logits", top_k=3, zero_division=1)
    # two classes, confident model
    n3 = 50
    l3 = rng.integers(0, 2, n3)
    s3 = np.stack([-(l3 * 2 - 1) * 3.0, (l3 * 2 - 1) * 3.0], 1) + rng.normal(size=(n3, 2))
    add("binary", s3.astype(np.float32), l3, 2, "logits", top_k=1)
    write("classify.json", {"cases": cases})


# =========================================================== generation

PUNCT = set('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~')


def tokenize(text, keep_case=False, punct="remove"):
    """The C tokeniser (tm_text_tokenize), re-written."""
    if not keep_case:
        text = "".join(c.lower() if "A" <= c <= "Z" else c for c in text)
    out, cur = [], ""
    for c in text:
        if c in " \t\n\r\v\f":
            if cur:
                out.append(cur)
            cur = ""
        elif punct != "keep" and c in PUNCT:
            if cur:
                out.append(cur)
            cur = ""
            if punct == "split":
                out.append(c)
        else:
            cur += c
    if cur:
        out.append(cur)
    return out


VOCAB = ("a an the dog dogs cat cats man woman men women child children is are was "
         "running runs ran run sitting sits sat jumping jumps jumped playing plays "
         "played with on in at under near of and red blue green small large big "
         "ball balls frisbee park grass street table tables bench benches water "
         "happily quickly slowly together beautiful beautifully generalization "
         "generalizations relational conditional hopeful hopefulness").split()


def sentence(length):
    return [VOCAB[i] for i in rng.integers(0, len(VOCAB), length)]


def perturb(ref):
    """A hypothesis close to a reference: drops, swaps and substitutions."""
    h = list(ref)
    for _ in range(rng.integers(0, 4)):
        op = rng.integers(0, 3)
        if op == 0 and len(h) > 1:
            del h[rng.integers(0, len(h))]
        elif op == 1 and len(h) > 1:
            i = rng.integers(0, len(h) - 1)
            h[i], h[i + 1] = h[i + 1], h[i]
        else:
            if h:
                h[rng.integers(0, len(h))] = VOCAB[rng.integers(0, len(VOCAB))]
    return h


def caption_corpus():
    samples = []
    for i in range(14):
        refs = [sentence(int(rng.integers(5, 13))) for _ in range(int(rng.integers(1, 5)))]
        hyp = perturb(refs[0])
        samples.append((hyp, refs))
    # edge cases: exact match, hypothesis shorter than 4 words, no overlap,
    # empty hypothesis, repeated words (clipping), stems only
    samples.append((["a", "dog", "runs", "in", "the", "park"],
                    [["a", "dog", "runs", "in", "the", "park"]]))
    samples.append((["dog", "runs"], [["a", "dog", "runs", "fast"], ["the", "dog"]]))
    # two references equally far in length: the shorter one counts
    samples.append((["a", "dog", "runs", "in", "park"],
                    [["a", "dog", "runs", "in", "the", "park"], ["a", "dog", "runs", "in"]]))
    samples.append((["zebra", "xylophone", "quartz"], [["a", "cat", "sits"]]))
    samples.append(([], [["a", "cat", "sits", "on", "a", "table"]]))
    samples.append((["the", "the", "the", "the", "the", "the", "the"],
                    [["the", "cat", "is", "on", "the", "mat"], ["there", "is", "a", "cat", "on", "the", "mat"]]))
    samples.append((["dogs", "jumped", "happily", "on", "benches"],
                    [["a", "dog", "jumps", "happy", "on", "a", "bench"]]))
    samples.append((["generalizations", "of", "relational", "tables"],
                    [["generalization", "of", "relation", "table"], ["the", "relational", "tables"]]))
    return samples


class NoWordNet:
    """Stand-in for nltk.corpus.wordnet: no synonyms (no data offline)."""

    def synsets(self, word):
        return []


class Identity:
    def stem(self, word):
        return word


def cider_ref(samples, max_n=4, sigma=6.0, clip=True, scale=10.0):
    """CIDEr-D from Vedantam et al. (2015), section 3 (and its -D variant):
    tf-idf n-gram vectors, idf from the references of the whole corpus."""
    def grams(words, n):
        out = {}
        for i in range(len(words) - n + 1):
            g = tuple(words[i:i + n])
            out[g] = out.get(g, 0) + 1
        return out

    N = len(samples)
    df = {}
    for _, refs in samples:
        seen = set()
        for r in refs:
            for n in range(1, max_n + 1):
                seen.update(grams(r, n).keys())
        for g in seen:
            df[g] = df.get(g, 0) + 1

    def vec(words, n):
        return {g: c * (math.log(N) - math.log(max(1.0, df.get(g, 0)))) for g, c in grams(words, n).items()}

    scores = []
    for hyp, refs in samples:
        total = 0.0
        for r in refs:
            pen = math.exp(-((len(hyp) - len(r)) ** 2) / (2 * sigma ** 2)) if sigma > 0 else 1.0
            for n in range(1, max_n + 1):
                vh, vr = vec(hyp, n), vec(r, n)
                dot = sum((min(v, vr.get(g, 0.0)) if clip else v) * vr.get(g, 0.0) for g, v in vh.items())
                nh = math.sqrt(sum(v * v for v in vh.values()))
                nr = math.sqrt(sum(v * v for v in vr.values()))
                if nh != 0 and nr != 0:
                    dot /= nh * nr
                total += dot * pen
        scores.append(scale * total / max_n / len(refs))
    return scores


def edit_counts(ref, hyp):
    """Levenshtein with the documented path: tracing back from the end,
    prefer diagonal, then deletion, then insertion."""
    R, H = len(ref), len(hyp)
    D = np.zeros((R + 1, H + 1), int)
    D[0, :] = np.arange(H + 1)
    D[:, 0] = np.arange(R + 1)
    for i in range(1, R + 1):
        for j in range(1, H + 1):
            D[i, j] = min(D[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]), D[i - 1, j] + 1, D[i, j - 1] + 1)
    i, j = R, H
    hits = sub = dele = ins = 0
    while i > 0 or j > 0:
        if i > 0 and j > 0 and D[i, j] == D[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            if ref[i - 1] == hyp[j - 1]:
                hits += 1
            else:
                sub += 1
            i, j = i - 1, j - 1
        elif i > 0 and D[i, j] == D[i - 1, j] + 1:
            dele += 1
            i -= 1
        else:
            ins += 1
            j -= 1
    assert sub + dele + ins == D[R, H]
    return hits, sub, dele, ins


def chars(text, keep_case=False, punct="remove"):
    return list(" ".join(tokenize(text, keep_case, punct)))


def generation_vectors():
    samples = caption_corpus()
    sm = bleu_score.SmoothingFunction()
    methods = [sm.method0, sm.method1, sm.method2, sm.method3]
    bleu_cases = []
    refs_all = [r for _, r in samples]
    hyps_all = [h for h, _ in samples]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, weights in (("bleu4", (0.25, 0.25, 0.25, 0.25)), ("bleu2", (0.5, 0.5)),
                              ("bleu3w", (0.5, 0.3, 0.2))):
            for mi, m in enumerate(methods):
                corpus = bleu_score.corpus_bleu(refs_all, hyps_all, weights=weights, smoothing_function=m)
                sent = [bleu_score.sentence_bleu(r, h, weights=weights, smoothing_function=m)
                        for h, r in samples]
                bleu_cases.append({"name": name, "weights": list(weights), "smoothing": mi,
                                   "corpus": float(corpus), "sentences": [float(v) for v in sent]})
    # the same corpus with text needing the default tokeniser
    raw = [("A Dog, running in the PARK!", ["a dog runs in the park.", "The dog's running."]),
           ("Two cats -- sitting on a mat.", ["two cats sit on the mat", "cats on a mat"]),
           ("It's a small, red ball", ["a small red ball", "it is a red ball!"])]
    tok_samples = [(tokenize(h), [tokenize(r) for r in rs]) for h, rs in raw]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw_bleu = bleu_score.corpus_bleu([r for _, r in tok_samples], [h for h, _ in tok_samples],
                                          smoothing_function=sm.method1)
    raw_meteor = [meteor_score.meteor_score(r, h, stemmer=PorterStemmer(PorterStemmer.ORIGINAL_ALGORITHM),
                                            wordnet=NoWordNet()) for h, r in tok_samples]
    split_tokens = [tokenize(h, punct="split") for h, _ in raw]
    keep_tokens = [tokenize(h, keep_case=True, punct="keep") for h, _ in raw]

    stem = PorterStemmer(PorterStemmer.ORIGINAL_ALGORITHM)
    meteor_cases = []
    for name, kw in (("default", {}), ("alpha_beta_gamma", {"alpha": 0.8, "beta": 2.0, "gamma": 0.4})):
        for use_stem in (1, 0):
            vals = [meteor_score.meteor_score(r, h, stemmer=stem if use_stem else Identity(),
                                              wordnet=NoWordNet(), **kw) for h, r in samples]
            meteor_cases.append({"name": name, "stem": use_stem,
                                 "alpha": kw.get("alpha", 0.9), "beta": kw.get("beta", 3.0),
                                 "gamma": kw.get("gamma", 0.5), "scores": vals})
    cider_cases = []
    for name, kw in (("cider_d", {}), ("no_clip_no_penalty", {"clip": False, "sigma": 0.0}),
                     ("bigrams_scale1", {"max_n": 2, "scale": 1.0})):
        cider_cases.append(dict(name=name, max_n=kw.get("max_n", 4), sigma=kw.get("sigma", 6.0),
                                clip=int(kw.get("clip", True)), scale=kw.get("scale", 10.0),
                                scores=cider_ref(samples, **kw)))
    # WER / CER
    wer_pairs = [("the cat sat on the mat", "the cat sat on mat"),
                 ("a b c d", "a x c d e"),
                 ("hello world", ""),
                 ("", "extra words"),
                 ("Turn LEFT, then right.", "turn left then right"),
                 ("one two three four five", "five four three two one"),
                 ("naïve café résumé", "naive café resume"),
                 ("a a a a", "a a"),
                 ("x y z", "y z x")]
    for _ in range(8):
        ref = sentence(int(rng.integers(3, 15)))
        hyp = perturb(ref) + (sentence(1) if rng.random() < 0.3 else [])
        wer_pairs.append((" ".join(ref), " ".join(hyp)))
    tot = np.zeros(4, int)
    ref_words = hyp_words = 0
    ctot = np.zeros(4, int)
    ref_chars = hyp_chars = 0
    for r, h in wer_pairs:
        rt, ht = tokenize(r), tokenize(h)
        tot += edit_counts(rt, ht)
        ref_words += len(rt)
        hyp_words += len(ht)
        rc, hc = chars(r), chars(h)
        ctot += edit_counts(rc, hc)
        ref_chars += len(rc)
        hyp_chars += len(hc)
    wer = {"hits": int(tot[0]), "substitutions": int(tot[1]), "deletions": int(tot[2]),
           "insertions": int(tot[3]), "ref_len": ref_words, "hyp_len": hyp_words,
           "rate": float((tot[1] + tot[2] + tot[3]) / ref_words)}
    cer = {"hits": int(ctot[0]), "substitutions": int(ctot[1]), "deletions": int(ctot[2]),
           "insertions": int(ctot[3]), "ref_len": ref_chars, "hyp_len": hyp_chars,
           "rate": float((ctot[1] + ctot[2] + ctot[3]) / ref_chars)}
    write("generation.json", {
        "samples": [{"hyp": " ".join(h), "refs": [" ".join(r) for r in rs]} for h, rs in samples],
        "bleu": bleu_cases, "meteor": meteor_cases, "cider": cider_cases,
        "raw": [{"hyp": h, "refs": rs} for h, rs in raw],
        "raw_bleu_method1": float(raw_bleu), "raw_meteor": raw_meteor,
        "raw_split_tokens": split_tokens, "raw_keep_tokens": keep_tokens,
        "wer_pairs": [{"ref": r, "hyp": h} for r, h in wer_pairs], "wer": wer, "cer": cer,
    })


def stemmer_vectors():
    words = set()
    for path in ("/usr/share/common-licenses/GPL-3", "/usr/share/common-licenses/Apache-2.0",
                 "/usr/share/common-licenses/GFDL-1.3", "/usr/share/common-licenses/Artistic"):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                words.update(w.lower() for w in re.findall(r"[A-Za-z]+", f.read()))
        except OSError:
            pass
    # Porter's examples for every rule, and the caption vocabulary
    words.update("""caresses ponies ties caress cats feed agreed plastered bled motoring sing
        conflated troubled sized hopping tanned falling hissing fizzed failing filing happy sky
        relational conditional rational valenci hesitanci digitizer conformabli radicalli
        differentli vileli analogousli vietnamization predication operator feudalism
        decisiveness hopefulness callousness formaliti sensitiviti sensibiliti triplicate
        formative formalize electriciti electrical hopeful goodness revival allowance inference
        airliner gyroscopic adjustable defensible irritant replacement adjustment dependent
        adoption homologou communism activate angulariti homologous effective bowdlerize
        probate rate cease controll roll generalizations oscillators dying lying skies
        is as us a i y by yes eyes syzygy queueing knightly fully logically""".split())
    words.update(VOCAB)
    words = sorted(words)
    st = PorterStemmer(PorterStemmer.ORIGINAL_ALGORITHM)
    write("stemmer.json", {"words": words, "stems": [st.stem(w) for w in words]})


# ============================================================== signals

def fid_eig(a, b):
    """FID with the symmetric formulation (as in the C code), in float64."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    ma, mb = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(ca)
    s = v * np.sqrt(np.maximum(w, 0))       # ca^(1/2) = s s^T
    m = s.T @ cb @ s
    lam = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sum((ma - mb) ** 2) + np.trace(ca) + np.trace(cb) - 2 * np.sum(np.sqrt(np.maximum(lam, 0))))


def fid_scipy(a, b):
    """The pytorch-fid formula: scipy.linalg.sqrtm of the product."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    ma, mb = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(ca @ cb)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(np.sum((ma - mb) ** 2) + np.trace(ca) + np.trace(cb) - 2 * np.trace(covmean))


def mmd2_unbiased(x, y):
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def signal_vectors():
    snr_cases = []
    for i, (n, noise) in enumerate(((400, 0.1), (300, 0.5), (333, 2.0))):
        t = np.arange(n)
        ref = (np.sin(t * 0.05 * (i + 1)) + 0.3 * rng.normal(size=n) + 0.2).astype(np.float32)
        est = (0.7 * ref + noise * rng.normal(size=n).astype(np.float32) + 0.1).astype(np.float32)
        r, e = ref.astype(np.float64), est.astype(np.float64)
        snr = 10 * np.log10(np.sum(r ** 2) / np.sum((r - e) ** 2))
        out = {"n": n, "ref": f32list(ref), "est": f32list(est), "snr": float(snr)}
        for zm in (0, 1):
            rr, ee = (r - r.mean(), e - e.mean()) if zm else (r, e)
            a = np.dot(ee, rr) / np.dot(rr, rr)
            tgt = a * rr
            out["si_sdr_zero_mean" if zm else "si_sdr"] = float(
                10 * np.log10(np.sum(tgt ** 2) / np.sum((ee - tgt) ** 2)))
        snr_cases.append(out)
    fid_cases = []
    for name, na, nb, d, shift in (("well_conditioned", 60, 50, 8, 0.5), ("singular", 6, 7, 10, 0.2),
                                   ("same_distribution", 80, 80, 5, 0.0), ("wider", 90, 80, 16, 0.3)):
        mix = rng.normal(size=(d, d)) / math.sqrt(d)
        a = (rng.normal(size=(na, d)) @ mix).astype(np.float32)
        b = (rng.normal(size=(nb, d)) @ (mix + 0.3 * rng.normal(size=(d, d)) / math.sqrt(d)) + shift).astype(np.float32)
        f = fid_eig(a, b)
        if name != "singular":
            fs = fid_scipy(a, b)
            assert abs(f - fs) < 1e-6 * max(1, abs(f)), (name, f, fs)
        kid = mmd2_unbiased(a, b)
        fid_cases.append({"name": name, "na": na, "nb": nb, "d": d, "a": f32list(a), "b": f32list(b),
                          "fid": f, "kid": kid})
    write("signal.json", {"snr": snr_cases, "fid": fid_cases})


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    retrieval_vectors()
    classify_vectors()
    generation_vectors()
    stemmer_vectors()
    signal_vectors()
