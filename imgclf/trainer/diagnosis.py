"""A plain-language diagnosis of a run, computed from its curves and metrics.

Each finding names what was seen, why it matters and what to try; the rules are
the usual failure modes of fine-tuning on small data.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

OVERFIT_GAP = 0.15  # train accuracy minus validation accuracy
UNDERFIT_TRAIN_ACCURACY = 0.8
RECALL_SPREAD = 0.3
RISING_EPOCHS = 2


@dataclass
class Finding:
    code: str
    title: str
    detail: str
    remedies: list[str] = field(default_factory=list)


def _rising_val_loss(history: list[dict]) -> bool:
    """Validation loss rose for the last RISING_EPOCHS epochs while training loss fell."""
    if len(history) < RISING_EPOCHS + 1:
        return False
    tail = history[-(RISING_EPOCHS + 1) :]
    val = [h.get("val_loss") for h in tail]
    train = [h.get("loss") for h in tail]
    if None in val or None in train:
        return False
    val_up = all(b > a for a, b in itertools.pairwise(val))
    train_down = all(b < a for a, b in itertools.pairwise(train))
    return val_up and train_down


def diagnose(
    *,
    history: list[dict],
    train_metrics: dict,
    val_metrics: dict,
    test_metrics: dict,
    classes: list[str],
    class_weighted: bool,
) -> dict:
    """Return {"status", "summary", "gap", "findings": [...]} for the model card and report."""
    chance = 1.0 / len(classes)
    train_acc = train_metrics["accuracy"]
    val_acc = val_metrics["accuracy"]
    test_acc = test_metrics["accuracy"]
    gap = train_acc - val_acc
    findings: list[Finding] = []

    predicted = [sum(col) for col in zip(*test_metrics["confusion_matrix"], strict=True)]
    collapsed = sum(1 for n in predicted if n > 0) == 1 and len(classes) > 1
    if val_acc <= chance + 0.1 or collapsed:
        findings.append(
            Finding(
                "stalled_at_chance",
                "The model is no better than chance",
                f"validation accuracy {val_acc:.1%} against chance {chance:.1%}"
                + ("; every test image gets the same class" if collapsed else "")
                + ".",
                [
                    "Learning rate: too high makes the loss jump, too low barely moves it; try "
                    "learning_rate 1e-3 for the head and fine_tune_learning_rate 1e-5.",
                    "Preprocessing: images must go through the model's own preprocess "
                    "(no extra /255, RGB order); imgclf does this for you unless inputs were "
                    "converted beforehand.",
                    "Frozen BatchNorm: fine-tuning with BatchNorm in training mode on small "
                    "batches destroys the pretrained statistics; imgclf keeps them frozen.",
                    "Imbalance: a model that predicts only the majority class looks stuck; "
                    "check class counts and keep class_weight on.",
                    "Pretrained weights: weights=none starts from random features and needs "
                    "far more data and epochs than weights=imagenet.",
                ],
            )
        )
    else:
        if gap > OVERFIT_GAP or _rising_val_loss(history):
            reason = (
                f"training accuracy {train_acc:.1%} vs validation {val_acc:.1%} (gap {gap:.1%})"
                if gap > OVERFIT_GAP
                else "validation loss rose while training loss kept falling"
            )
            findings.append(
                Finding(
                    "overfitting",
                    "The model is overfitting",
                    reason + ".",
                    [
                        "More images per class, or stronger augmentation (augmentation=strong).",
                        "More regularisation: dropout 0.3-0.5, l2 1e-3, label_smoothing 0.1.",
                        "Unfreeze fewer stages (fine_tune_from=conv5) or fewer fine-tune epochs.",
                        "Keep early stopping on (early_stopping_patience 3-5).",
                    ],
                )
            )
        if train_acc < UNDERFIT_TRAIN_ACCURACY:
            findings.append(
                Finding(
                    "underfitting",
                    "The model underfits",
                    f"training accuracy is only {train_acc:.1%}.",
                    [
                        "Train longer (head_epochs, fine_tune_epochs) or raise the learning rate.",
                        "Unfreeze more of the base (fine_tune_from=conv4).",
                        "Less regularisation (dropout, l2) or a hidden layer (hidden_units=256).",
                    ],
                )
            )
    recalls = {
        name: c["recall"] for name, c in test_metrics["per_class"].items() if c["support"] > 0
    }
    if recalls and max(recalls.values()) - min(recalls.values()) > RECALL_SPREAD:
        worst = min(recalls, key=recalls.get)
        best = max(recalls, key=recalls.get)
        findings.append(
            Finding(
                "uneven_classes",
                "Some classes are recognised much worse than others",
                f"test recall ranges from {recalls[worst]:.1%} ({worst}) to "
                f"{recalls[best]:.1%} ({best}).",
                [
                    "Add images of the weak classes, or check them for label noise.",
                    "Keep class weights on (class_weight=balanced)"
                    + (" (already on)." if class_weighted else "."),
                    "Look at the confusion matrix for which classes are mixed up.",
                ],
            )
        )
    if not findings:
        status = "good"
        summary = (
            f"Healthy run: test accuracy {test_acc:.1%}, validation {val_acc:.1%}, "
            f"train/validation gap {gap:.1%}."
        )
    else:
        status = findings[0].code
        summary = "; ".join(f.title for f in findings) + f" (test accuracy {test_acc:.1%})."
    return {
        "status": status,
        "summary": summary,
        "gap": round(gap, 6),
        "chance_accuracy": round(chance, 6),
        "findings": [asdict(f) for f in findings],
    }


UNSTABLE_SWING = 0.3  # validation accuracy range over the last epochs
_SWING_EPOCHS = 5


def explain_refusal(comparison: dict, history: list[dict], data: dict) -> dict:
    """A finding that says why the promotion gate refused this model and what to change.

    Looks at the usual causes in turn: imbalanced training classes, validation
    accuracy swinging from epoch to epoch (unstable training), and a loss that rose
    or went nowhere (learning rate). The gate's own reasons lead the detail.
    """
    causes: list[str] = []
    remedies: list[str] = []
    counts = data.get("counts", {}).get("train", {})
    if counts:
        largest, smallest = max(counts.values()), max(1, min(counts.values()))
        if largest / smallest > 1.5:
            rare = min(counts, key=counts.get)
            causes.append(
                f"the training classes are imbalanced ({largest} vs {counts[rare]} images, "
                f"fewest in {rare!r})"
            )
            remedies += [
                f"Add images of {rare!r} (and the other small classes) to narrow the gap.",
                "Keep class_weight on ('auto' or 'balanced'); with very few images of a class, "
                "merge or drop it until there are more.",
            ]
    val_acc = [h["val_accuracy"] for h in history[-_SWING_EPOCHS:] if "val_accuracy" in h]
    if len(val_acc) >= 3 and max(val_acc) - min(val_acc) > UNSTABLE_SWING:
        causes.append(
            f"validation accuracy swung between {min(val_acc):.0%} and {max(val_acc):.0%} over "
            f"the last {len(val_acc)} epochs (unstable training)"
        )
        remedies += [
            "Lower learning_rate (e.g. by 3-10x) or raise batch_size so steps are less noisy.",
            "Use more validation images (val_fraction) so the measurement itself is steadier.",
        ]
    losses = [h["loss"] for h in history if "loss" in h]
    if len(losses) >= 2 and losses[-1] >= losses[0] * 0.95:
        causes.append(
            f"the training loss did not fall ({losses[0]:.3f} -> {losses[-1]:.3f}): the learning "
            "rate is likely too high (loss jumps) or too low (loss barely moves)"
        )
        remedies.append(
            "Try learning_rate 1e-3 with Adam, and more epochs (head_epochs, fine_tune_epochs)."
        )
    if not causes:
        causes.append("no single cause stands out in the curves or the class counts")
        remedies.append("Add images, train longer, or check the labels of the weakest classes.")
    reasons = "; ".join(comparison.get("reasons", [])) or "refused"
    return asdict(
        Finding(
            "refused",
            "The promotion gate refused this model",
            f"{reasons}. Likely causes: " + "; ".join(causes) + ".",
            remedies,
        )
    )
