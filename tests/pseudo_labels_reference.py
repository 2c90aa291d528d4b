"""The exact, whole-set pseudo-label code as it was before the labels, thresholds and analysis streamed (commit
0c94f83, ``videoda/domain_adaptation/pseudo_labels.py`` and ``pseudo_label_analysis.py``), kept verbatim as the
reference the bounded-memory versions must equal bit for bit. It holds every clip's labels and maxima, and
sorts all pixels: fine on the tests' tiny data. Not used by the package.
"""

from dataclasses import replace

import numpy as np
import torch

from videoda.data.classes import CLASSES, IGNORE_ID, NUM_CLASSES
from videoda.model import normalize
from videoda.flow.warp import flow_to_tensor, non_occluded, warp_probs
from videoda.metrics import ConfusionMatrix

GENERATOR_RULES = {"cbst": ("class_balanced", False), "iast": ("image", False), "clip": ("clip", False),
                   "clip_agg": ("clip", True)}
TABLE7_GENERATORS = {"cb": "cbst", "ia": "iast", "ours": "clip_agg"}


def class_quantile(conf, pred, k, portion):
    values = conf[pred == k]
    if values.size == 0:
        return None
    idx = min(int(np.floor(portion * values.size)), values.size - 1)
    return float(np.partition(values, values.size - 1 - idx)[values.size - 1 - idx])


def adaptive_thresholds(conf, pred, theta, alpha, beta, gamma, num_classes, max_theta=0.999):
    theta = np.asarray(theta, np.float64)
    new = theta.copy()
    for k in range(num_classes):
        psi = class_quantile(conf, pred, k, alpha * theta[k] ** gamma)
        if psi is not None:
            new[k] = beta * theta[k] + (1 - beta) * psi
    return np.minimum(new, max_theta)


def class_balanced_thresholds(conf, pred, portion, num_classes):
    theta = np.ones(num_classes)
    for k in range(num_classes):
        psi = class_quantile(conf, pred, k, portion)
        if psi is not None:
            theta[k] = psi
    return theta


def label_with_thresholds(conf, pred, theta):
    keep = conf > np.asarray(theta)[pred]
    return np.where(keep, pred, IGNORE_ID).astype(np.uint8)


def aggregate_clip(probs, images, flow, alpha, threshold):
    t_len = probs.shape[0]
    frames = torch.as_tensor(images).permute(0, 3, 1, 2)
    num, den = probs.clone(), torch.ones(t_len, 1, *probs.shape[2:])
    for step in (-1, 1):
        ref = list(range(max(0, -step), t_len - max(0, step)))
        nbr = [i + step for i in ref]
        flows = flow_to_tensor(np.stack([flow(i, j) for i, j in zip(ref, nbr)]))
        warped, _ = warp_probs(probs[nbr], flows)
        keep = non_occluded(frames[ref], frames[nbr], flows, alpha, threshold)[:, None].float()
        num[ref] += keep * warped
        den[ref] += keep
    return num / den


def generate_clip_labels(instance, conf, pred, theta, alpha, beta, gamma):
    if instance == "clip":
        theta = adaptive_thresholds(conf, pred, theta, alpha, beta, gamma, NUM_CLASSES)
        return label_with_thresholds(conf, pred, theta), theta
    labels = np.empty(pred.shape, np.uint8)
    for t in range(len(pred)):
        theta = adaptive_thresholds(conf[t], pred[t], theta, alpha, beta, gamma, NUM_CLASSES)
        labels[t] = label_with_thresholds(conf[t], pred[t], theta)
    return labels, theta


@torch.no_grad()
def predict_probs(model, images, batch_size):
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(normalize(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).to(device)))
                      .softmax(1).cpu() for i in range(0, len(images), batch_size)])


def aggregate_predictions(probs, clip, store, cfg):
    store.check_clip(clip.name, len(clip), *clip.images.shape[1:3])
    return aggregate_clip(probs, clip.images, lambda a, b: store.flow(clip.name, a, b), cfg.occlusion.alpha,
                          cfg.occlusion.occlusion_threshold)


def clip_maxima(model, clip, store, cfg, aggregate):
    probs = predict_probs(model, clip.images, cfg.batch_size)
    probs = aggregate_predictions(probs, clip, store, cfg) if aggregate else probs
    conf, pred = probs.max(1)
    return conf.numpy(), pred.numpy().astype(np.uint8)


def label_maxima(kind, maxima, cfg):
    rule = GENERATOR_RULES[kind][0]
    if rule == "class_balanced":
        maxima = list(maxima)
        conf_all = np.concatenate([c.ravel() for _, (c, _) in maxima])
        pred_all = np.concatenate([p.ravel() for _, (_, p) in maxima])
        theta = class_balanced_thresholds(conf_all, pred_all, cfg.cbst_portion, NUM_CLASSES)
        return {name: label_with_thresholds(c, p, theta) for name, (c, p) in maxima}, theta
    out, theta = {}, np.full(NUM_CLASSES, cfg.init_theta)
    for name, (conf, pred) in maxima:
        out[name], theta = generate_clip_labels(rule, conf, pred, theta, cfg.alpha, cfg.beta, cfg.gamma)
    return out, theta


def generate_pseudo_labels(model, clips, store, cfg):
    maxima = [(clip.name, clip_maxima(model, clip, store, cfg, GENERATOR_RULES[cfg.pseudo_label][1])) for clip in clips]
    return label_maxima(cfg.pseudo_label, maxima, cfg)


def labels_at_proportion(kind, maxima, cfg, proportion, steps=16):
    total = sum(c.size for _, (c, _) in maxima)
    knob = "cbst_portion" if GENERATOR_RULES[kind][0] == "class_balanced" else "alpha"

    def run(value):
        labels, _ = label_maxima(kind, maxima, replace(cfg, **{knob: value}))
        return labels, sum(int((lab != IGNORE_ID).sum()) for lab in labels.values()) / total

    lo, hi = 0.0, 1.0
    best = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        labels, reached = run(mid)
        if best is None or abs(reached - proportion) < abs(best[2] - proportion):
            best = (labels, mid, reached)
        lo, hi = (mid, hi) if reached < proportion else (lo, mid)
    return best


def table7_p_miou(single, aggregated, clips, cfg, proportions):
    out = {}
    for proportion in proportions:
        row = {}
        for name, kind in TABLE7_GENERATORS.items():
            maxima = aggregated if GENERATOR_RULES[kind][1] else single
            labels, knob, reached = labels_at_proportion(kind, maxima, cfg, proportion)
            row[name] = {"knob": round(knob, 6), "proportion": round(100 * reached, 4),
                         "p_miou": pseudo_label_report(labels, clips)["p_miou"]}
        out[f"{proportion:g}"] = row
    return out


def pseudo_label_report(labels_by_clip, clips):
    counts, total = np.zeros(NUM_CLASSES, np.int64), 0
    cm = ConfusionMatrix(NUM_CLASSES)
    for clip in clips:
        labels = labels_by_clip[clip.name]
        counts += np.bincount(labels[labels != IGNORE_ID], minlength=NUM_CLASSES)[:NUM_CLASSES]
        total += labels.size
        idx = np.flatnonzero(clip.labeled)
        kept = labels[idx] != IGNORE_ID
        cm.update(labels[idx][kept], clip.labels[idx][kept])
    scores = cm.to_dict()
    return {"proportion": round(100 * counts.sum() / total, 4),
            "proportion_per_class": {c: round(100 * n / total, 4) for c, n in zip(CLASSES, counts)},
            "p_miou": scores["miou"], "p_iou": scores["iou"]}


def miou_at_proportion(conf, pred, gt, proportion):
    valid = gt != IGNORE_ID
    conf, pred, gt = conf[valid], pred[valid], gt[valid]
    n = int(round(proportion * conf.size))
    keep = np.argsort(-conf, kind="stable")[:n]
    cm = ConfusionMatrix(NUM_CLASSES)
    cm.update(pred[keep], gt[keep])
    return cm.to_dict()["miou"]


def label_precision(labels, gt):
    kept = (labels != IGNORE_ID) & (gt != IGNORE_ID)
    return float((labels[kept] == gt[kept]).mean()) if kept.any() else float("nan"), int(kept.sum())


def analyse(model, clips, store, labels, cfg, tau):
    from videoda.domain_adaptation.pseudo_labels import cutout_refine

    single, aggregated, gts, generated = [], [], [], []
    before, after = [], []
    every_frame = {"single": [], "aggregated": []}
    for clip in clips:
        idx = np.flatnonzero(clip.labeled)
        probs = predict_probs(model, clip.images, cfg.batch_size)
        for out, key, p in ((single, "single", probs),
                            (aggregated, "aggregated", aggregate_predictions(probs, clip, store, cfg))):
            conf, pred = p.max(1)
            conf, pred = conf.numpy(), pred.numpy().astype(np.uint8)
            out.append((conf[idx], pred[idx]))
            if cfg.equal_proportions:
                every_frame[key].append((clip.name, (conf, pred)))
        gts.append(clip.labels[idx])
        generated.append(labels[clip.name][idx])
        t = idx[idx >= tau]
        if len(t):
            flow = flow_to_tensor(np.stack([store.flow(clip.name, i, i - tau) for i in t]))
            refined = cutout_refine(torch.from_numpy(labels[clip.name][t]).long(),
                                    torch.from_numpy(labels[clip.name][t - tau]).long(), flow).numpy()
            before.append((labels[clip.name][t], clip.labels[t]))
            after.append((refined, clip.labels[t]))
    gt = np.concatenate([g.ravel() for g in gts])
    gen = np.concatenate([g.ravel() for g in generated])
    proportion = float(((gen != 255) & (gt != 255)).sum() / (gt != 255).sum())
    cat = lambda pairs, i: np.concatenate([p[i].ravel() for p in pairs])  # noqa: E731
    result = {"equal_proportion": {
        "proportion": round(100 * proportion, 4),
        "single_frame_p_miou": miou_at_proportion(cat(single, 0), cat(single, 1), gt, proportion),
        "aggregated_p_miou": miou_at_proportion(cat(aggregated, 0), cat(aggregated, 1), gt, proportion)}}
    prec_b, n_b = label_precision(cat(before, 0), cat(before, 1))
    prec_a, n_a = label_precision(cat(after, 0), cat(after, 1))
    result["cutout_refinement"] = {"precision_before": round(100 * prec_b, 4), "pixels_before": n_b,
                                   "precision_after": round(100 * prec_a, 4), "pixels_after": n_a}
    if cfg.equal_proportions:
        result["table7"] = table7_p_miou(every_frame["single"], every_frame["aggregated"], clips, cfg,
                                         cfg.equal_proportions)
    return result


def pseudo_labels_report(model, clips, store, labels, theta, cfg, tau):
    return {"generator": cfg.pseudo_label, **pseudo_label_report(labels, clips),
            "thresholds": {c: round(float(t), 4) for c, t in zip(CLASSES, theta)},
            **analyse(model, clips, store, labels, cfg, tau)}
